/**
 * What the lab's interpreters run (called with `interpreter.call`): a
 * producer, a consumer, and the recv-loop scenario's peer. They block in
 * sendSync/recvSync as real programs do, keep time with performance.now()
 * (service and production times are spent spinning, the last stretch at
 * least: a sleep cannot keep microseconds), and record what the main
 * thread measures in one SharedArrayBuffer (layout below).
 *
 * Every message carries its send time (absolute ms) and its producer's
 * sequence number, so latency is measured send to receive and the main
 * thread can check that every message sent arrived exactly once.
 *
 * Shared memory of a run (byte offsets):
 *
 * | offset | size            | meaning                                               | written by            |
 * |--------|-----------------|-------------------------------------------------------|-----------------------|
 * | 0      | 4               | stop: main sets 1 to end a --seconds run               | main                  |
 * | 4      | 4               | started: sends begun (error policy: failed ones taken back) | producers (Atomics) |
 * | 8      | 4               | done: messages received                               | consumers (Atomics)   |
 * | 12     | 4               | refused: sends that failed with ChannelFullError       | producers             |
 * | 16     | 4               | producers finished                                    | producers             |
 * | 20     | 4               | recv-loop: chains completed (a handled message not forwarded) | peers; notified |
 * | 24     | 4               | recv-loop: messages handled                           | peers                 |
 * | 28     | 4               | a word to sleep on (never written: Atomics.wait times out) | nobody           |
 * | 64     | 8 × 2 × 64      | per producer: ms blocked in send, start of its last send (absolute ms) | that producer |
 * | 1088   | 8 × 128         | per party (producers, then consumers from 64): ms off the CPU while it had work (see waitUntil) | that party |
 * | 4096   | 8 × records     | receive times (absolute ms), by arrival order          | consumers             |
 * | ...    | 8 × records     | latencies (ms), same order                             | consumers             |
 */
import { ChannelClosedError, ChannelFullError, DeadlockError, type RecvChannel, type SendChannel } from "../index.js";
import { gapSampler, type Arrival, type Service, serviceSampler } from "./distributions.js";
import { mulberry32 } from "./random.js";

export const W_STOP = 0;
export const W_STARTED = 1;
export const W_DONE = 2;
export const W_REFUSED = 3;
export const W_FINISHED = 4;
export const W_CHAINS = 5;
export const W_HANDLED = 6;
const W_SLEEP = 7;
const PRODUCER_F64 = 64 / 8;
const OFF_CPU_F64 = 1088 / 8;
/** Index of consumer i's off-CPU time among the parties. */
export const CONSUMER_PARTY = 64;
const RECORDS_BYTES = 4096;
/** Bytes of a message's header: send time (f64), producer index, sequence number. */
export const MESSAGE_HEADER_BYTES = 16;

/** The shared memory of a run with room for `records` receive records. */
export function runMemory(records: number): SharedArrayBuffer {
  return new SharedArrayBuffer(RECORDS_BYTES + 16 * records);
}

/** Views of a run's shared memory. */
export class RunViews {
  readonly words: Int32Array;
  readonly f64: Float64Array;
  readonly recvTimes: Float64Array;
  readonly latencies: Float64Array;
  readonly records: number;
  constructor(buffer: SharedArrayBuffer) {
    this.words = new Int32Array(buffer, 0, 16);
    this.f64 = new Float64Array(buffer, 0, RECORDS_BYTES / 8);
    this.records = (buffer.byteLength - RECORDS_BYTES) / 16;
    this.recvTimes = new Float64Array(buffer, RECORDS_BYTES, this.records);
    this.latencies = new Float64Array(buffer, RECORDS_BYTES + 8 * this.records, this.records);
  }
  blockedMs(producer: number): number {
    return this.f64[PRODUCER_F64 + 2 * producer]!;
  }
  lastSendStart(producer: number): number {
    return this.f64[PRODUCER_F64 + 2 * producer + 1]!;
  }
  /** Ms party `party` (a producer index, or CONSUMER_PARTY + a consumer index) was off the CPU while it had work. */
  offCpuMs(party: number): number {
    return this.f64[OFF_CPU_F64 + party]!;
  }
  addOffCpu(party: number, ms: number): void {
    if (ms > 0) this.f64[OFF_CPU_F64 + party] = this.f64[OFF_CPU_F64 + party]! + ms;
  }
}

/** Absolute milliseconds, comparable across threads (each has its own performance.timeOrigin). */
export function absoluteNow(): number {
  return performance.timeOrigin + performance.now();
}

/** A pause between two reads of the clock longer than this (ms) means the thread was not running. */
const OFF_CPU_GAP_MS = 0.02;

/**
 * Waits until performance.now() reaches `deadline`: sleeps (Atomics.wait
 * with a timeout on a word nobody writes) while more than 2 ms remain, so
 * a long gap does not burn a core, then spins for microsecond accuracy.
 *
 * Returns how long (ms) the thread was off the CPU when it should have been
 * spinning: gaps between two reads of the clock longer than 20 µs (the
 * machine's other threads had the core), plus any time it woke from the
 * sleep after the deadline. Theory assumes none; on a loaded machine this
 * is what moves the measurement away from it.
 */
function waitUntil(words: Int32Array, deadline: number): number {
  let off = 0;
  let last = performance.now();
  for (;;) {
    const now = performance.now();
    if (now - last > OFF_CPU_GAP_MS) off += now - last;
    last = now;
    const left = deadline - now;
    if (left <= 0) return off;
    if (left > 2) {
      Atomics.wait(words, W_SLEEP, 0, left - 1.5);
      last = performance.now();
      if (last > deadline) off += last - deadline;
    }
  }
}

export interface ProducerConfig {
  index: number;
  seed: number;
  arrival: Arrival;
  overflow: string;
  /** Messages to send, or Infinity until the stop word is set. */
  quota: number;
  size: number;
}

/** Sends `quota` messages (or until stopped) with gaps from --arrival; returns how many it sent. */
export function producer(tx: SendChannel<Uint8Array>, config: ProducerConfig, shared: SharedArrayBuffer): number {
  const views = new RunViews(shared);
  const { words, f64 } = views;
  const gap = gapSampler(config.arrival, mulberry32(config.seed));
  const payload = new Uint8Array(config.size);
  const header = new DataView(payload.buffer);
  header.setInt32(8, config.index, true);
  const fixedSchedule = config.overflow !== "wait";
  let due = performance.now();
  let sent = 0;
  try {
    for (let seq = 0; seq < config.quota && Atomics.load(words, W_STOP) === 0; seq++) {
      // "wait": the next message is made after the send completed (the tandem line); otherwise on a fixed schedule.
      due = (fixedSchedule ? due : performance.now()) + gap();
      views.addOffCpu(config.index, waitUntil(words, due));
      const start = absoluteNow();
      header.setFloat64(0, start, true);
      header.setInt32(12, seq, true);
      Atomics.add(words, W_STARTED, 1);
      try {
        tx.sendSync(payload);
        sent++;
      } catch (err) {
        if (!(err instanceof ChannelFullError)) throw err;
        Atomics.sub(words, W_STARTED, 1);
        Atomics.add(words, W_REFUSED, 1);
      }
      const end = absoluteNow();
      f64[PRODUCER_F64 + 2 * config.index] = f64[PRODUCER_F64 + 2 * config.index]! + (end - start);
      f64[PRODUCER_F64 + 2 * config.index + 1] = start;
    }
  } finally {
    Atomics.add(words, W_FINISHED, 1);
    tx.close();
  }
  return sent;
}

export interface ConsumerConfig {
  index: number;
  seed: number;
  service: Service;
  producers: number;
}

export interface ConsumerReport {
  received: number;
  /** Messages that arrived out of their producer's order (must be 0 with one consumer). */
  outOfOrder: number;
}

/** Receives until the channel is closed and drained, spending a --service time on each message. */
export function consumer(rx: RecvChannel<Uint8Array>, config: ConsumerConfig, shared: SharedArrayBuffer): ConsumerReport {
  const views = new RunViews(shared);
  const { words, recvTimes, latencies, records } = views;
  const service = serviceSampler(config.service, mulberry32(config.seed));
  const lastSeq = new Int32Array(config.producers).fill(-1);
  let received = 0;
  let outOfOrder = 0;
  for (;;) {
    let message: Uint8Array;
    try {
      message = rx.recvSync();
    } catch (err) {
      if (err instanceof ChannelClosedError) break;
      throw err;
    }
    const at = absoluteNow();
    const header = new DataView(message.buffer, message.byteOffset, MESSAGE_HEADER_BYTES);
    const sentAt = header.getFloat64(0, true);
    const from = header.getInt32(8, true);
    const seq = header.getInt32(12, true);
    if (seq <= lastSeq[from]!) outOfOrder++;
    lastSeq[from] = seq;
    const index = Atomics.add(words, W_DONE, 1);
    if (index < records) {
      recvTimes[index] = at;
      latencies[index] = at - sentAt;
    }
    received++;
    views.addOffCpu(CONSUMER_PARTY + config.index, waitUntil(words, performance.now() + service()));
  }
  return { received, outOfOrder };
}

export interface PeerConfig {
  seed: number;
  service: Service;
  /** Probability that handling a message sends one to the other peer. */
  forward: number;
  size: number;
  /** Chains to complete before the main thread sends stop (it notifies on W_CHAINS when reached). */
  chains: number;
}

export interface PeerReport {
  handled: number;
  forwarded: number;
  deadlock?: { message: string; cycle: DeadlockError["cycle"]; blockedMs: number };
}

/** Message kinds in the recv-loop scenario (byte 8 of the message). */
export const WORK = 0;
export const STOP = 1;

/**
 * The recv-loop peer: receives from its inbox; works on each message; with
 * probability `forward` sends one to the other peer (which may block, and
 * with both peers blocked so, deadlock: the DeadlockError is returned).
 */
export function peer(inbox: RecvChannel<Uint8Array>, outbox: SendChannel<Uint8Array>, config: PeerConfig, shared: SharedArrayBuffer): PeerReport {
  const views = new RunViews(shared);
  const { words } = views;
  const random = mulberry32(config.seed);
  const service = serviceSampler(config.service, random);
  const forwardMessage = new Uint8Array(config.size);
  const forwardHeader = new DataView(forwardMessage.buffer);
  forwardHeader.setInt32(8, WORK, true);
  const report: PeerReport = { handled: 0, forwarded: 0 };
  for (;;) {
    const message = inbox.recvSync();
    const kind = new DataView(message.buffer, message.byteOffset, MESSAGE_HEADER_BYTES).getInt32(8, true);
    if (kind === STOP) return report;
    waitUntil(words, performance.now() + service());
    report.handled++;
    Atomics.add(words, W_HANDLED, 1);
    if (random() < config.forward) {
      forwardHeader.setFloat64(0, absoluteNow(), true);
      const started = performance.now();
      try {
        outbox.sendSync(forwardMessage);
      } catch (err) {
        if (err instanceof DeadlockError) {
          report.deadlock = { message: err.message, cycle: err.cycle, blockedMs: performance.now() - started };
          return report;
        }
        throw err;
      }
      report.forwarded++;
    } else if (Atomics.add(words, W_CHAINS, 1) + 1 >= config.chains) {
      Atomics.notify(words, W_CHAINS);
    }
  }
}

/** The recv-loop feeder: `count` requests, alternating between the two inboxes, with gaps from --arrival. */
export function feeder(toA: SendChannel<Uint8Array>, toB: SendChannel<Uint8Array>, config: { seed: number; arrival: Arrival; count: number; size: number }, shared: SharedArrayBuffer): { fed: number; deadlock?: PeerReport["deadlock"] } {
  const { words } = new RunViews(shared);
  const gap = gapSampler(config.arrival, mulberry32(config.seed));
  const message = new Uint8Array(config.size);
  const header = new DataView(message.buffer);
  header.setInt32(8, WORK, true);
  let due = performance.now();
  let fed = 0;
  for (; fed < config.count; fed++) {
    due += gap();
    waitUntil(words, due);
    header.setFloat64(0, absoluteNow(), true);
    const started = performance.now();
    try {
      (fed % 2 === 0 ? toA : toB).sendSync(message);
    } catch (err) {
      if (err instanceof DeadlockError) return { fed, deadlock: { message: err.message, cycle: err.cycle, blockedMs: performance.now() - started } };
      if (err instanceof ChannelClosedError) return { fed }; // a peer ended (deadlocked): nothing to feed
      throw err;
    }
  }
  return { fed };
}
