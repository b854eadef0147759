/**
 * offload(server, options): the main thread keeps the sockets; protocol
 * interpreters see bytes only (sans-IO), and their replies come back to be
 * written.
 *
 * Each connection is pinned to one interpreter (the one with the fewest
 * connections when it arrives). Its bytes travel there in order through the
 * interpreter's inbound channel, batched with every other socket's bytes of
 * the same event-loop turn; replies come back in order through the
 * interpreter's outbound channel (frames.ts has the wire; runtime.ts the
 * interpreter's side).
 *
 * Backpressure, with credits both ways so that memory stays bounded
 * whatever clients do:
 * - input: a socket read is "in flight" until the protocol's receive() has
 *   been given it. A connection may have `connectionWindow` bytes in flight,
 *   else its socket is paused; an interpreter `capacity` reads, else it is
 *   full: "pause" stops reading all its sockets until half of that is
 *   handed over, "reject" answers new data with the module's overloaded()
 *   (after the connection's earlier replies) and closes the connection.
 * - output: reply bytes not yet handed to the kernel count against the
 *   connection's `outputWindow`; past it the socket is not read, and the
 *   interpreter holds the connection's input (no receive() calls) until
 *   the main thread reports the bytes written (WRITTEN frames), so a
 *   client that never reads its replies costs a window, not the server.
 *
 * Failures: a handler that throws closes its own connection (after the
 * module's failed() reply); an interpreter that dies closes its
 * connections (after failed()) and is replaced; nothing else is touched.
 *
 * Interpreters: created here (`interpreters: n`), or the slots of the
 * caller's InterpreterPool (`interpreters: pool`): one shard per slot, its
 * serve() loop a pool task that lasts as long as the shard serves (a dead
 * thread rejects the task; the shard is started again as a new task).
 * offload() never closes that pool; at its close timeout it aborts its
 * tasks, which the pool does by ending their threads.
 */
import type { Server, Socket } from "node:net";
import { availableParallelism } from "node:os";
import { ChannelClosedError, ChannelFullError, create, createChannel, InterpreterPool, InterpretersError, RecvChannel, SendChannel, type Interpreter } from "../index.js";
import {
  BUSY_FLAG,
  CLOSE_FLAG,
  DATA_HEADER,
  FrameWriter,
  IN_DATA,
  IN_END,
  IN_GONE,
  IN_OPEN,
  IN_WRITTEN,
  OUT_FAILED,
  OUT_READY,
  OUT_REPLY,
  readU16,
  readU32,
  TYPE_MASK,
} from "./frames.js";
import type { ServeSettings } from "./runtime.js";
import type { Offload, OffloadOptions, OffloadStats } from "./types.js";

const fromSource = import.meta.url.endsWith(".ts");
/** The interpreter side's module, as this thread loaded us (source or built). */
const RUNTIME_HREF = new URL(`./runtime.${fromSource ? "ts" : "js"}`, import.meta.url).href;

/** A batch to an interpreter is sent once it holds this much (else at the end of the event-loop turn). */
const FLUSH_BYTES = 256 * 1024;
/** Largest socket read Node hands us; an inbound ring holds `capacity` of them. */
const READ_BYTES = 64 * 1024;
/** A lost or closed connection still writing after this long is destroyed. */
const LINGER_MS = 5000;

/** Why a socket is not being read (bits of Conn.pause). */
const PAUSE_WINDOW = 1;
const PAUSE_OUTPUT = 2;
const PAUSE_FULL = 4;
const PAUSE_DONE = 8;

class Conn {
  readonly id: number;
  readonly socket: Socket;
  readonly shard: Shard;
  /** Input bytes read and not yet handed to the protocol. */
  bytesInFlight = 0;
  /** Sizes of the reads in flight, oldest first from `head` (with `headUsed` bytes of the oldest handed over). */
  readonly reads: number[] = [];
  head = 0;
  headUsed = 0;
  /** A receive() of this connection is pending in the interpreter (its reply follows). */
  busy = false;
  pause = 0;
  /** Reply bytes received for this socket; of those, reported written to the interpreter. */
  outReceived = 0;
  outAcked = 0;
  readonly ackStep: number;
  corked = false;
  /** Answered with overloaded() once its earlier replies are out. */
  rejected = false;
  /** We ended (or destroyed) the socket, or it is gone: nothing more is written or read. */
  finished = false;
  /** The interpreter has forgotten it (it closed it, or was told GONE, or died). */
  forgotten = false;

  constructor(id: number, socket: Socket, shard: Shard, outputWindow: number) {
    this.id = id;
    this.socket = socket;
    this.shard = shard;
    // Credit goes back in steps; a step must leave the socket's own
    // high-water mark inside the window, so that an interpreter that waits
    // for credit always has a 'drain' event coming (which returns it all).
    const hwm = socket.writableHighWaterMark;
    this.ackStep = outputWindow - hwm >= outputWindow / 4 ? outputWindow / 4 : outputWindow > hwm ? outputWindow - hwm : 1;
  }
}

/** One protocol interpreter slot: its current incarnation's channels and the connections pinned to it. */
class Shard {
  readonly index: number;
  interpreter: Interpreter | undefined;
  id = 0;
  inTx: SendChannel<Uint8Array> | undefined;
  /** Serving (or starting): takes connections. */
  alive = false;
  /** Gave up restarting it. */
  dead = false;
  readonly writer = new FrameWriter(64 * 1024);
  /** Batches that found the inbound channel full, in order. */
  readonly waiting: Uint8Array[] = [];
  sending = false;
  chunks = 0;
  bytes = 0;
  full = false;
  readonly conns = new Set<Conn>();
  restarts = 0;
  /** Ends once this incarnation's outbound channel is closed and drained. */
  done: Promise<void> = Promise.resolve();
  /** Ends once this incarnation is over and its interpreter has exited. */
  over: Promise<void> = Promise.resolve();

  constructor(index: number) {
    this.index = index;
  }
}

/**
 * Serves `server`'s connections with a sans-IO protocol module run in
 * protocol interpreters (see the module's docs for the protocol's shape:
 * `connect(info)` returning `{ receive(bytes), end?() }`, and optionally
 * `overloaded()`, `failed(error?)` and `start(context)`).
 *
 * Returns at once; interpreters start in the background (`ready` says when
 * they serve; connections that arrive before wait, buffered in bounded
 * channels). Throws RangeError for bad options. Listens to `server`'s
 * 'connection' event: call it before or after `listen`, not together with
 * another connection handler.
 */
export function offload(server: Server, options: OffloadOptions): Offload {
  return new OffloadServer(server, options);
}

function checkPositiveInteger(value: number, name: string): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new RangeError(`offload: ${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

function protocolHref(protocol: string | URL): string {
  if (protocol instanceof URL) return protocol.href;
  if (typeof protocol !== "string" || protocol.length === 0) {
    throw new TypeError(`offload: protocol must be a module path, file URL or specifier, got ${String(protocol)}`);
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(protocol)) return protocol;
  if (protocol.startsWith("/") || protocol.startsWith("./") || protocol.startsWith("../")) {
    return new URL(protocol, `file://${process.cwd()}/`).href;
  }
  return protocol;
}

/** A copy of `value` in which every channel end is a fresh clone (each interpreter gets handles of its own). */
function cloneEnds(value: unknown): unknown {
  if (value instanceof SendChannel || value instanceof RecvChannel) return value.clone();
  if (Array.isArray(value)) return value.map(cloneEnds);
  if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const copy: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) copy[key] = cloneEnds(item);
    return copy;
  }
  return value;
}

function closeEnds(value: unknown): void {
  if (value instanceof SendChannel || value instanceof RecvChannel) {
    try {
      value.close();
    } catch {
      // already closed or moved
    }
  } else if (Array.isArray(value)) value.forEach(closeEnds);
  else if (value !== null && typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    Object.values(value).forEach(closeEnds);
  }
}

class OffloadServer implements Offload {
  readonly ready: Promise<void>;
  readonly #server: Server;
  readonly #href: string;
  readonly #name: string;
  readonly #capacity: number;
  readonly #reject: boolean;
  readonly #window: number;
  readonly #outputWindow: number;
  readonly #bind: Record<string, unknown> | undefined;
  /** The caller's pool the shards run on as tasks (`interpreters: pool`); else each shard creates its interpreter. */
  readonly #pool: InterpreterPool | undefined;
  /** Aborted at close()'s timeout: ends the pool tasks (describe, serve) still running or queued. */
  readonly #abort = new AbortController();
  /** The pool task that describes the protocol module (run once, before any shard's serve task). */
  #describing: Promise<void> | undefined;
  readonly #shards: Shard[];
  readonly #conns = new Map<number, Conn>();
  readonly #onConnection = (socket: Socket): void => this.#accept(socket);
  #nextConn = 1;
  #rotate = 0;
  #dirty: Shard[] = [];
  #flushScheduled = false;
  #closing = false;
  /** How long close() lets interpreters finish before terminating them. */
  #closeTimeout = 5000;
  #closed: Promise<void> | undefined;
  /** The module's replies, fetched once from the first interpreter. */
  #overloadedBytes: Uint8Array | undefined;
  #failedBytes: Uint8Array | undefined;
  #described = false;
  readonly #stats = {
    accepted: 0,
    rejected: 0,
    failed: 0,
    lost: 0,
    bytesIn: 0,
    bytesOut: 0,
    peakChunks: 0,
    peakBytes: 0,
    peakConnBytes: 0,
    peakWriteBuffered: 0,
    lastError: undefined as string | undefined,
  };

  constructor(server: Server, options: OffloadOptions) {
    if (options === null || typeof options !== "object") throw new TypeError("offload: options are required ({ protocol })");
    if (typeof (server as { on?: unknown })?.on !== "function" || typeof (server as { listen?: unknown }).listen !== "function") {
      throw new TypeError("offload: server must be a net.Server");
    }
    this.#server = server;
    this.#href = protocolHref(options.protocol);
    const interpreters = options.interpreters;
    if (interpreters !== null && typeof interpreters === "object" && !(interpreters instanceof InterpreterPool)) {
      throw new TypeError("offload: interpreters must be a number or an InterpreterPool (of this copy of the library)");
    }
    this.#pool = interpreters instanceof InterpreterPool ? interpreters : undefined;
    const count =
      interpreters instanceof InterpreterPool ? interpreters.maxInterpreters : checkPositiveInteger(interpreters ?? Math.max(1, availableParallelism() - 1), "interpreters");
    this.#capacity = checkPositiveInteger(options.capacity ?? 64, "capacity");
    const overload = options.overload ?? "pause";
    if (overload !== "pause" && overload !== "reject") throw new RangeError(`offload: overload must be "pause" or "reject", got ${String(overload)}`);
    this.#reject = overload === "reject";
    this.#window = checkPositiveInteger(options.connectionWindow ?? 128 * 1024, "connectionWindow");
    this.#outputWindow = checkPositiveInteger(options.outputWindow ?? 256 * 1024, "outputWindow");
    this.#name = options.name ?? "offload";
    this.#bind = options.bind;
    this.#shards = Array.from({ length: count }, (_, i) => new Shard(i));
    server.on("connection", this.#onConnection);
    const starts = this.#shards.map((shard) => this.#start(shard));
    this.ready = Promise.all(starts).then(() => undefined);
    this.ready.catch(() => {}); // reported to whoever awaits it; never an unhandled rejection
  }

  // ------------------------------------------------------------ interpreters

  /** Starts an incarnation of `shard`'s interpreter; resolves when it serves, rejects if it cannot start. */
  #start(shard: Shard): Promise<void> {
    const { index } = shard;
    const bufferBytes = Math.min(1024 * 1024 * 1024, this.#capacity * (READ_BYTES + DATA_HEADER) + FLUSH_BYTES);
    const [inRx, inTx] = createChannel<Uint8Array>({
      capacity: this.#capacity,
      bufferBytes: Math.min(bufferBytes, 4 * 1024 * 1024),
      maxBufferBytes: bufferBytes,
      name: `${this.#name}-${index}-in`,
    });
    const [outRx, outTx] = createChannel<Uint8Array>({
      capacity: 64,
      bufferBytes: 1024 * 1024,
      maxBufferBytes: 4 * 1024 * 1024,
      name: `${this.#name}-${index}-out`,
    });
    shard.inTx = inTx;
    shard.alive = true;
    let markReady!: () => void;
    let failStart!: (err: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      markReady = resolve;
      failStart = reject;
    });
    let served = false;
    shard.done = this.#drainOut(shard, outRx, (id) => {
      shard.id = id;
      served = true;
      markReady();
    });
    shard.over = (async () => {
      let interpreter: Interpreter | undefined;
      try {
        const settings = { index, interpreters: this.#shards.length, outputWindow: this.#outputWindow };
        if (this.#pool) {
          await this.#serveOnPool(this.#pool, inRx, outTx, settings);
        } else {
          interpreter = await create({ name: `${this.#name}-${index}` });
          shard.interpreter = interpreter;
          shard.id = interpreter.id;
          if (this.#closing) throw new Error("offload: closed while starting");
          if (this.#bind) await interpreter.prepareMain(cloneEnds(this.#bind) as Record<string, unknown>);
          if (!this.#described) {
            const replies = await interpreter.call<{ overloaded?: Uint8Array; failed?: Uint8Array }>(RUNTIME_HREF, "describe", this.#href);
            this.#described = true;
            this.#overloadedBytes = replies.overloaded;
            this.#failedBytes = replies.failed;
          }
          await interpreter.call(RUNTIME_HREF, "serve", inRx, outTx, this.#href, settings);
        }
      } catch (err) {
        // Not started, or died: either way this incarnation is over. Its
        // ends given to the interpreter (or pool task) are released with
        // it; ours close.
        if (!served) failStart(this.#pool ? this.#poolStartError(this.#pool, index, err) : err);
        this.#stats.lastError = (err as Error)?.message ?? String(err);
        try {
          inRx.close();
        } catch {
          // moved into the interpreter
        }
        try {
          outTx.close();
        } catch {
          // moved into the interpreter
        }
        if (interpreter && !served) await interpreter.terminate().catch(() => {});
      }
      await shard.done;
      const exited = this.#incarnationOver(shard, served);
      await exited;
    })();
    return ready;
  }

  /**
   * One incarnation of a shard on the caller's pool: the protocol is
   * described once (a pool task of its own, before any shard serves), then
   * this shard's serve() loop runs as a pool task until the inbound channel
   * is closed (resolves), its thread dies or the task is refused or
   * aborted (rejects). `bind` goes along as an argument (a pool thread has
   * no prepareMain), its ends cloned for this task; they are released when
   * it ends.
   */
  async #serveOnPool(pool: InterpreterPool, inRx: RecvChannel<Uint8Array>, outTx: SendChannel<Uint8Array>, settings: ServeSettings): Promise<void> {
    this.#describing ??= this.#describeOnPool(pool);
    await this.#describing;
    if (this.#closing) throw new Error("offload: closed while starting");
    const bindings = this.#bind ? (cloneEnds(this.#bind) as Record<string, unknown>) : undefined;
    const task = pool.run({ module: RUNTIME_HREF, export: "serve", args: [inRx, outTx, this.#href, settings, bindings], signal: this.#abort.signal });
    // Refused (nothing moved): the clones are ours to close. Accepted: they moved into the task (closing them is a no-op).
    task.catch(() => closeEnds(bindings));
    await task;
  }

  async #describeOnPool(pool: InterpreterPool): Promise<void> {
    const bindings = this.#bind ? (cloneEnds(this.#bind) as Record<string, unknown>) : undefined;
    try {
      const replies = await pool.run<{ overloaded?: Uint8Array; failed?: Uint8Array }>({
        module: RUNTIME_HREF,
        export: "describe",
        args: [this.#href, bindings],
        signal: this.#abort.signal,
      });
      this.#described = true;
      this.#overloadedBytes = replies.overloaded;
      this.#failedBytes = replies.failed;
    } finally {
      closeEnds(bindings);
    }
  }

  /** Why shard `index` could not start on `pool`, naming both (the pool's own message says whether it is closed or full). */
  #poolStartError(pool: InterpreterPool, index: number, err: unknown): Error {
    const message = (err as Error)?.message ?? String(err);
    const hint =
      err instanceof ChannelFullError
        ? `; offload runs ${pool.maxInterpreters} tasks on it that each hold an interpreter while they serve (and one before them that describes the protocol): leave it room (maxQueue, fewer tasks of your own)`
        : "";
    return new InterpretersError(`offload "${this.#name}": shard ${index} could not start on pool "${pool.name}": ${message}${hint}`, { cause: err });
  }

  /** Reads the outbound channel of one incarnation until it is closed and drained. */
  async #drainOut(shard: Shard, outRx: RecvChannel<Uint8Array>, onReady: (id: number) => void): Promise<void> {
    try {
      for (;;) {
        const batch = await outRx.recv();
        this.#handleOut(shard, batch, onReady);
        for (let next = outRx.tryRecv(); next.ok; next = outRx.tryRecv()) this.#handleOut(shard, next.value, onReady);
      }
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) this.#stats.lastError = (err as Error)?.message ?? String(err);
    } finally {
      outRx.close();
    }
  }

  /** The incarnation has ended: at shutdown, or it died (its connections are closed and it is replaced). */
  #incarnationOver(shard: Shard, served: boolean): Promise<void> {
    shard.alive = false;
    const inTx = shard.inTx;
    shard.inTx = undefined;
    try {
      inTx?.close();
    } catch {
      // already closed
    }
    shard.waiting.length = 0;
    shard.writer.reset();
    shard.chunks = 0;
    shard.bytes = 0;
    shard.full = false;
    for (const conn of shard.conns) {
      conn.forgotten = true;
      if (!conn.finished) {
        if (!this.#closing) this.#stats.lost++;
        this.#finish(conn, this.#closing ? undefined : this.#failedBytes);
      }
    }
    shard.conns.clear();
    const interpreter = shard.interpreter;
    shard.interpreter = undefined;
    const exited = interpreter ? this.#endInterpreter(interpreter) : Promise.resolve();
    if (this.#closing) return exited;
    if (!served) {
      // It never served: its module does not load or its start() throws.
      // Restarting would fail the same way.
      shard.dead = true;
      return exited;
    }
    shard.restarts++;
    void this.#start(shard).catch(() => {});
    return exited;
  }

  /** Closes an interpreter whose serve() is over; terminates it if it does not exit within the close timeout. */
  async #endInterpreter(interpreter: Interpreter): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => {
      timer = setTimeout(() => resolve("late"), this.#closeTimeout);
      timer.unref();
    });
    try {
      if ((await Promise.race([interpreter.close().catch(() => {}), late])) === "late") await interpreter.terminate().catch(() => {});
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------ connections

  #pick(): Shard | undefined {
    const shards = this.#shards;
    let best: Shard | undefined;
    for (let k = 0; k < shards.length; k++) {
      const shard = shards[(this.#rotate + k) % shards.length]!;
      if (!shard.alive || shard.dead) continue;
      if (!best || shard.conns.size < best.conns.size) best = shard;
    }
    this.#rotate = (this.#rotate + 1) % shards.length;
    return best;
  }

  #accept(socket: Socket): void {
    const shard = this.#closing ? undefined : this.#pick();
    if (!shard) {
      // Closing, or no interpreter can serve: a last word if the module has one.
      if (this.#failedBytes && !this.#closing) socket.end(this.#failedBytes);
      else socket.destroy();
      return;
    }
    this.#stats.accepted++;
    socket.setNoDelay(true);
    // Replies to requests that came before the peer's FIN still go out: the
    // connection is closed by the protocol's end(), not by the FIN itself.
    socket.allowHalfOpen = true;
    const conn = new Conn(this.#nextConn, socket, shard, this.#outputWindow);
    this.#nextConn = this.#nextConn >= 0xffffffff ? 1 : this.#nextConn + 1;
    this.#conns.set(conn.id, conn);
    shard.conns.add(conn);
    const address = (socket.remoteAddress ?? "").slice(0, 255);
    const w = shard.writer;
    w.ensure(8 + address.length);
    w.u8(IN_OPEN);
    w.u32(conn.id);
    w.u16(socket.remotePort ?? 0);
    w.u8(address.length);
    for (let i = 0; i < address.length; i++) w.u8(address.charCodeAt(i) & 0xff);
    w.frames++;
    this.#markDirty(shard);
    if (shard.full && !this.#reject) this.#pause(conn, PAUSE_FULL);
    socket.on("data", (chunk: Buffer) => this.#onData(conn, chunk));
    socket.on("end", () => this.#onEnd(conn));
    socket.on("drain", () => this.#onDrain(conn));
    socket.on("close", () => this.#onClose(conn));
    socket.on("error", () => {
      // 'close' follows and does the cleanup
    });
  }

  #onData(conn: Conn, chunk: Buffer): void {
    const n = chunk.length;
    this.#stats.bytesIn += n;
    if (conn.finished || conn.rejected || n === 0) return;
    const shard = conn.shard;
    if (this.#reject && shard.full) {
      this.#rejectConn(conn);
      return;
    }
    const w = shard.writer;
    w.ensure(DATA_HEADER + n);
    w.u8(IN_DATA);
    w.u32(conn.id);
    w.u32(n);
    w.bytes(chunk);
    w.frames++;
    conn.bytesInFlight += n;
    conn.reads.push(n);
    shard.chunks++;
    shard.bytes += n;
    const stats = this.#stats;
    if (shard.chunks > stats.peakChunks) stats.peakChunks = shard.chunks;
    if (shard.bytes > stats.peakBytes) stats.peakBytes = shard.bytes;
    if (conn.bytesInFlight > stats.peakConnBytes) stats.peakConnBytes = conn.bytesInFlight;
    if (conn.bytesInFlight >= this.#window) this.#pause(conn, PAUSE_WINDOW);
    if (shard.chunks >= this.#capacity) this.#setFull(shard);
    if (w.length >= FLUSH_BYTES) this.#flush(shard);
    else this.#markDirty(shard);
  }

  #onEnd(conn: Conn): void {
    if (conn.finished || conn.forgotten) return;
    if (conn.rejected) return; // closed once its replies are out
    conn.shard.writer.control(IN_END, conn.id);
    this.#markDirty(conn.shard);
  }

  #onDrain(conn: Conn): void {
    if (conn.finished) return;
    this.#unpause(conn, PAUSE_OUTPUT);
    this.#returnOutputCredit(conn, true);
  }

  #onClose(conn: Conn): void {
    this.#conns.delete(conn.id);
    const shard = conn.shard;
    if (!shard.conns.delete(conn)) return; // its interpreter's incarnation is over
    conn.finished = true;
    if (!conn.forgotten) {
      conn.forgotten = true;
      shard.writer.control(IN_GONE, conn.id);
      this.#markDirty(shard);
    }
    // Whatever it had in flight will never be handed over: its credit returns.
    shard.chunks -= conn.reads.length - conn.head;
    shard.bytes -= conn.bytesInFlight;
    conn.bytesInFlight = 0;
    conn.head = conn.reads.length;
    this.#maybeNotFull(shard);
  }

  #pause(conn: Conn, why: number): void {
    if (conn.pause === 0) conn.socket.pause();
    conn.pause |= why;
  }

  #unpause(conn: Conn, why: number): void {
    if ((conn.pause & why) === 0) return;
    conn.pause &= ~why;
    if (conn.pause === 0) conn.socket.resume();
  }

  #setFull(shard: Shard): void {
    if (shard.full) return;
    shard.full = true;
    if (!this.#reject) for (const conn of shard.conns) this.#pause(conn, PAUSE_FULL);
  }

  /** Full until half of `capacity` is handed over and no batch waits for room. */
  #maybeNotFull(shard: Shard): void {
    if (!shard.full || shard.chunks > this.#capacity / 2 || shard.waiting.length > 0) return;
    shard.full = false;
    if (!this.#reject) for (const conn of shard.conns) this.#unpause(conn, PAUSE_FULL);
  }

  /** With overload "reject": this connection's new data is refused; overloaded() follows its earlier replies. */
  #rejectConn(conn: Conn): void {
    conn.rejected = true;
    this.#stats.rejected++;
    this.#pause(conn, PAUSE_DONE);
    this.#maybeFinishRejected(conn);
  }

  #maybeFinishRejected(conn: Conn): void {
    if (!conn.rejected || conn.finished || conn.bytesInFlight > 0 || conn.busy) return;
    if (!conn.forgotten) {
      conn.forgotten = true;
      conn.shard.writer.control(IN_GONE, conn.id);
      this.#markDirty(conn.shard);
    }
    this.#finish(conn, this.#overloadedBytes);
  }

  /** Ends the socket after `last` (and whatever is queued); destroys it if it lingers. */
  #finish(conn: Conn, last: Uint8Array | undefined): void {
    if (conn.finished) return;
    conn.finished = true;
    this.#pause(conn, PAUSE_DONE);
    const socket = conn.socket;
    if (socket.destroyed) return;
    if (conn.corked) {
      conn.corked = false;
      socket.uncork();
    }
    if (last) socket.end(last);
    else socket.end();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
  }

  // ------------------------------------------------------------ the wire

  #markDirty(shard: Shard): void {
    if (shard.writer.length === 0) return;
    this.#dirty.push(shard);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      const dirty = this.#dirty;
      this.#dirty = [];
      for (const s of dirty) this.#flush(s);
    });
  }

  /** Sends what `shard.writer` holds: at once if there is room, else behind the batches waiting. */
  #flush(shard: Shard): void {
    const w = shard.writer;
    if (w.length === 0) return;
    const inTx = shard.inTx;
    if (!inTx) {
      w.reset();
      return;
    }
    try {
      if (shard.waiting.length === 0 && inTx.trySend(w.view())) {
        w.reset();
        return;
      }
    } catch (err) {
      // Its interpreter is gone; its incarnation's end closes its connections.
      if (!(err instanceof ChannelClosedError)) throw err;
      w.reset();
      return;
    }
    shard.waiting.push(w.copy());
    w.reset();
    this.#setFull(shard);
    if (!shard.sending) void this.#sendWaiting(shard, inTx);
  }

  async #sendWaiting(shard: Shard, inTx: SendChannel<Uint8Array>): Promise<void> {
    shard.sending = true;
    try {
      while (shard.waiting.length > 0 && shard.inTx === inTx) {
        await inTx.send(shard.waiting[0]!);
        shard.waiting.shift();
      }
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) this.#stats.lastError = (err as Error)?.message ?? String(err);
    } finally {
      shard.sending = false;
      if (shard.inTx === inTx) this.#maybeNotFull(shard);
    }
  }

  #handleOut(shard: Shard, batch: Uint8Array, onReady: (id: number) => void): void {
    const touched: Conn[] = [];
    let at = 0;
    const end = batch.length;
    while (at < end) {
      const type = batch[at]!;
      const id = readU32(batch, at + 1);
      at += 5;
      switch (type & TYPE_MASK) {
        case OUT_REPLY: {
          const consumed = readU32(batch, at);
          const n = readU32(batch, at + 4);
          at += 8;
          const conn = this.#conns.get(id);
          if (conn === undefined || conn.shard !== shard) {
            at += n;
            break;
          }
          if (consumed > 0) this.#consumed(conn, consumed);
          conn.busy = (type & BUSY_FLAG) !== 0;
          if (n > 0) {
            if (!conn.finished) {
              const socket = conn.socket;
              if (!conn.corked) {
                conn.corked = true;
                socket.cork();
                touched.push(conn);
              }
              socket.write(batch.subarray(at, at + n));
              conn.outReceived += n;
            }
            this.#stats.bytesOut += n;
            at += n;
          }
          if ((type & CLOSE_FLAG) !== 0) {
            conn.forgotten = true;
            this.#finish(conn, undefined);
          } else if (conn.rejected) this.#maybeFinishRejected(conn);
          break;
        }
        case OUT_FAILED: {
          const n = readU16(batch, at);
          this.#stats.failed++;
          this.#stats.lastError = new TextDecoder().decode(batch.subarray(at + 2, at + 2 + n));
          at += 2 + n;
          break;
        }
        case OUT_READY:
          onReady(id);
          break;
        default:
          throw new Error(`offload: unknown frame type ${type} from interpreter ${shard.index}`);
      }
    }
    for (const conn of touched) {
      if (!conn.corked) continue;
      conn.corked = false;
      conn.socket.uncork();
      this.#returnOutputCredit(conn, false);
    }
  }

  /** `n` more input bytes of `conn` were handed to the protocol: their credit returns. */
  #consumed(conn: Conn, n: number): void {
    const shard = conn.shard;
    conn.bytesInFlight -= n;
    shard.bytes -= n;
    const reads = conn.reads;
    while (n > 0 && conn.head < reads.length) {
      const left = reads[conn.head]! - conn.headUsed;
      if (n >= left) {
        n -= left;
        conn.head++;
        conn.headUsed = 0;
        shard.chunks--;
      } else {
        conn.headUsed += n;
        n = 0;
      }
    }
    if (conn.head > 64 && conn.head * 2 > reads.length) {
      reads.splice(0, conn.head);
      conn.head = 0;
    }
    if (conn.bytesInFlight <= this.#window / 2) this.#unpause(conn, PAUSE_WINDOW);
    this.#maybeNotFull(shard);
  }

  /** Tells the interpreter how many reply bytes of `conn` have left for the kernel (in steps; all of them on 'drain'). */
  #returnOutputCredit(conn: Conn, drained: boolean): void {
    if (conn.forgotten) return;
    const buffered = conn.socket.writableLength;
    if (buffered > this.#stats.peakWriteBuffered) this.#stats.peakWriteBuffered = buffered;
    if (buffered > this.#outputWindow) this.#pause(conn, PAUSE_OUTPUT);
    const written = conn.outReceived - buffered;
    const delta = written - conn.outAcked;
    if (delta <= 0 || (!drained && delta < conn.ackStep)) return;
    conn.outAcked = written;
    const w = conn.shard.writer;
    w.ensure(9);
    w.u8(IN_WRITTEN);
    w.u32(conn.id);
    w.u32(delta);
    w.frames++;
    this.#markDirty(conn.shard);
  }

  // ------------------------------------------------------------ the rest

  stats(): OffloadStats {
    const paused = { window: 0, output: 0, full: 0 };
    for (const conn of this.#conns.values()) {
      if (conn.pause & PAUSE_WINDOW) paused.window++;
      if (conn.pause & PAUSE_OUTPUT) paused.output++;
      if (conn.pause & PAUSE_FULL) paused.full++;
    }
    const s = this.#stats;
    return {
      connections: this.#conns.size,
      accepted: s.accepted,
      rejected: s.rejected,
      failed: s.failed,
      lost: s.lost,
      paused,
      bytesIn: s.bytesIn,
      bytesOut: s.bytesOut,
      peak: { chunksInFlight: s.peakChunks, bytesInFlight: s.peakBytes, connectionBytesInFlight: s.peakConnBytes, writeBuffered: s.peakWriteBuffered },
      lastError: s.lastError,
      interpreters: this.#shards.map((shard) => ({
        index: shard.index,
        id: shard.id,
        alive: shard.alive,
        connections: shard.conns.size,
        chunksInFlight: shard.chunks,
        bytesInFlight: shard.bytes,
        batchesWaiting: shard.waiting.length,
        full: shard.full,
        restarts: shard.restarts,
      })),
    };
  }

  close(options?: { timeout?: number }): Promise<void> {
    this.#closed ??= this.#close(options?.timeout ?? 5000);
    return this.#closed;
  }

  async #close(timeout: number): Promise<void> {
    this.#closing = true;
    this.#closeTimeout = timeout;
    this.#server.off("connection", this.#onConnection);
    for (const conn of this.#conns.values()) this.#pause(conn, PAUSE_DONE);
    let late = false;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<"late">((resolve) => {
      timer = setTimeout(() => {
        late = true;
        resolve("late");
      }, timeout);
    });
    // Each interpreter gets what was read, finishes it, sends its last
    // replies (written as they come) and closes its outbound channel.
    const finishing = this.#shards.map(async (shard) => {
      this.#flush(shard);
      while (shard.sending && !late) await new Promise((resolve) => setImmediate(resolve));
      try {
        shard.inTx?.close();
      } catch {
        // already closed
      }
      await shard.done;
    });
    const outcome = await Promise.race([Promise.all(finishing), deadline]);
    for (const conn of [...this.#conns.values()]) {
      if (outcome === "late") conn.socket.destroy();
      else this.#finish(conn, undefined);
    }
    // Interpreters that did not finish in time are terminated (which ends
    // their incarnations: #endInterpreter runs on each); pool tasks are
    // aborted (the pool ends the threads of running ones, takes queued ones
    // out of its queue, and releases their ends).
    if (outcome === "late") {
      this.#abort.abort(new InterpretersError(`offload "${this.#name}": close() timed out after ${timeout} ms; its tasks were aborted`));
      await Promise.all(this.#shards.map((shard) => shard.interpreter?.terminate().catch(() => {})));
    }
    clearTimeout(timer);
    await Promise.all(this.#shards.map((shard) => shard.over));
    if (this.#bind) closeEnds(this.#bind);
  }
}
