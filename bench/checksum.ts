/**
 * `npm run bench:checksum`: what `createChannel({ checksum: true })` costs.
 * One thread, nobody in the way (as bench/cost.ts): batches of sendSync
 * into an unbounded channel, each followed by as many recvSync, for a
 * 64-byte Uint8Array, a small object (`{ id, name, values }`, made fresh for
 * every message) and a 1 MiB Uint8Array; a channel without the checksum and
 * one with it, measured in alternating rounds in the same run, their
 * medians and the ratio. Every message received is checked. Time is the
 * process's CPU time (process.cpuUsage: user + system), not the clock:
 * this machine is shared, and a clock counts the time the process waited
 * for a core, which no code change causes (the benchmark runs on one
 * thread, so CPU time is its work; V8's helper threads' GC work included).
 * Then the CRC-32
 * alone (src/crc32.ts): the JavaScript slice-by-8 loop beside a
 * byte-at-a-time loop and Node's zlib.crc32, in ns per byte.
 *
 * Options: --rounds N (default 9), --quick (fewer messages).
 */
import * as zlib from "node:zlib";
import { createChannel } from "../src/index.js";
import { crc32InJs, hasNativeCrc32, NATIVE_MIN_BYTES } from "../src/crc32.js";
import { parseArgs, QUICK } from "./lib/common.js";

const args = parseArgs();
const ROUNDS = Number(args.rounds ?? 9);
const SCALE = QUICK || args.quick === "true" ? 0.1 : 1;

interface Workload {
  name: string;
  /** Messages per round, and per batch (a batch is sent, then received). */
  messages: number;
  batch: number;
  make(seq: number): unknown;
  check(value: unknown, seq: number): boolean;
}

const bytes64 = Uint8Array.from({ length: 64 }, (_, i) => i);
const mib = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 2654435761) >>> 24);

const WORKLOADS: Workload[] = [
  {
    name: "64-byte Uint8Array",
    messages: Math.round(100_000 * SCALE),
    batch: 500,
    make: () => bytes64,
    check: (v) => v instanceof Uint8Array && v.length === 64 && v[63] === 63,
  },
  {
    name: "small object",
    messages: Math.round(100_000 * SCALE),
    batch: 500,
    make: (seq) => ({ id: seq, name: "abc", values: [1, 2, 3, 4] }),
    check: (v, seq) => (v as { id: number; values: number[] }).id === seq && (v as { values: number[] }).values[3] === 4,
  },
  {
    name: "1 MiB Uint8Array",
    messages: Math.max(8, Math.round(160 * SCALE)),
    batch: 8,
    make: () => mib,
    check: (v) => v instanceof Uint8Array && v.length === mib.length && v[12345] === mib[12345] && v[mib.length - 1] === mib[mib.length - 1],
  },
];

/** CPU time used by this process so far, in ns. */
function cpuNow(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1000;
}

/** CPU ns per message (send and receive) of one round of `workload` on a channel with or without the checksum. */
function round(workload: Workload, checksum: boolean): number {
  const [rx, tx] = createChannel({ name: `bench-${checksum ? "crc" : "plain"}`, bufferBytes: 16 << 20, checksum });
  const start = cpuNow();
  for (let base = 0; base < workload.messages; base += workload.batch) {
    for (let i = base; i < base + workload.batch; i++) tx.sendSync(workload.make(i));
    for (let i = base; i < base + workload.batch; i++) {
      if (!workload.check(rx.recvSync(), i)) throw new Error(`${workload.name}: message ${i} is wrong`);
    }
  }
  const elapsed = cpuNow() - start;
  rx.close();
  tx.close();
  return elapsed / workload.messages;
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[sorted.length >> 1]!;
}

function format(ns: number): string {
  return ns >= 10_000 ? `${(ns / 1000).toFixed(1)} µs` : `${ns.toFixed(0)} ns`;
}

console.log(`checksum: true vs the default, one thread, CPU time per message sent and received; ${ROUNDS} alternating rounds, medians (after a warm-up round of each)`);
console.log("| message | default | checksum: true | ratio |");
console.log("|---|---|---|---|");
for (const workload of WORKLOADS) {
  const plain: number[] = [];
  const checked: number[] = [];
  round(workload, false); // warm-up: JIT, and the rings' first growth
  round(workload, true);
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which goes first, so that drift in the machine's load falls on both.
    if (r & 1) {
      checked.push(round(workload, true));
      plain.push(round(workload, false));
    } else {
      plain.push(round(workload, false));
      checked.push(round(workload, true));
    }
  }
  const a = median(plain);
  const b = median(checked);
  console.log(`| ${workload.name} | ${format(a)} | ${format(b)} | ${(b / a).toFixed(2)}x |`);
}

/** A byte-at-a-time table loop: the reference that slice-by-8 must beat to be worth its tables. */
const TABLE = new Int32Array(256);
for (let b = 0; b < 256; b++) {
  let c = b;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  TABLE[b] = c;
}
function crcByteAtATime(bytes: Uint8Array): number {
  let c = -1;
  for (let i = 0; i < bytes.length; i++) c = (c >>> 8) ^ TABLE[(c ^ bytes[i]!) & 0xff]!;
  return ~c >>> 0;
}

const nativeCrc = (zlib as unknown as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
console.log("");
console.log(`CRC-32 alone, CPU ns per byte (medians of ${ROUNDS}); zlib.crc32 ${hasNativeCrc32 ? `is used from ${NATIVE_MIN_BYTES} bytes` : "is missing in this Node: JavaScript throughout"}`);
console.log("| bytes | byte at a time (JS) | slice-by-8 (JS, used) | zlib.crc32 |");
console.log("|---|---|---|---|");
for (const size of [64, 1024, 1 << 20]) {
  const data = mib.subarray(0, size);
  const reps = Math.max(4, Math.round(((32 << 20) / size) * SCALE));
  const expected = crcByteAtATime(data);
  const time = (f: () => number): string => {
    const samples: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const start = cpuNow();
      for (let i = 0; i < reps; i++) if (f() !== expected) throw new Error("CRC mismatch");
      samples.push((cpuNow() - start) / reps / size);
    }
    return median(samples).toFixed(2);
  };
  const native = nativeCrc ? time(() => nativeCrc(data)) : "-";
  console.log(`| ${size} | ${time(() => crcByteAtATime(data))} | ${time(() => crc32InJs(data, 0, size))} | ${native} |`);
}
