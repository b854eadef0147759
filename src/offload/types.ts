/**
 * The types of offload(): what a protocol module exports, what it is
 * given, and offload()'s options and statistics.
 */
import type { Shareable } from "../core.js";
import type { InterpreterPool } from "../pool/interpreter-pool.js";

/** Who is on the other end of a connection, as the protocol's `connect` is told. */
export interface ConnectionInfo {
  /** The connection's id, unique within one offload(). */
  id: number;
  remoteAddress: string;
  remotePort: number;
}

/** Bytes to write: one array, or several written in order. */
export type ReplyBytes = Uint8Array | Uint8Array[];

/**
 * What a protocol hands back for the bytes it was given: bytes to write
 * (in order, after every earlier reply of the connection), nothing, or
 * `{ write, close }` where `close: true` ends the connection once `write`
 * has gone out.
 */
export type Reply = ReplyBytes | undefined | void | { write?: ReplyBytes; close?: boolean };

/** One connection's protocol state machine, made by the module's `connect`. */
export interface ProtocolConnection {
  /**
   * Called with the connection's next bytes, in order, any fragmentation
   * (a request may arrive in pieces, or many in one call). Returns the
   * reply, or a promise of it: offload() gives this connection nothing
   * more until the promise settles, so replies stay in order. Throwing (or
   * rejecting) closes this connection only, after the module's `failed()`
   * reply if it has one.
   */
  receive(bytes: Uint8Array): Reply | Promise<Reply>;
  /** The peer finished sending (FIN): the last word before offload() closes the connection. */
  end?(): Reply | Promise<Reply>;
}

/** What `start(context)` is told, once per interpreter, before any connection. */
export interface ProtocolContext {
  /** This interpreter's index among the protocol interpreters (0-based); a replacement keeps the index of the one it replaces. */
  index: number;
  /** How many protocol interpreters there are. */
  interpreters: number;
}

/** The shape of a protocol module (loaded in every protocol interpreter). */
export interface ProtocolModule {
  /** Makes the state machine of a new connection. */
  default(info: ConnectionInfo): ProtocolConnection;
  /** The reply to data that arrives while the connection's interpreter is full, with `overload: "reject"`. */
  overloaded?(): Uint8Array;
  /** The reply written before closing a connection whose handler threw (`error` given) or whose interpreter died (no argument). */
  failed?(error?: unknown): Uint8Array;
  /** Runs once in each interpreter before it is given connections (`bind` globals are set by then). */
  start?(context: ProtocolContext): void | Promise<void>;
}

export interface OffloadOptions {
  /** The protocol module (a path, file URL or bare specifier), loaded in every protocol interpreter. */
  protocol: string | URL;
  /**
   * How many protocol interpreters to create (default: max(1,
   * availableParallelism - 1)), or an InterpreterPool to serve on: then
   * one protocol shard per interpreter slot of the pool
   * (`pool.maxInterpreters`), each a long-running task of the pool (it
   * holds one of the pool's interpreters while offload() serves). The pool
   * stays the caller's: offload() never closes it; close the offload
   * before the pool (a pool's close() waits for the serving tasks).
   */
  interpreters?: number | InterpreterPool;
  /**
   * Chunks of input (socket reads) an interpreter may have in flight, read
   * and not yet handed to the protocol, before it counts as full (default 64);
   * also the capacity of its inbound channel, in batches.
   */
  capacity?: number;
  /** When an interpreter is full: stop reading its sockets ("pause", the default) or answer `overloaded()` and close ("reject"). */
  overload?: "pause" | "reject";
  /**
   * Globals set in every protocol interpreter; channel ends in it (at any
   * depth of plain arrays and objects) are cloned for each interpreter.
   * With a pool they are globals of the pool's thread while the shard's
   * task runs (set before the protocol module is imported, removed when
   * the task ends, the ends released then). A pool thread keeps the modules
   * it loaded across tasks: read bound values in `start()` or `connect()`,
   * not at the module's top level.
   */
  bind?: Record<string, Shareable>;
  /** Input bytes of one connection in flight before its socket stops being read (default 128 KiB). */
  connectionWindow?: number;
  /** Reply bytes of one connection not yet handed to the kernel before the interpreter holds its input (default 256 KiB). */
  outputWindow?: number;
  /** Prefix of the interpreters' names (default "offload"). */
  name?: string;
}

/** One protocol interpreter, as `stats()` shows it. */
export interface OffloadInterpreterStats {
  index: number;
  /** The interpreter's id (changes when it is replaced); on a pool, the id of the pool interpreter running the shard's task, 0 until it serves. */
  id: number;
  alive: boolean;
  connections: number;
  /** Socket reads in flight (read, not yet handed to the protocol). */
  chunksInFlight: number;
  bytesInFlight: number;
  /** Batches waiting for room in its inbound channel. */
  batchesWaiting: number;
  full: boolean;
  restarts: number;
}

export interface OffloadStats {
  /** Connections open now. */
  connections: number;
  accepted: number;
  /** Connections answered with overloaded() and closed ("reject"). */
  rejected: number;
  /** Connections closed because their handler threw. */
  failed: number;
  /** Connections closed because their interpreter died. */
  lost: number;
  /** Sockets whose reading is paused now, and why (a socket may count in several). */
  paused: { window: number; output: number; full: number };
  bytesIn: number;
  bytesOut: number;
  /** The most input in flight seen, per interpreter and per connection (chunks, bytes). */
  peak: { chunksInFlight: number; bytesInFlight: number; connectionBytesInFlight: number; writeBuffered: number };
  /** The message of the last handler error, if any. */
  lastError?: string;
  interpreters: OffloadInterpreterStats[];
}

export interface Offload {
  /** Resolves once every protocol interpreter is serving; rejects if one cannot start (the module fails to load, `start` throws). */
  readonly ready: Promise<void>;
  stats(): OffloadStats;
  /**
   * Stops taking connections, lets the interpreters finish what they were
   * given (their replies are written), ends every connection, and ends the
   * interpreters. Sockets still open after `timeout` ms (default 5000) are
   * destroyed and interpreters terminated. Does not close `server`.
   */
  close(options?: { timeout?: number }): Promise<void>;
}
