/**
 * offload()'s side inside each protocol interpreter: takes batches of frames
 * from the inbound channel (frames.ts), runs the protocol module's
 * connections on them, and sends their replies back in batches.
 *
 * Per connection, in order: bytes are handed to `receive` in slices of at
 * most SLICE_BYTES; while a `receive` promise is pending, or while more
 * than `outputWindow` reply bytes of the connection have not been written
 * to its socket yet (the main thread returns that credit in WRITTEN
 * frames), the connection's next input waits here, unconsumed (so the
 * main thread's window for it stays used and its socket is soon paused).
 * Slicing bounds what one call can produce before the output window is
 * checked again.
 *
 * The loop never blocks its thread: it waits with `await recv()`, so a
 * protocol's own async work (timers, other channels) runs in between.
 */
import { ChannelClosedError, current, type RecvChannel, type SendChannel } from "../index.js";
import {
  CLOSE_FLAG,
  FrameWriter,
  IN_DATA,
  IN_END,
  IN_GONE,
  IN_OPEN,
  IN_WRITTEN,
  OUT_FAILED,
  OUT_READY,
  OUT_REPLY,
  BUSY_FLAG,
  readU16,
  readU32,
  REPLY_HEADER,
} from "./frames.js";
import type { ConnectionInfo, ProtocolConnection, ProtocolModule, Reply } from "./types.js";

/** Largest slice of input given to one `receive` call. */
export const SLICE_BYTES = 16 * 1024;
/** A batch of replies is sent once it holds this much (else at the end of each inbound batch). */
const FLUSH_BYTES = 256 * 1024;
/** Reply batches waiting for room in the outbound channel before the loop stops taking input. */
const MAX_WAITING_BATCHES = 4;

export interface ServeSettings {
  index: number;
  interpreters: number;
  outputWindow: number;
}

const END = Symbol("end");
type Held = Uint8Array | typeof END;

interface Conn {
  id: number;
  handler: ProtocolConnection;
  /** Input (and the END marker) waiting for a pending receive, or for output credit. */
  held: Held[];
  /** A receive()/end() promise is pending. */
  busy: boolean;
  /** Reply bytes sent to the main thread and not yet reported written. */
  unwritten: number;
  /** Forgotten: closed by us or gone; nothing more is done for it. */
  done: boolean;
}

function isPromise(value: unknown): value is Promise<unknown> {
  return typeof (value as { then?: unknown } | null)?.then === "function";
}

const decoder = new TextDecoder("latin1");

/**
 * Sets offload()'s `bind` values as globals of this thread (on a pool's
 * thread, which has no prepareMain) and returns what puts the previous
 * globals back. A pool thread serves other tasks afterwards: the globals
 * last as long as the task that set them.
 */
function setGlobals(bindings: Record<string, unknown> | undefined): () => void {
  if (bindings === undefined) return () => {};
  const global = globalThis as Record<string, unknown>;
  const previous = Object.keys(bindings).map((name) => ({ name, had: Object.hasOwn(global, name), value: global[name] }));
  for (const [name, value] of Object.entries(bindings)) global[name] = value;
  return () => {
    for (const { name, had, value } of previous) {
      if (had) global[name] = value;
      else delete global[name];
    }
  };
}

/**
 * Describes the protocol module for the main thread: the replies it needs
 * without loading the module itself. `bindings` (the pool form of
 * offload()) are globals while the module loads and its replies are made.
 */
export async function describe(protocolHref: string, bindings?: Record<string, unknown>): Promise<{ overloaded?: Uint8Array; failed?: Uint8Array }> {
  const restore = setGlobals(bindings);
  try {
    const protocol = (await import(protocolHref)) as ProtocolModule;
    const result: { overloaded?: Uint8Array; failed?: Uint8Array } = {};
    if (typeof protocol.overloaded === "function") result.overloaded = toBytes(protocol.overloaded(), "overloaded()");
    if (typeof protocol.failed === "function") result.failed = toBytes(protocol.failed(), "failed()");
    return result;
  } finally {
    restore();
  }
}

function toBytes(value: unknown, what: string): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value);
  throw new TypeError(`offload: the protocol's ${what} must return a Uint8Array, got ${value === null ? "null" : typeof value}`);
}

/**
 * Serves connections until the inbound channel is closed and drained, then
 * waits for pending receives (the main thread ends this interpreter, or
 * aborts this pool task, if that takes past its close timeout), sends the
 * last replies and closes `outTx`. Called by offload() through
 * `Interpreter.call`, or as a task of an InterpreterPool (then with
 * `bindings`: offload()'s `bind` values, made globals before the module
 * loads and removed when this returns); rejects if the module cannot be
 * loaded or its `start` throws.
 */
export async function serve(
  inRx: RecvChannel<Uint8Array>,
  outTx: SendChannel<Uint8Array>,
  protocolHref: string,
  settings: ServeSettings,
  bindings?: Record<string, unknown>,
): Promise<void> {
  const restore = setGlobals(bindings);
  const probe = Symbol.for("interpreters.offload.runtime");
  try {
    const protocol = (await import(protocolHref)) as ProtocolModule;
    if (typeof protocol.default !== "function") {
      throw new TypeError(`offload: the protocol module ${protocolHref} must export a default function connect(info)`);
    }
    await protocol.start?.({ index: settings.index, interpreters: settings.interpreters });
    const server = new Runtime(protocol, outTx, settings.outputWindow);
    // For tests and diagnostics inside the interpreter: how many connections it holds.
    (globalThis as Record<symbol, unknown>)[probe] = { connections: () => server.connections };
    server.ready();
    await server.run(inRx);
  } finally {
    outTx.close();
    delete (globalThis as Record<symbol, unknown>)[probe];
    restore();
  }
}

class Runtime {
  readonly #protocol: ProtocolModule;
  readonly #outTx: SendChannel<Uint8Array>;
  readonly #outputWindow: number;
  readonly #conns = new Map<number, Conn>();
  #out = new FrameWriter(64 * 1024);
  /** Reply batches that found the outbound channel full, in order. */
  readonly #waiting: Uint8Array[] = [];
  #sending = false;
  #flushScheduled = false;
  #busyCount = 0;
  #wakeLoop: (() => void) | undefined;

  constructor(protocol: ProtocolModule, outTx: SendChannel<Uint8Array>, outputWindow: number) {
    this.#protocol = protocol;
    this.#outTx = outTx;
    this.#outputWindow = outputWindow;
  }

  get connections(): number {
    return this.#conns.size;
  }

  /** Tells the main thread that this interpreter serves, and which one it is (a pool task's thread is known only here). */
  ready(): void {
    this.#out.control(OUT_READY, current().id);
    this.#flush();
  }

  async run(inRx: RecvChannel<Uint8Array>): Promise<void> {
    for (;;) {
      // Backpressure from the main thread: while it has not taken our
      // replies, take no more input.
      while (this.#waiting.length >= MAX_WAITING_BATCHES) await this.#until(() => this.#waiting.length < MAX_WAITING_BATCHES);
      const next = inRx.tryRecv();
      let batch: Uint8Array;
      if (next.ok) batch = next.value;
      else if (next.closed) break;
      else {
        this.#flush();
        try {
          batch = await inRx.recv();
        } catch (err) {
          if (err instanceof ChannelClosedError) break;
          throw err;
        }
      }
      this.#handleBatch(batch);
      if (this.#out.length >= FLUSH_BYTES) this.#flush();
    }
    // Shutdown: let pending receives finish (bounded: the main thread
    // terminates us if this takes too long), then the last replies.
    while (this.#busyCount > 0) await this.#until(() => this.#busyCount === 0);
    this.#flush();
    while (this.#waiting.length > 0 || this.#sending) await this.#until(() => this.#waiting.length === 0 && !this.#sending);
  }

  /** Waits until `ready()` holds, re-checked whenever a send or a receive settles. */
  #until(ready: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (ready()) resolve();
        else this.#wakeLoop = check;
      };
      check();
    });
  }

  #poke(): void {
    const wake = this.#wakeLoop;
    this.#wakeLoop = undefined;
    wake?.();
  }

  #handleBatch(batch: Uint8Array): void {
    let at = 0;
    const end = batch.length;
    while (at < end) {
      const type = batch[at]!;
      const id = readU32(batch, at + 1);
      at += 5;
      switch (type) {
        case IN_OPEN: {
          const port = readU16(batch, at);
          const n = batch[at + 2]!;
          const address = decoder.decode(batch.subarray(at + 3, at + 3 + n));
          at += 3 + n;
          this.#open({ id, remoteAddress: address, remotePort: port });
          break;
        }
        case IN_DATA: {
          const n = readU32(batch, at);
          const bytes = batch.subarray(at + 4, at + 4 + n);
          at += 4 + n;
          const conn = this.#conns.get(id);
          if (conn) this.#data(conn, bytes);
          break;
        }
        case IN_END: {
          const conn = this.#conns.get(id);
          if (conn) {
            conn.held.push(END);
            this.#pump(conn);
          }
          break;
        }
        case IN_GONE: {
          const conn = this.#conns.get(id);
          if (conn) this.#forget(conn);
          break;
        }
        case IN_WRITTEN: {
          const n = readU32(batch, at);
          at += 4;
          const conn = this.#conns.get(id);
          if (conn) {
            conn.unwritten -= n;
            this.#pump(conn);
          }
          break;
        }
        default:
          throw new Error(`offload runtime: unknown frame type ${type} at byte ${at - 5} of a batch of ${end}`);
      }
    }
  }

  #open(info: ConnectionInfo): void {
    const conn: Conn = { id: info.id, handler: undefined as unknown as ProtocolConnection, held: [], busy: false, unwritten: 0, done: false };
    this.#conns.set(info.id, conn);
    try {
      const handler = this.#protocol.default(info);
      if (handler === null || typeof handler !== "object" || typeof handler.receive !== "function") {
        throw new TypeError(`offload: connect(info) must return an object with a receive(bytes) method, got ${handler === null ? "null" : typeof handler}`);
      }
      conn.handler = handler;
    } catch (err) {
      this.#fail(conn, err, 0);
    }
  }

  #data(conn: Conn, bytes: Uint8Array): void {
    if (conn.busy || conn.held.length > 0 || conn.unwritten > this.#outputWindow) {
      conn.held.push(bytes);
      return;
    }
    this.#feed(conn, bytes);
  }

  /** Hands `bytes` to the protocol, a slice at a time, until done or held. */
  #feed(conn: Conn, bytes: Uint8Array): void {
    let at = 0;
    while (at < bytes.length) {
      const slice = bytes.subarray(at, at + SLICE_BYTES);
      at += slice.length;
      let reply: Reply | Promise<Reply>;
      try {
        reply = conn.handler.receive(slice);
      } catch (err) {
        this.#fail(conn, err, slice.length);
        return;
      }
      if (isPromise(reply)) {
        if (at < bytes.length) conn.held.unshift(bytes.subarray(at));
        this.#await(conn, reply, slice.length, false);
        return;
      }
      this.#reply(conn, slice.length, reply, false);
      if (conn.done) return;
      if (conn.unwritten > this.#outputWindow && at < bytes.length) {
        conn.held.unshift(bytes.subarray(at));
        return;
      }
    }
  }

  /** Runs a pending promise of `receive`/`end`; the connection takes nothing else meanwhile. */
  #await(conn: Conn, promise: Promise<Reply>, consumed: number, closing: boolean): void {
    conn.busy = true;
    this.#busyCount++;
    // The input was handed over: its credit goes back now; the reply follows.
    if (consumed > 0) this.#frame(conn, consumed, BUSY_FLAG, undefined);
    promise.then(
      (reply) => {
        this.#settled(conn);
        if (conn.done) return;
        this.#reply(conn, 0, reply, closing);
        this.#pump(conn);
        this.#scheduleFlush();
      },
      (err: unknown) => {
        this.#settled(conn);
        if (conn.done) return;
        this.#fail(conn, err, 0);
        this.#scheduleFlush();
      },
    );
  }

  #settled(conn: Conn): void {
    conn.busy = false;
    this.#busyCount--;
    this.#poke();
  }

  /** Feeds held input while the connection may take it. */
  #pump(conn: Conn): void {
    while (!conn.done && !conn.busy && conn.held.length > 0 && conn.unwritten <= this.#outputWindow) {
      const next = conn.held.shift()!;
      if (next === END) this.#end(conn);
      else this.#feed(conn, next);
    }
  }

  #end(conn: Conn): void {
    let reply: Reply | Promise<Reply>;
    try {
      reply = conn.handler.end?.();
    } catch (err) {
      this.#fail(conn, err, 0);
      return;
    }
    if (isPromise(reply)) this.#await(conn, reply, 0, true);
    else this.#reply(conn, 0, reply, true);
  }

  /** Writes the reply frames of one call; `consumed` input bytes are acknowledged with them. */
  #reply(conn: Conn, consumed: number, reply: Reply, closing: boolean): void {
    let chunks: Uint8Array | Uint8Array[] | undefined;
    let close = closing;
    if (reply === undefined || reply === null) chunks = undefined;
    else if (reply instanceof Uint8Array || Array.isArray(reply)) chunks = reply;
    else if (typeof reply === "object") {
      chunks = reply.write;
      if (reply.close === true) close = true;
    } else {
      this.#fail(conn, new TypeError(`offload: receive() returned a ${typeof reply}; return bytes, an array of bytes, undefined or { write, close }`), consumed);
      return;
    }
    const flags = close ? CLOSE_FLAG : 0;
    if (chunks === undefined) {
      if (consumed > 0 || close) this.#frame(conn, consumed, flags, undefined);
    } else if (chunks instanceof Uint8Array) {
      this.#frame(conn, consumed, flags, chunks);
    } else {
      // Several arrays: one frame each; the flags go on the last.
      if (chunks.length === 0 && (consumed > 0 || close)) this.#frame(conn, consumed, flags, undefined);
      for (let i = 0; i < chunks.length; i++) {
        const chunk = chunks[i];
        if (!(chunk instanceof Uint8Array)) {
          this.#fail(conn, new TypeError(`offload: reply[${i}] is a ${typeof chunk}, not a Uint8Array`), i === 0 ? consumed : 0);
          return;
        }
        this.#frame(conn, i === 0 ? consumed : 0, i === chunks.length - 1 ? flags : 0, chunk);
      }
    }
    if (close) this.#forget(conn);
  }

  /** One REPLY frame. */
  #frame(conn: Conn, consumed: number, flags: number, bytes: Uint8Array | undefined): void {
    const n = bytes === undefined ? 0 : bytes.length;
    const out = this.#out;
    out.ensure(REPLY_HEADER + n);
    out.u8(OUT_REPLY | flags | (conn.busy && (flags & CLOSE_FLAG) === 0 ? BUSY_FLAG : 0));
    out.u32(conn.id);
    out.u32(consumed);
    out.u32(n);
    if (n > 0) out.bytes(bytes!);
    out.frames++;
    conn.unwritten += n;
    if (out.length >= FLUSH_BYTES) this.#flush();
  }

  /** The handler threw: the protocol's failed() reply, close, and tell the main thread why. */
  #fail(conn: Conn, err: unknown, consumed: number): void {
    let last: Uint8Array | undefined;
    try {
      const bytes = this.#protocol.failed?.(err);
      if (bytes instanceof Uint8Array) last = bytes;
    } catch {
      // a failing failed(): close without a last word
    }
    this.#frame(conn, consumed, CLOSE_FLAG, last);
    const message = new TextEncoder().encode(String((err as Error)?.message ?? err).slice(0, 1000));
    const out = this.#out;
    out.ensure(7 + message.length);
    out.u8(OUT_FAILED);
    out.u32(conn.id);
    out.u16(message.length);
    out.bytes(message);
    out.frames++;
    this.#forget(conn);
  }

  #forget(conn: Conn): void {
    conn.done = true;
    conn.held.length = 0;
    this.#conns.delete(conn.id);
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  /** Sends the replies written so far: at once when there is room, else in order behind the waiting ones. */
  #flush(): void {
    const out = this.#out;
    if (out.length === 0) return;
    if (this.#waiting.length === 0 && !this.#sending && this.#outTx.trySend(out.view())) {
      out.reset();
      return;
    }
    this.#waiting.push(out.copy());
    out.reset();
    if (!this.#sending) void this.#drainWaiting();
  }

  async #drainWaiting(): Promise<void> {
    this.#sending = true;
    try {
      while (this.#waiting.length > 0) {
        await this.#outTx.send(this.#waiting[0]!);
        this.#waiting.shift();
        this.#poke();
      }
    } catch (err) {
      // The main thread is gone (closed its receive end): nothing to deliver to.
      if (!(err instanceof ChannelClosedError)) throw err;
      this.#waiting.length = 0;
    } finally {
      this.#sending = false;
      this.#poke();
    }
  }
}
