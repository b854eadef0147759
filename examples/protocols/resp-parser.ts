/**
 * A sans-IO RESP2 parser (the Redis protocol), strict: bytes in (any
 * fragmentation), commands or values out.
 *
 * - `readCommand()` is the server's side: a command is either a multibulk
 *   array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or an inline
 *   command (`PING\r\n`, split on spaces with Redis's quoting rules), as
 *   redis-server reads them, with its limits (multibulk of at most 1048576
 *   elements, bulk strings of at most 512 MiB, inline commands of at most
 *   64 KiB). Errors carry the message Redis answers them with.
 * - `readValue()` reads any RESP2 value (simple string, error, integer,
 *   bulk string, array, nested, nulls): a client's side, and what
 *   test/resp-parser.test.ts compares with the npm package redis-parser.
 *
 * Stricter than Redis and redis-parser where they skip bytes unchecked:
 * every line must end in CR LF, a bulk string's data must be followed by
 * CR LF, integers and lengths are `-?[1-9][0-9]*|0` within 64 bits (Redis's
 * string2ll), and the only negative length is -1 (null).
 *
 * Memory: unconsumed input is kept (a growable buffer, compacted as it is
 * consumed); nothing else is retained between calls.
 */
import { Buffer } from "node:buffer";

export const NEED_MORE: unique symbol = Symbol("need more bytes");

/** A protocol error: the message is what Redis would say ("Protocol error: ..."); the connection should be closed after it. */
export class RespError extends Error {
  override name = "RespError";
}

/** A RESP2 value as `readValue` returns it. */
export type RespValue =
  | { type: "simple"; value: Uint8Array }
  | { type: "error"; value: Uint8Array }
  | { type: "integer"; value: string }
  | { type: "bulk"; value: Uint8Array | null }
  | { type: "array"; value: RespValue[] | null };

/**
 * A command as `readCommand` returns it: where its arguments are in the
 * parser's buffer. The parser reuses one object: it is valid until the
 * next `readCommand` or `push` (copy what must outlive that). Reading an
 * argument as text or bytes allocates only what is asked for; a hot
 * command (GET key) costs its key's string and nothing else.
 */
export class RespCommand {
  buf: Uint8Array = new Uint8Array(0);
  /** How many arguments (the command's name included). */
  count = 0;
  starts = new Int32Array(8);
  ends = new Int32Array(8);
  /** The command's bytes as received: buf[begin, end) (multibulk only). */
  begin = 0;
  end = 0;
  /** Read from an inline line (then its bytes are not RESP: `bytes` re-encodes). */
  inline = false;
  #args: Uint8Array[] | undefined;

  /** @internal Makes room for `n` arguments. */
  reset(buf: Uint8Array, n: number): void {
    this.buf = buf;
    this.count = n;
    this.#args = undefined;
    if (this.starts.length < n) {
      let size = this.starts.length;
      while (size < n) size *= 2;
      this.starts = new Int32Array(size);
      this.ends = new Int32Array(size);
    }
  }

  /** Argument i's bytes (a view: valid as long as the command). */
  arg(i: number): Uint8Array {
    return this.buf.subarray(this.starts[i], this.ends[i]);
  }

  /** Argument i's bytes, copied. */
  copy(i: number): Uint8Array {
    return this.buf.slice(this.starts[i], this.ends[i]);
  }

  /** Argument i as a latin1 string (binary-safe: one character per byte). */
  text(i: number): string {
    return latin1(this.buf, this.starts[i]!, this.ends[i]!);
  }

  /** Every argument (views). */
  get args(): Uint8Array[] {
    if (this.#args === undefined) {
      this.#args = new Array(this.count);
      for (let i = 0; i < this.count; i++) this.#args[i] = this.arg(i);
    }
    return this.#args;
  }

  /** The command as RESP bytes: as received for multibulk, re-encoded for inline. */
  get bytes(): Uint8Array {
    if (!this.inline) return this.buf.subarray(this.begin, this.end);
    const parts: Uint8Array[] = [Buffer.from(`*${this.count}\r\n`, "latin1")];
    for (let i = 0; i < this.count; i++) parts.push(Buffer.from(`$${this.ends[i]! - this.starts[i]!}\r\n`, "latin1"), this.arg(i), Buffer.from("\r\n", "latin1"));
    return Buffer.concat(parts);
  }
}

const CR = 0x0d;
const LF = 0x0a;
const MAX_MULTIBULK = 1024 * 1024;
const MAX_BULK = 512 * 1024 * 1024;
const MAX_INLINE = 64 * 1024;
const MAX_DEPTH = 1000;

export class RespParser {
  #buf: Uint8Array = new Uint8Array(0);
  readonly #command = new RespCommand();
  #start = 0;
  #end = 0;

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Appends the connection's next bytes. Views returned earlier become invalid. */
  push(bytes: Uint8Array): void {
    const n = bytes.length;
    if (n === 0) return;
    if (this.#start === this.#end && this.#buf.length >= n) {
      this.#start = 0;
      this.#end = 0;
    }
    if (this.#end + n > this.#buf.length) {
      const live = this.#end - this.#start;
      if (live + n <= this.#buf.length && this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        let size = Math.max(4096, this.#buf.length);
        while (size < live + n) size *= 2;
        const next = new Uint8Array(size);
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = live;
    }
    this.#buf.set(bytes, this.#end);
    this.#end += n;
  }

  // ------------------------------------------------------------ primitives

  /** Index of the CR of the CR LF ending the line that starts at `from`, or -1 if it is not all here. Throws on a lone CR or LF. */
  #lineEnd(from: number, what: string): number {
    const buf = this.#buf;
    const end = this.#end;
    for (let i = from; i < end; i++) {
      const c = buf[i]!;
      if (c === CR) {
        if (i + 1 >= end) return -1;
        if (buf[i + 1] !== LF) throw new RespError(`Protocol error: expected '\\n' after '\\r' in ${what}`);
        return i;
      }
      if (c === LF) throw new RespError(`Protocol error: '\\n' without '\\r' in ${what}`);
    }
    return -1;
  }

  /** The integer in buf[from, to), or undefined if it is not `-?[1-9][0-9]*|0` within 64 bits. */
  #integer(from: number, to: number): number | undefined {
    const buf = this.#buf;
    let i = from;
    let negative = false;
    if (i < to && buf[i] === 0x2d) {
      negative = true;
      i++;
    }
    if (i >= to) return undefined;
    if (buf[i] === 0x30) return i + 1 === to && !negative ? 0 : undefined;
    if (to - i > 19) return undefined;
    let value = 0;
    for (; i < to; i++) {
      const d = buf[i]! - 0x30;
      if (d < 0 || d > 9) return undefined;
      value = value * 10 + d;
    }
    if (to - from >= 19) {
      // Near 2^63: decide exactly.
      const big = BigInt(latin1(buf, from, to));
      if (big > 9223372036854775807n || big < -9223372036854775808n) return undefined;
    }
    return negative ? -value : value;
  }

  // ------------------------------------------------------------ commands (server side)

  /**
   * The next command, `null` for an empty one (an empty inline line, or a
   * multibulk of 0 or -1 elements: Redis answers nothing), or NEED_MORE.
   * Throws RespError for bytes Redis would refuse.
   */
  readCommand(): RespCommand | null | typeof NEED_MORE {
    if (this.#start >= this.#end) return NEED_MORE;
    return this.#buf[this.#start] === 0x2a ? this.#readMultibulk() : this.#readInline();
  }

  #readMultibulk(): RespCommand | null | typeof NEED_MORE {
    const buf = this.#buf;
    const begin = this.#start;
    const countEnd = this.#lineEnd(begin + 1, "multibulk length");
    if (countEnd < 0) {
      if (this.#end - begin > MAX_INLINE) throw new RespError("Protocol error: too big mbulk count string");
      return NEED_MORE;
    }
    const count = this.#integer(begin + 1, countEnd);
    if (count === undefined || count > MAX_MULTIBULK) throw new RespError("Protocol error: invalid multibulk length");
    let at = countEnd + 2;
    if (count <= 0) {
      this.#start = at;
      return null;
    }
    const command = this.#command;
    command.reset(buf, count);
    const starts = command.starts;
    const ends = command.ends;
    for (let k = 0; k < count; k++) {
      if (at >= this.#end) return NEED_MORE;
      if (buf[at] !== 0x24) throw new RespError(`Protocol error: expected '$', got '${String.fromCharCode(buf[at]!)}'`);
      const lengthEnd = this.#lineEnd(at + 1, "bulk length");
      if (lengthEnd < 0) {
        if (this.#end - at > MAX_INLINE) throw new RespError("Protocol error: too big bulk count string");
        return NEED_MORE;
      }
      const length = this.#integer(at + 1, lengthEnd);
      if (length === undefined || length < 0 || length > MAX_BULK) throw new RespError("Protocol error: invalid bulk length");
      const dataStart = lengthEnd + 2;
      const dataEnd = dataStart + length;
      if (dataEnd + 2 > this.#end) return NEED_MORE;
      if (buf[dataEnd] !== CR || buf[dataEnd + 1] !== LF) throw new RespError("Protocol error: expected CR LF after bulk data");
      starts[k] = dataStart;
      ends[k] = dataEnd;
      at = dataEnd + 2;
    }
    this.#start = at;
    command.begin = begin;
    command.end = at;
    command.inline = false;
    return command;
  }

  #readInline(): RespCommand | null | typeof NEED_MORE {
    const buf = this.#buf;
    const begin = this.#start;
    let newline = -1;
    for (let i = begin; i < this.#end; i++) {
      if (buf[i] === LF) {
        newline = i;
        break;
      }
    }
    if (newline < 0) {
      if (this.#end - begin > MAX_INLINE) throw new RespError("Protocol error: too big inline request");
      return NEED_MORE;
    }
    const lineEnd = newline > begin && buf[newline - 1] === CR ? newline - 1 : newline;
    this.#start = newline + 1;
    const args = splitArgs(buf.subarray(begin, lineEnd));
    if (args === undefined) throw new RespError("Protocol error: unbalanced quotes in request");
    if (args.length === 0) return null;
    // The arguments (unquoted, unescaped) laid end to end in a buffer of their own.
    const joined = new Uint8Array(args.reduce((n, a) => n + a.length, 0));
    const command = this.#command;
    command.reset(joined, args.length);
    let at = 0;
    args.forEach((arg, k) => {
      joined.set(arg, at);
      command.starts[k] = at;
      command.ends[k] = at += arg.length;
    });
    command.inline = true;
    return command;
  }

  // ------------------------------------------------------------ values (client side)

  /** The next whole RESP2 value, or NEED_MORE. Throws RespError for malformed bytes. */
  readValue(): RespValue | typeof NEED_MORE {
    const result = this.#value(this.#start, 0);
    if (result === NEED_MORE) return NEED_MORE;
    this.#start = result.next;
    return result.value;
  }

  #value(at: number, depth: number): { value: RespValue; next: number } | typeof NEED_MORE {
    if (at >= this.#end) return NEED_MORE;
    if (depth > MAX_DEPTH) throw new RespError("Protocol error: arrays nested too deep");
    const buf = this.#buf;
    const type = buf[at]!;
    // Known at once, as redis-parser does: no need to wait for the line.
    if (type !== 0x2b && type !== 0x2d && type !== 0x3a && type !== 0x24 && type !== 0x2a) {
      throw new RespError(`Protocol error: invalid type byte '${String.fromCharCode(type)}'`);
    }
    const lineEnd = this.#lineEnd(at + 1, "a line");
    if (lineEnd < 0) return NEED_MORE;
    const next = lineEnd + 2;
    switch (type) {
      case 0x2b: // +
        return { value: { type: "simple", value: buf.slice(at + 1, lineEnd) }, next };
      case 0x2d: // -
        return { value: { type: "error", value: buf.slice(at + 1, lineEnd) }, next };
      case 0x3a: {
        // :
        if (this.#integer(at + 1, lineEnd) === undefined) throw new RespError("Protocol error: invalid integer");
        return { value: { type: "integer", value: latin1(buf, at + 1, lineEnd) }, next };
      }
      case 0x24: {
        // $
        const length = this.#integer(at + 1, lineEnd);
        if (length === undefined || length < -1 || length > MAX_BULK) throw new RespError("Protocol error: invalid bulk length");
        if (length === -1) return { value: { type: "bulk", value: null }, next };
        const dataEnd = next + length;
        if (dataEnd + 2 > this.#end) return NEED_MORE;
        if (buf[dataEnd] !== CR || buf[dataEnd + 1] !== LF) throw new RespError("Protocol error: expected CR LF after bulk data");
        return { value: { type: "bulk", value: buf.slice(next, dataEnd) }, next: dataEnd + 2 };
      }
      case 0x2a: {
        // *
        const count = this.#integer(at + 1, lineEnd);
        if (count === undefined || count < -1 || count > MAX_MULTIBULK * 1024) throw new RespError("Protocol error: invalid multibulk length");
        if (count === -1) return { value: { type: "array", value: null }, next };
        const items: RespValue[] = [];
        let position = next;
        for (let k = 0; k < count; k++) {
          const item = this.#value(position, depth + 1);
          if (item === NEED_MORE) return NEED_MORE;
          items.push(item.value);
          position = item.next;
        }
        return { value: { type: "array", value: items }, next: position };
      }
      default:
        throw new RespError(`Protocol error: invalid type byte '${String.fromCharCode(type)}'`);
    }
  }
}

/**
 * Redis's sdssplitargs: arguments separated by blanks, "double quotes"
 * with \n \r \t \b \a \\ \" and \xHH escapes, 'single quotes' with \'
 * only; a closing quote must be followed by a blank or the end; a NUL byte
 * ends the line (C string). Returns undefined for unbalanced quotes.
 */
export function splitArgs(input: Uint8Array): Uint8Array[] | undefined {
  const nul = input.indexOf(0);
  const line = nul < 0 ? input : input.subarray(0, nul);
  const args: Uint8Array[] = [];
  const n = line.length;
  // isspace(): between arguments and after a closing quote.
  const isSpace = (c: number): boolean => c === 0x20 || (c >= 0x09 && c <= 0x0d);
  let i = 0;
  for (;;) {
    while (i < n && isSpace(line[i]!)) i++;
    if (i >= n) return args;
    const current: number[] = [];
    let inDouble = false;
    let inSingle = false;
    for (let done = false; !done; ) {
      const c = i < n ? line[i]! : -1;
      if (inDouble) {
        if (c === 0x5c && i + 3 < n && line[i + 1] === 0x78 && isHex(line[i + 2]!) && isHex(line[i + 3]!)) {
          current.push(hexValue(line[i + 2]!) * 16 + hexValue(line[i + 3]!));
          i += 3;
        } else if (c === 0x5c && i + 1 < n) {
          i++;
          const e = line[i]!;
          current.push(e === 0x6e ? 0x0a : e === 0x72 ? 0x0d : e === 0x74 ? 0x09 : e === 0x62 ? 0x08 : e === 0x61 ? 0x07 : e);
        } else if (c === 0x22) {
          if (i + 1 < n && !isSpace(line[i + 1]!)) return undefined;
          done = true;
        } else if (c < 0) return undefined;
        else current.push(c);
      } else if (inSingle) {
        if (c === 0x5c && i + 1 < n && line[i + 1] === 0x27) {
          i++;
          current.push(0x27);
        } else if (c === 0x27) {
          if (i + 1 < n && !isSpace(line[i + 1]!)) return undefined;
          done = true;
        } else if (c < 0) return undefined;
        else current.push(c);
      } else if (c < 0 || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) done = true;
      else if (c === 0x22) inDouble = true;
      else if (c === 0x27) inSingle = true;
      else current.push(c);
      if (i < n) i++;
    }
    args.push(Uint8Array.from(current));
  }
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

function hexValue(c: number): number {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10;
}

/**
 * Bytes [from, to) as a latin1 string (one character per byte), flat: a
 * key built char by char would be a rope, which V8 flattens again on every
 * Map lookup (that was 17% of a GET's time).
 */
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, from: number, to: number): string }).latin1Slice;
export function latin1(bytes: Uint8Array, from = 0, to = bytes.length): string {
  return latin1Slice.call(bytes, from, to);
}
