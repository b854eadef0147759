/**
 * The snapshot `inspect()` returns: the state of every interpreter and
 * channel of the process at one moment, as "Seeing a running system" in
 * the contract (shared/API.md) describes it, plus a few fields the
 * contract is silent on (marked "beyond the contract").
 *
 * Numbers are plain: `capacity` is `Infinity` for an unbounded channel.
 * In JSON (`/snapshot.json`, server-sent events, `top`) `Infinity` is
 * written as the string "Infinity" (see `snapshotToJson`).
 */
import type { DeadlockParty } from "../core.js";
import type { PipelineStats } from "./pipelines.js";

export type WaitOpName = "send" | "recv" | "select" | "acquire";

/** One thing an interpreter waits for right now. */
export interface WaitSnapshot {
  op: WaitOpName;
  /** The channel waited on (for a select: its first case; every case is in `cases`). */
  channel?: number;
  /** The Lock waited for (op "acquire"). */
  lock?: number;
  /**
   * How long this wait has lasted, in ms. A synchronous wait publishes when
   * it began; an asynchronous one does not, so its time counts from the
   * first snapshot that saw it (the page and `top` take several a second).
   */
  sinceMs: number;
  /** An `await`ed operation (the thread's event loop still runs), not a blocking one. */
  async: boolean;
  /** Beyond the contract: the wait has a timeout (so it can never be part of a deadlock). */
  timeout?: boolean;
  /** Beyond the contract: a select's cases, each a send or receive on a channel. */
  cases?: Array<{ op: "send" | "recv"; channel: number }>;
}

export interface InterpreterSnapshot {
  id: number;
  name: string;
  state: "running" | "idle" | "waiting" | "exited";
  waiting?: WaitSnapshot[];
}

export interface ChannelSnapshot {
  id: number;
  name: string;
  /** 0, n or Infinity. */
  capacity: number;
  overflow: string;
  /** Messages buffered (capacity 0: offered by senders still waiting for a receiver). */
  length: number;
  /** Bytes the buffered records take in the ring. */
  bytes: number;
  maxBufferBytes: number;
  /** Beyond the contract: the ring's size now (it grows within maxBufferBytes). */
  ringBytes: number;
  sent: number;
  received: number;
  dropped: number;
  closed: boolean;
  /** Interpreter ids holding a send end (each once). */
  senders: number[];
  /** Interpreter ids holding a recv end (each once). */
  receivers: number[];
  /** Beyond the contract: ends inside buffered messages or on their way to an interpreter. */
  inTransit?: { senders: number; receivers: number };
  /** Interpreter ids with a send parked on this channel. */
  waitingSenders: number[];
  waitingReceivers: number[];
  /**
   * Beyond the contract: set when the channel's shared memory fails a
   * check (bad magic word, counts out of range): what failed. The other
   * fields then hold what could be read, or zeros.
   */
  corrupt?: string;
}

export interface WaitForEdge {
  /** Interpreter id that waits... */
  from: number;
  /** ...for something only this interpreter can do (send, receive, release). */
  to: number;
  channel?: number;
  lock?: number;
  /** Beyond the contract: the waiting side's wait is asynchronous. */
  async?: boolean;
}

export interface DeadlockSnapshot {
  cycle: DeadlockParty[];
  /** Beyond the contract for `deadlocks`: how long every wait of the cycle has stood, in ms. */
  sinceMs: number;
}

export interface Snapshot {
  /** Date.now() when it was taken. */
  at: number;
  interpreters: InterpreterSnapshot[];
  channels: ChannelSnapshot[];
  waitFor: WaitForEdge[];
  /** Sets of blocking waits that only each other could end: the detector fails (or reports) them. */
  deadlocks: DeadlockSnapshot[];
  /** Cycles that only an asynchronous waiter keeps from being a deadlock: a warning, never thrown. */
  possibleDeadlocks: DeadlockSnapshot[];
  pipelines: PipelineStats[];
  /** Beyond the contract: the deadlock detector's settings. */
  detection?: { mode: string; afterMs: number };
  /** Beyond the contract: why this snapshot is incomplete (e.g. the supervisor did not answer). */
  error?: string;
}

/** Keys whose value may be Infinity (written as "Infinity" in JSON; a name never is touched). */
const INFINITE_KEYS = new Set(["capacity", "maxBufferBytes"]);

/** JSON text of a snapshot: an infinite capacity becomes the string "Infinity". */
export function snapshotToJson(snapshot: Snapshot): string {
  return JSON.stringify(snapshot, (key, value: unknown) => (value === Infinity && INFINITE_KEYS.has(key) ? "Infinity" : value));
}

/** The inverse of snapshotToJson. */
export function snapshotFromJson(text: string): Snapshot {
  return JSON.parse(text, (key, value: unknown) => (value === "Infinity" && INFINITE_KEYS.has(key) ? Infinity : value)) as Snapshot;
}
