/**
 * The wire between offload()'s main thread and its protocol interpreters.
 *
 * Each direction is one bounded channel per interpreter carrying batches: a
 * batch is one top-level Uint8Array (the codec's raw fast path: no object
 * encoding) holding frames back to back. Batching amortises the cost of a
 * channel message and of a wake-up over every socket that had something to
 * say in one turn of the main thread's event loop.
 *
 * Every integer is little-endian. `conn` is the connection's id (u32).
 *
 * Main thread -> interpreter ("in" frames):
 *
 * | type | layout after the type byte | meaning |
 * |---|---|---|
 * | OPEN 1 | conn u32, remotePort u16, address length u8, address (latin1) | a new connection: call the protocol's `connect(info)` |
 * | DATA 2 | conn u32, length u32, bytes | bytes read from the socket, in order |
 * | END 3 | conn u32 | the peer finished sending (FIN): call `end?()`, then close |
 * | GONE 4 | conn u32 | the socket is gone (reset, error, closed): forget the connection, reply nothing |
 * | WRITTEN 5 | conn u32, bytes u32 | that many reply bytes left the main thread for the kernel: output credit back |
 *
 * Interpreter -> main thread ("out" frames):
 *
 * | type | layout after the type byte | meaning |
 * |---|---|---|
 * | REPLY 2 (+ CLOSE_FLAG 0x80, BUSY_FLAG 0x40) | conn u32, consumed u32, length u32, bytes | reply bytes to write, in order; `consumed` input bytes of this connection were handed to the protocol (input credit back); CLOSE: end the socket after writing; BUSY: a receive() is pending, its reply follows |
 * | FAILED 3 | conn u32, length u16, message (UTF-8) | the connection's handler threw (its failed() reply and close came just before) |
 * | READY 4 | conn u32: the interpreter's id | the module is loaded and its start() done: the interpreter serves |
 *
 * Credits are deltas, so counters never wrap within a frame's u32 as long as
 * one delta stays under 4 GiB (it is at most a window).
 */

export const IN_OPEN = 1;
export const IN_DATA = 2;
export const IN_END = 3;
export const IN_GONE = 4;
export const IN_WRITTEN = 5;

export const OUT_REPLY = 2;
export const OUT_FAILED = 3;
export const OUT_READY = 4;
/** On a REPLY frame: end the socket after writing. */
export const CLOSE_FLAG = 0x80;
/** On a REPLY frame: a receive() of this connection is still pending (its reply follows). */
export const BUSY_FLAG = 0x40;
/** The frame type without its flags. */
export const TYPE_MASK = 0x3f;

/** Bytes of a REPLY frame before its payload: type, conn, consumed, length. */
export const REPLY_HEADER = 13;
/** Bytes of a DATA frame before its payload: type, conn, length. */
export const DATA_HEADER = 9;

/**
 * An append-only byte buffer that frames are written into. `take()` hands
 * out the bytes written so far as a view of the buffer, valid until the
 * next write (a channel's trySend copies them synchronously, so the buffer
 * can be reused right after).
 */
export class FrameWriter {
  buf: Uint8Array;
  length = 0;
  /** Frames written since the last reset. */
  frames = 0;

  constructor(initialBytes = 16 * 1024) {
    this.buf = new Uint8Array(initialBytes);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): void {
    const need = this.length + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  u8(v: number): void {
    this.buf[this.length++] = v;
  }

  u16(v: number): void {
    const b = this.buf;
    let at = this.length;
    b[at++] = v & 0xff;
    b[at++] = (v >>> 8) & 0xff;
    this.length = at;
  }

  u32(v: number): void {
    const b = this.buf;
    let at = this.length;
    b[at++] = v & 0xff;
    b[at++] = (v >>> 8) & 0xff;
    b[at++] = (v >>> 16) & 0xff;
    b[at++] = (v >>> 24) & 0xff;
    this.length = at;
  }

  bytes(bytes: Uint8Array): void {
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** A control frame: type and conn only (END, GONE). */
  control(type: number, conn: number): void {
    this.ensure(5);
    this.u8(type);
    this.u32(conn);
    this.frames++;
  }

  /** The bytes written so far (a view: valid until the next write or reset). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  /** A copy of the bytes written so far. */
  copy(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  reset(): void {
    this.length = 0;
    this.frames = 0;
  }
}

export function readU16(b: Uint8Array, at: number): number {
  return b[at]! | (b[at + 1]! << 8);
}

export function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}
