/**
 * `npm run bench:remote`: a remote channel (connectChannel) against the
 * plain @nats-io/jetstream client doing the same, side by side in one run:
 * 128-byte messages one way, one sender process and one receiver process,
 * capacity Infinity (a work-queue stream without a message limit), file
 * storage, on a nats-server this benchmark starts on 127.0.0.1.
 *
 * - throughput: N messages as fast as each system takes them (plain:
 *   publishes pipelined 128 deep with message ids, consume() + ack(); ours:
 *   `await tx.send()` in a loop, `for await` on the receiving end), from the
 *   first send to the last receive;
 * - latency: one message every 2 ms (500/s, far below either's capacity),
 *   one-way send-to-receive p50/p99 (both processes read the machine's
 *   monotonic clock).
 *
 * - resume (this library only: the plain client's publish into a full
 *   stream fails, and retrying is the user's business): capacity 1, the
 *   receiver stalled; how long after a receive a send blocked on the full
 *   channel completes.
 *
 * Each repetition runs every case of both systems, alternating which goes
 * first; the table shows medians and the ratios ours/plain. Targets (issue
 * 17): throughput at least 50% of the plain client's, p50 under 2 ms.
 *
 * Environment: BENCH_QUICK=1 (smaller runs), BENCH_REPS=n (default 3),
 * BENCH_PROFILE=1 (every process writes a CPU profile under
 * bench/out/remote-profiles/). Writes bench/remote-results.md (a quick run:
 * bench/out/remote-results-quick.md).
 */
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, DiscardPolicy, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { natsVersion, startNats } from "./remote-nats.js";
import { BENCH_PREFIX, type BenchPartySpec } from "./remote-common.js";
import { connectChannel } from "../src/index.js";

const QUICK = process.env.BENCH_QUICK === "1";
const REPS = Number(process.env.BENCH_REPS ?? 3);
const PROFILE = process.env.BENCH_PROFILE === "1";
const N = QUICK ? 3000 : 20_000;
const LATENCY_N = QUICK ? 250 : 1000;
const PACE_MS = 2;
const RESUME_SAMPLES = QUICK ? 20 : 60;
const fromSource = import.meta.url.endsWith(".ts");
/** The repository (bench/remote.ts runs from dist/bench/ when built). */
const root = fileURLToPath(new URL(fromSource ? "../" : "../../", import.meta.url));
const partyScript = fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "./remote-party.ts" : "./remote-party.js", import.meta.url));
const profileDir = `${root}bench/out/remote-profiles/`;

type System = "ours" | "plain";
interface Run {
  system: System;
  kind: "throughput" | "latency";
  msgsPerSec: number;
  p50: number;
  p99: number;
  received: number;
  outOfOrder: number;
}

function runParty(spec: BenchPartySpec): { ready: Promise<void>; result: Promise<Record<string, number>> } {
  const args = [...(fromSource ? ["--import", "tsx"] : []), ...(PROFILE ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : []), partyScript, JSON.stringify(spec)];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let readyResolve!: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const result = new Promise<Record<string, number>>((resolve, reject) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 180_000);
    child.stdout.on("data", (d: Buffer) => {
      out += d;
      if (out.includes(`${BENCH_PREFIX}{"ready":true}`)) readyResolve();
    });
    child.stderr.on("data", (d: Buffer) => (out += d));
    child.once("exit", (code) => {
      clearTimeout(timer);
      const lines = out.split("\n").filter((l) => l.startsWith(BENCH_PREFIX) && !l.includes('"ready"'));
      if (code !== 0 || lines.length === 0) reject(new Error(`${spec.system} ${spec.role} failed (exit ${code}):\n${out}`));
      else resolve(JSON.parse(lines.pop()!.slice(BENCH_PREFIX.length)));
    });
  });
  return { ready, result };
}

let serial = 0;
async function runCase(url: string, system: System, kind: Run["kind"], jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<Run> {
  const name = `bench${process.pid}x${++serial}`;
  if (system === "plain") {
    await jsm.streams.add({ name, subjects: [`plain.${name}.*`], retention: RetentionPolicy.Workqueue, discard: DiscardPolicy.New, storage: StorageType.File, max_msgs: -1 });
    await jsm.consumers.add(name, { durable_name: "bench", ack_policy: AckPolicy.Explicit });
  }
  const n = kind === "throughput" ? N : LATENCY_N;
  const paceMs = kind === "throughput" ? 0 : PACE_MS;
  const receiver = runParty({ system, role: "recv", url, name, n, paceMs });
  await Promise.race([receiver.ready, receiver.result]);
  const sender = runParty({ system, role: "send", url, name, n, paceMs });
  const [sent, got] = await Promise.all([sender.result, receiver.result]);
  if (got.received !== n) throw new Error(`${system} ${kind}: received ${got.received} of ${n}`);
  return { system, kind, msgsPerSec: (n / (got.lastAt! - sent.firstAt!)) * 1000, p50: got.p50!, p99: got.p99!, received: got.received!, outOfOrder: got.outOfOrder! };
}

/** Capacity 1, receiver stalled: ms from a receive returning to the blocked send completing, per sample. */
async function resumeLatencies(url: string, samples: number): Promise<number[]> {
  const name = `resume${process.pid}x${++serial}`;
  // Two server lists: sender and receiver get bridges (connections) of their own, as two processes would.
  const [, tx] = await connectChannel<number>(url, name, { capacity: 1, role: "send" });
  const [rx] = await connectChannel<number>([url, url], name, { capacity: 1, role: "recv" });
  await tx.send(0); // stored: the channel is full
  await tx.send(1); // taken by the sender's bridge, which retries it while the channel is full
  const latencies: number[] = [];
  for (let i = 2; i < samples + 2; i++) {
    let resumedAt = 0;
    const blocked = tx.send(i).then(() => (resumedAt = performance.now()));
    await new Promise((resolve) => setTimeout(resolve, 20)); // well blocked by now
    if (resumedAt) throw new Error("resume: a send on a full channel completed without a receive");
    await rx.recv();
    const receivedAt = performance.now();
    await blocked;
    latencies.push(resumedAt - receivedAt);
  }
  tx.close();
  for await (const _ of rx); // drain to the close
  rx.close();
  return latencies;
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const fmt = (v: number, digits = 3): string => (Number.isFinite(v) ? Number(v.toPrecision(digits)).toLocaleString("en-US") : "-");

async function main(): Promise<void> {
  if (PROFILE) mkdirSync(profileDir, { recursive: true });
  const server = await startNats();
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  const startedAt = new Date();
  const loadBefore = loadavg();
  const runs: Run[] = [];
  const resumes: number[] = [];
  try {
    for (let rep = 0; rep < REPS; rep++) {
      const order: System[] = rep % 2 === 0 ? ["ours", "plain"] : ["plain", "ours"];
      for (const kind of ["throughput", "latency"] as const) {
        for (const system of order) {
          const run = await runCase(server.url, system, kind, jsm);
          runs.push(run);
          process.stderr.write(`rep ${rep + 1}/${REPS} ${kind} ${system}: ${fmt(run.msgsPerSec)} msgs/s, p50 ${fmt(run.p50)} ms, p99 ${fmt(run.p99)} ms\n`);
        }
      }
      const resume = await resumeLatencies(server.url, RESUME_SAMPLES);
      resumes.push(...resume);
      process.stderr.write(`rep ${rep + 1}/${REPS} resume: p50 ${fmt(quantile(resume, 0.5))} ms, p99 ${fmt(quantile(resume, 0.99))} ms\n`);
    }
  } finally {
    await nc.close();
    await server.stop();
  }
  const pick = (system: System, kind: Run["kind"], key: "msgsPerSec" | "p50" | "p99"): number => median(runs.filter((r) => r.system === system && r.kind === kind).map((r) => r[key]));
  const ratio = pick("ours", "throughput", "msgsPerSec") / pick("plain", "throughput", "msgsPerSec");
  const p50 = pick("ours", "latency", "p50");
  const rows = (["ours", "plain"] as const).map(
    (system) =>
      `| ${system === "ours" ? "connectChannel (this library)" : "plain @nats-io/jetstream"} | ${fmt(pick(system, "throughput", "msgsPerSec"))} | ${fmt(pick(system, "throughput", "p50"))} | ${fmt(pick(system, "latency", "p50"))} | ${fmt(pick(system, "latency", "p99"))} | ${runs
        .filter((r) => r.system === system && r.kind === "throughput")
        .map((r) => fmt(r.msgsPerSec))
        .join(", ")} |`,
  );
  const table = [
    `# Remote channel benchmark`,
    ``,
    `- date ${startedAt.toISOString()}; ${REPS} repetitions, alternating which system goes first; medians shown${QUICK ? "; QUICK run" : ""}`,
    `- ${process.version}; ${natsVersion()}; load average before ${loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${loadavg().map((l) => l.toFixed(2)).join(" ")}`,
    `- 128-byte messages, one sender process and one receiver process, capacity Infinity, file storage; throughput over ${N} messages, latency over ${LATENCY_N} messages sent every ${PACE_MS} ms`,
    `- command: \`npm run bench:remote\``,
    ``,
    `| system | throughput msgs/s | p50 ms under full load | p50 ms at 500 msgs/s | p99 ms at 500 msgs/s | throughput of each repetition |`,
    `|---|---:|---:|---:|---:|---|`,
    ...rows,
    ``,
    `Throughput ours/plain: **${(ratio * 100).toFixed(0)}%** (target at least 50%: ${ratio >= 0.5 ? "met" : "missed"}). ` +
      `p50 at 500 msgs/s: **${fmt(p50)} ms** (target under 2 ms: ${p50 < 2 ? "met" : "missed"}). ` +
      (runs.every((r) => r.outOfOrder === 0) ? `Every message of every run was received once and in order.` : `OUT OF ORDER: ${runs.filter((r) => r.outOfOrder).map((r) => `${r.system} ${r.kind} ${r.outOfOrder}`).join(", ")}`),
    ``,
    `Backpressure, capacity 1 with the receiver stalled (this library; ${resumes.length} samples): a blocked send completes ` +
      `p50 **${fmt(quantile(resumes, 0.5))} ms**, p99 **${fmt(quantile(resumes, 0.99))} ms** after a receive ` +
      `(the receive's acknowledgement, then the receiving bridge's announcement of room wakes the sending bridge, which publishes again).`,
    ``,
  ].join("\n");
  process.stdout.write(`${table}\n`);
  // A quick run is a smoke test: its table goes under bench/out/, not over the real results.
  if (QUICK) mkdirSync(`${root}bench/out`, { recursive: true });
  writeFileSync(QUICK ? `${root}bench/out/remote-results-quick.md` : `${root}bench/remote-results.md`, table);
}

await main();
