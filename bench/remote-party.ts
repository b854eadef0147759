/**
 * One process of `npm run bench:remote` (bench/remote.ts starts it): a
 * sender or a receiver of 128-byte messages, through this library's
 * connectChannel ("ours") or the plain @nats-io/jetstream client ("plain":
 * pipelined publishes with message ids, a durable pull consumer read with
 * consume() and ack()). Prints one `REMOTE_BENCH {json}` line.
 *
 * Every payload carries the send time (process.hrtime: CLOCK_MONOTONIC, the
 * same clock in every process of the machine) and a sequence number; the
 * receiver checks that every message arrives once, in order, and computes
 * one-way latencies.
 */
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { connectChannel } from "../src/index.js";

import { BENCH_PREFIX, type BenchPartySpec, PAYLOAD_BYTES, PLAIN_WINDOW } from "./remote-common.js";

const now = (): number => Number(process.hrtime.bigint()) / 1e6; // ms, monotonic, machine-wide

function payload(seq: number): Uint8Array {
  const bytes = new Uint8Array(PAYLOAD_BYTES);
  const view = new DataView(bytes.buffer);
  view.setFloat64(0, now(), true);
  view.setUint32(8, seq, true);
  return bytes;
}

/** Sequence number and latency (ms) of a received payload. */
function read(bytes: Uint8Array): { seq: number; latency: number } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { seq: view.getUint32(8, true), latency: now() - view.getFloat64(0, true) };
}

function report(result: Record<string, unknown>): void {
  process.stdout.write(`${BENCH_PREFIX}${JSON.stringify(result)}\n`);
}

function pace(seq: number, started: number, paceMs: number): Promise<void> | undefined {
  if (paceMs === 0) return undefined;
  const due = started + seq * paceMs - now();
  return due > 0 ? new Promise((resolve) => setTimeout(resolve, due)) : undefined;
}

class Receipts {
  readonly latencies: number[] = [];
  expected = 0;
  outOfOrder = 0;
  lastAt = 0;
  add(bytes: Uint8Array): void {
    const { seq, latency } = read(bytes);
    if (seq !== this.expected) this.outOfOrder++;
    this.expected = seq + 1;
    this.latencies.push(latency);
    this.lastAt = now();
  }
  result(): Record<string, unknown> {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
    return { received: this.latencies.length, outOfOrder: this.outOfOrder, lastAt: this.lastAt, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] };
  }
}

async function oursSend(spec: BenchPartySpec): Promise<void> {
  const [, tx] = await connectChannel<Uint8Array>(spec.url, spec.name, { role: "send" });
  const started = now();
  for (let i = 0; i < spec.n; i++) {
    await pace(i, started, spec.paceMs);
    await tx.send(payload(i));
  }
  const loopDone = now();
  tx.close();
  report({ firstAt: started, loopDone });
}

async function oursRecv(spec: BenchPartySpec): Promise<void> {
  const [rx] = await connectChannel<Uint8Array>(spec.url, spec.name, { role: "recv" });
  report({ ready: true });
  const receipts = new Receipts();
  for await (const bytes of rx) {
    receipts.add(bytes);
    if (receipts.latencies.length === spec.n) break;
  }
  rx.close();
  report(receipts.result());
}

async function plainSend(spec: BenchPartySpec): Promise<void> {
  const nc = await connect({ servers: spec.url });
  const js = jetstream(nc);
  const subject = `plain.${spec.name}.a`;
  const started = now();
  const inFlight: Array<Promise<unknown>> = [];
  for (let i = 0; i < spec.n; i++) {
    await pace(i, started, spec.paceMs);
    inFlight.push(js.publish(subject, payload(i), { msgID: `a:${i}` }));
    if (inFlight.length >= (spec.paceMs ? 1 : PLAIN_WINDOW)) await inFlight.shift();
  }
  await Promise.all(inFlight);
  const loopDone = now();
  await nc.close();
  report({ firstAt: started, loopDone });
}

async function plainRecv(spec: BenchPartySpec): Promise<void> {
  const nc = await connect({ servers: spec.url });
  const consumer = await jetstream(nc).consumers.get(spec.name, "bench");
  const messages = await consumer.consume({ max_messages: 256 });
  report({ ready: true });
  const receipts = new Receipts();
  for await (const m of messages) {
    receipts.add(m.data);
    m.ack();
    if (receipts.latencies.length === spec.n) break;
  }
  await nc.close();
  report(receipts.result());
}

const spec = JSON.parse(process.argv[2]!) as BenchPartySpec;
const run = { ours: { send: oursSend, recv: oursRecv }, plain: { send: plainSend, recv: plainRecv } }[spec.system][spec.role];
await run(spec);
