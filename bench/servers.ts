/**
 * `npm run bench:servers`: the offloaded servers against what users would
 * run instead, same clients and flags for every system, in one run,
 * ROUNDS rounds round-robin (so that a change in the machine's load hits
 * every system alike), medians reported; writes bench/servers-results.md.
 *
 * - HTTP `/work?us=200` (wrk -t1 -c50, keep-alive): requests/s and p99,
 *   offload (work in a stage of its own, or inline in 2 protocol
 *   interpreters) vs node:http in one thread and with cluster (2 processes),
 *   all running the same handler (examples/protocols/work.ts).
 * - HTTP `/` (wrk -t1 -c50): offload vs node:http in one thread.
 * - RESP GET/SET (redis-benchmark -c 50 -r 100000) at -P 1 and -P 16:
 *   offload (1 and 2 shards) vs Debian's redis-server, same machine.
 *
 * BENCH_SECONDS (default 8) per wrk run, BENCH_ROUNDS (default 3).
 */
import { writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { launch, runTool, startRedisServer, type Launched } from "./lib/servers-common.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SECONDS = Number(process.env.BENCH_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const quiet = !process.stdout.isTTY;

interface System {
  name: string;
  start(): Promise<Launched>;
}

const offloadHttp = (args: string[]): (() => Promise<Launched>) => () => launch(process.execPath, [ROOT + "dist/examples/http-server.js", "--port", "0", ...args]);
const nodeHttp = (args: string[]): (() => Promise<Launched>) => () => launch(process.execPath, [ROOT + "dist/bench/lib/servers-node-http.js", "--port", "0", ...args]);
const offloadResp = (args: string[]): (() => Promise<Launched>) => () => launch(process.execPath, [ROOT + "dist/examples/resp-server.js", "--port", "0", ...args]);

// The work stage runs at nice 0 here, as every other system does: at nice
// 10 (the server's default, for latency) its threads get a smaller share
// of a machine that other processes keep busy.
const WORK: System[] = [
  { name: "offload: 1 protocol interpreter + 2 work interpreters", start: offloadHttp(["--interpreters", "1", "--workers", "2", "--work-nice", "0"]) },
  { name: "offload: 2 protocol interpreters, work inline", start: offloadHttp(["--interpreters", "2", "--workers", "0"]) },
  { name: "node:http, one thread", start: nodeHttp([]) },
  { name: "node:http, cluster of 2 processes", start: nodeHttp(["--cluster", "2"]) },
];
const HELLO: System[] = [
  { name: "offload: 1 protocol interpreter", start: offloadHttp(["--interpreters", "1", "--workers", "0"]) },
  { name: "node:http, one thread", start: nodeHttp([]) },
];
const RESP: System[] = [
  { name: "offload: 1 interpreter (1 shard)", start: offloadResp(["--interpreters", "1"]) },
  { name: "offload: 2 interpreters (2 shards)", start: offloadResp(["--interpreters", "2"]) },
  { name: "redis-server 7.0.15 (Debian)", start: startRedisServer },
];

interface Sample {
  rps: number;
  p99ms: number;
}
const results = new Map<string, Sample[]>();
function record(key: string, sample: Sample): void {
  if (!results.has(key)) results.set(key, []);
  results.get(key)!.push(sample);
}

function progress(text: string): void {
  if (quiet) return;
  process.stdout.write(`\r\x1b[K${text}`);
}

/** wrk's requests/s and p99 (ms) from its --latency output. */
async function wrk(url: string): Promise<Sample> {
  const { code, output } = await runTool("wrk", ["-t1", "-c50", `-d${SECONDS}s`, "--timeout", "10s", "--latency", url], (SECONDS + 60) * 1000);
  if (code !== 0) throw new Error(`wrk failed: ${output}`);
  if (/Socket errors|Non-2xx/.test(output)) throw new Error(`wrk saw errors against ${url}:\n${output}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(output)?.[1]);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)\b/.exec(output);
  if (!p99 || !Number.isFinite(rps)) throw new Error(`cannot read wrk's output:\n${output}`);
  const scale = p99[2] === "us" ? 1e-3 : p99[2] === "s" ? 1e3 : 1;
  return { rps, p99ms: Number(p99[1]) * scale };
}

/** redis-benchmark's requests/s and p99 (ms) for GET and SET. */
async function redisBenchmark(port: number, pipeline: number): Promise<Record<string, Sample>> {
  const requests = pipeline === 1 ? 200_000 : 2_000_000;
  const { code, output } = await runTool(
    "redis-benchmark",
    ["-p", String(port), "-t", "set,get", "-c", "50", "-n", String(requests), "-r", "100000", "-P", String(pipeline), "--csv"],
    600_000,
  );
  if (code !== 0 || /error/i.test(output)) throw new Error(`redis-benchmark failed:\n${output}`);
  const samples: Record<string, Sample> = {};
  for (const line of output.split("\n")) {
    const match = /^"(SET|GET)","([\d.]+)","[\d.]+","[\d.]+","[\d.]+","[\d.]+","([\d.]+)"/.exec(line);
    if (match) samples[match[1]!] = { rps: Number(match[2]), p99ms: Number(match[3]) };
  }
  if (!samples.SET || !samples.GET) throw new Error(`cannot read redis-benchmark's output:\n${output}`);
  return samples;
}

async function measure(round: number): Promise<void> {
  for (const system of WORK) {
    progress(`round ${round + 1}/${ROUNDS}: /work?us=200 on ${system.name}`);
    const server = await system.start();
    try {
      record(`work|${system.name}`, await wrk(`${server.url}work?us=200`));
    } finally {
      await server.stop();
    }
  }
  for (const system of HELLO) {
    progress(`round ${round + 1}/${ROUNDS}: / on ${system.name}`);
    const server = await system.start();
    try {
      record(`hello|${system.name}`, await wrk(server.url));
    } finally {
      await server.stop();
    }
  }
  for (const system of RESP) {
    const server = await system.start();
    try {
      for (const pipeline of [1, 16]) {
        progress(`round ${round + 1}/${ROUNDS}: redis-benchmark -P ${pipeline} on ${system.name}`);
        const samples = await redisBenchmark(server.port, pipeline);
        for (const [test, sample] of Object.entries(samples)) record(`resp ${test} -P ${pipeline}|${system.name}`, sample);
      }
    } finally {
      await server.stop();
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function row(key: string): { rps: number; p99: number } {
  const samples = results.get(key) ?? [];
  return { rps: median(samples.map((s) => s.rps)), p99: median(samples.map((s) => s.p99ms)) };
}

const fmt = (n: number): string => (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(2));

const started = Date.now();
const loads: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  loads.push(loadavg()[0]!);
  await measure(round);
}
progress("");

const lines: string[] = [];
lines.push(`# Offloaded servers vs the alternatives`);
lines.push("");
lines.push(
  `\`npm run bench:servers\` at ${new Date(started).toISOString()}: ${ROUNDS} rounds round-robin, medians; ${availableParallelism()} vCPUs shared by server and client; ` +
    `load average at the start of each round: ${loads.map((l) => l.toFixed(1)).join(", ")}. Clients on the same machine (loopback).`,
);
lines.push("");
lines.push("## HTTP `/work?us=200` (wrk -t1 -c50 -d" + SECONDS + "s, keep-alive)");
lines.push("");
lines.push("| system | requests/s | p99 ms | vs cluster (req/s) |");
lines.push("|---|---|---|---|");
const cluster = row("work|node:http, cluster of 2 processes");
for (const system of WORK) {
  const r = row(`work|${system.name}`);
  lines.push(`| ${system.name} | ${fmt(r.rps)} | ${fmt(r.p99)} | ${(r.rps / cluster.rps).toFixed(2)}x |`);
}
lines.push("");
lines.push("## HTTP `/` (wrk -t1 -c50 -d" + SECONDS + "s, keep-alive)");
lines.push("");
lines.push("| system | requests/s | p99 ms | vs node:http |");
lines.push("|---|---|---|---|");
const single = row("hello|node:http, one thread");
for (const system of HELLO) {
  const r = row(`hello|${system.name}`);
  lines.push(`| ${system.name} | ${fmt(r.rps)} | ${fmt(r.p99)} | ${(r.rps / single.rps).toFixed(2)}x |`);
}
lines.push("");
lines.push("## RESP (redis-benchmark -c 50 -r 100000, -n 200,000 at -P 1, 2,000,000 at -P 16)");
lines.push("");
lines.push("| test | system | requests/s | p99 ms | vs redis-server |");
lines.push("|---|---|---|---|---|");
for (const test of ["GET -P 1", "SET -P 1", "GET -P 16", "SET -P 16"]) {
  const redis = row(`resp ${test}|redis-server 7.0.15 (Debian)`);
  for (const system of RESP) {
    const r = row(`resp ${test}|${system.name}`);
    lines.push(`| ${test} | ${system.name} | ${fmt(r.rps)} | ${fmt(r.p99)} | ${(r.rps / redis.rps).toFixed(2)}x |`);
  }
}
lines.push("");
lines.push("Every sample:");
lines.push("");
lines.push("```");
for (const [key, samples] of results) lines.push(`${key}: ${samples.map((s) => `${fmt(s.rps)} req/s p99 ${fmt(s.p99ms)} ms`).join("; ")}`);
lines.push("```");
const report = lines.join("\n") + "\n";
writeFileSync(ROOT + "bench/servers-results.md", report);
process.stdout.write(report);

