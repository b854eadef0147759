/**
 * One shard's keyspace (strings with optional expiry) and the data
 * commands that run on it, with Redis 7.0's replies, written as RESP bytes
 * into a ReplyWriter. Keys are binary-safe (held as latin1 strings, one
 * character per byte); values are bytes.
 */
import { latin1, type RespCommand } from "./resp-parser.js";

const OK = Buffer.from("+OK\r\n", "latin1");

/** Appends RESP replies to a growable buffer. */
export class ReplyWriter {
  buf = new Uint8Array(16 * 1024);
  length = 0;

  ensure(n: number): void {
    const need = this.length + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  raw(bytes: Uint8Array): void {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** ASCII text (no byte above 0x7f). */
  ascii(text: string): void {
    const n = text.length;
    this.ensure(n);
    const buf = this.buf;
    let at = this.length;
    for (let i = 0; i < n; i++) buf[at++] = text.charCodeAt(i);
    this.length = at;
  }

  simple(text: string): void {
    if (text === "OK") return this.raw(OK);
    this.ascii(`+${text}\r\n`);
  }

  error(text: string): void {
    // Redis replaces newlines in error messages with spaces.
    this.ensure(text.length * 1 + 3);
    this.ascii("-");
    const start = this.length;
    this.raw(Buffer.from(text, "latin1"));
    for (let i = start; i < this.length; i++) if (this.buf[i] === 0x0d || this.buf[i] === 0x0a) this.buf[i] = 0x20;
    this.ascii("\r\n");
  }

  integer(n: number | bigint): void {
    this.ascii(`:${n}\r\n`);
  }

  /** `<prefix><n>\r\n` for a non-negative integer n, without making a string. */
  #header(prefix: number, n: number): void {
    this.ensure(14);
    const buf = this.buf;
    let at = this.length;
    buf[at++] = prefix;
    if (n === 0) buf[at++] = 0x30;
    else {
      let digits = 0;
      for (let m = n; m > 0; m = Math.floor(m / 10)) digits++;
      for (let k = digits - 1, m = n; k >= 0; k--, m = Math.floor(m / 10)) buf[at + k] = 0x30 + (m % 10);
      at += digits;
    }
    buf[at++] = 0x0d;
    buf[at++] = 0x0a;
    this.length = at;
  }

  bulk(bytes: Uint8Array | null | undefined): void {
    if (bytes === null || bytes === undefined) {
      this.ascii("$-1\r\n");
      return;
    }
    const n = bytes.length;
    this.#header(0x24, n);
    this.ensure(n + 2);
    const buf = this.buf;
    if (n < 64) for (let i = 0; i < n; i++) buf[this.length + i] = bytes[i]!;
    else buf.set(bytes, this.length);
    buf[this.length + n] = 0x0d;
    buf[this.length + n + 1] = 0x0a;
    this.length += n + 2;
  }

  bulkText(text: string): void {
    this.bulk(Buffer.from(text, "latin1"));
  }

  arrayHeader(n: number): void {
    this.#header(0x2a, n);
  }

  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }

  take(): Uint8Array {
    const copy = this.buf.slice(0, this.length);
    this.length = 0;
    return copy;
  }
}

interface Entry {
  value: Uint8Array;
  /** Date.now() after which the key is gone; 0: never. */
  expiresAt: number;
}

/** Redis's string2ll: -?[1-9][0-9]*|0 within a signed 64-bit integer. */
export function parseInteger(bytes: Uint8Array): bigint | undefined {
  const n = bytes.length;
  if (n === 0 || n > 20) return undefined;
  let i = 0;
  if (bytes[0] === 0x2d) {
    if (n === 1) return undefined;
    i = 1;
  }
  if (bytes[i] === 0x30) return n === 1 ? 0n : undefined;
  for (let k = i; k < n; k++) if (bytes[k]! < 0x30 || bytes[k]! > 0x39) return undefined;
  const value = BigInt(latin1(bytes));
  return value > MAX_INT64 || value < MIN_INT64 ? undefined : value;
}

export const MAX_INT64 = 9223372036854775807n;
export const MIN_INT64 = -9223372036854775808n;

function ascii(text: string): Uint8Array {
  return Buffer.from(text, "latin1");
}

const NOT_INTEGER = "ERR value is not an integer or out of range";

export class Keyspace {
  readonly #data = new Map<string, Entry>();
  /** Keys with an expiry, swept now and then (and checked on every access). */
  readonly #expiring = new Set<string>();
  #sweep: Iterator<string> | undefined;

  constructor() {
    setInterval(() => this.#activeExpire(), 100).unref();
  }

  #live(key: string): Entry | undefined {
    const entry = this.#data.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt !== 0 && entry.expiresAt <= Date.now()) {
      this.#data.delete(key);
      this.#expiring.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Removes up to 200 expired keys per run (Redis's active expiry, simplified). */
  #activeExpire(): void {
    if (this.#expiring.size === 0) return;
    const now = Date.now();
    this.#sweep ??= this.#expiring.values();
    for (let k = 0; k < 200; k++) {
      const next = this.#sweep.next();
      if (next.done) {
        this.#sweep = undefined;
        return;
      }
      const entry = this.#data.get(next.value);
      if (!entry || (entry.expiresAt !== 0 && entry.expiresAt <= now)) {
        this.#data.delete(next.value);
        this.#expiring.delete(next.value);
      }
    }
  }

  get size(): number {
    return this.#data.size;
  }

  get(key: string): Uint8Array | undefined {
    return this.#live(key)?.value;
  }

  /** Sets `key`; expiresAt 0 = no expiry, -1 = keep the current one. */
  set(key: string, value: Uint8Array, expiresAt: number): void {
    if (expiresAt === -1) expiresAt = this.#live(key)?.expiresAt ?? 0;
    this.#data.set(key, { value, expiresAt });
    if (expiresAt !== 0) this.#expiring.add(key);
    else this.#expiring.delete(key);
  }

  delete(key: string): boolean {
    const existed = this.#live(key) !== undefined;
    if (existed) {
      this.#data.delete(key);
      this.#expiring.delete(key);
    }
    return existed;
  }

  exists(key: string): boolean {
    return this.#live(key) !== undefined;
  }

  clear(): void {
    this.#data.clear();
    this.#expiring.clear();
    this.#sweep = undefined;
  }

  // ------------------------------------------------------------ commands

  /**
   * Runs a data command on this shard (every key of it belongs here) and
   * writes its reply. `name` is the command in lowercase; arity has been
   * checked by the caller.
   */
  execute(name: string, command: RespCommand, out: ReplyWriter): void {
    const argc = command.count;
    switch (name) {
      case "get":
        out.bulk(this.get(command.text(1)));
        return;
      case "set":
        this.#setCommand(command, out);
        return;
      case "del": {
        let n = 0;
        for (let i = 1; i < argc; i++) if (this.delete(command.text(i))) n++;
        out.integer(n);
        return;
      }
      case "exists": {
        let n = 0;
        for (let i = 1; i < argc; i++) if (this.exists(command.text(i))) n++;
        out.integer(n);
        return;
      }
      case "incr":
        this.#incrBy(command.text(1), 1n, out);
        return;
      case "decr":
        this.#incrBy(command.text(1), -1n, out);
        return;
      case "incrby":
      case "decrby": {
        const by = parseInteger(command.arg(2));
        if (by === undefined) return out.error(NOT_INTEGER);
        if (name === "decrby" && by === MIN_INT64) return out.error("ERR decrement would overflow");
        this.#incrBy(command.text(1), name === "decrby" ? -by : by, out);
        return;
      }
      case "mget":
        out.arrayHeader(argc - 1);
        for (let i = 1; i < argc; i++) out.bulk(this.get(command.text(i)));
        return;
      case "mset":
        for (let i = 1; i + 1 < argc; i += 2) this.set(command.text(i), command.copy(i + 1), 0);
        out.simple("OK");
        return;
      case "dbsize":
        out.integer(this.size);
        return;
      case "flushall":
      case "flushdb":
        this.clear();
        out.simple("OK");
        return;
      default:
        out.error(`ERR unknown shard command '${name}'`);
    }
  }

  #incrBy(key: string, by: bigint, out: ReplyWriter): void {
    const entry = this.#live(key);
    let current = 0n;
    if (entry) {
      const parsed = parseInteger(entry.value);
      if (parsed === undefined) return out.error(NOT_INTEGER);
      current = parsed;
    }
    const next = current + by;
    if (next > MAX_INT64 || next < MIN_INT64) return out.error("ERR increment or decrement would overflow");
    this.set(key, ascii(String(next)), entry ? entry.expiresAt : 0);
    out.integer(next);
  }

  /** SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL], as Redis 7.0 parses it. */
  #setCommand(command: RespCommand, out: ReplyWriter): void {
    let nx = false;
    let xx = false;
    let get = false;
    let keepTtl = false;
    let unit: "" | "ex" | "px" | "exat" | "pxat" = "";
    let amount: Uint8Array | undefined;
    const argc = command.count;
    for (let i = 3; i < argc; i++) {
      const option = command.text(i).toLowerCase();
      const hasNext = i + 1 < argc;
      if (option === "nx" && !xx) nx = true;
      else if (option === "xx" && !nx) xx = true;
      else if (option === "get") get = true;
      else if (option === "keepttl" && unit === "") keepTtl = true;
      // As Redis: the same expiry option may repeat (the last wins), two different ones may not.
      else if ((option === "ex" || option === "px" || option === "exat" || option === "pxat") && (unit === "" || unit === option) && !keepTtl && hasNext) {
        unit = option;
        amount = command.arg(++i);
      } else return out.error("ERR syntax error");
    }
    let expiresAt = keepTtl ? -1 : 0;
    if (unit !== "") {
      const value = parseInteger(amount!);
      if (value === undefined) return out.error(NOT_INTEGER);
      const seconds = unit === "ex" || unit === "exat";
      if (value <= 0n || (seconds && value > MAX_INT64 / 1000n)) return out.error("ERR invalid expire time in 'set' command");
      let at = seconds ? value * 1000n : value;
      if (unit === "ex" || unit === "px") at += BigInt(Date.now());
      if (at > MAX_INT64) return out.error("ERR invalid expire time in 'set' command");
      expiresAt = Number(at);
    }
    const key = command.text(1);
    const old = this.#live(key);
    if ((nx && old !== undefined) || (xx && old === undefined)) {
      if (get) out.bulk(old?.value);
      else out.bulk(null);
      return;
    }
    this.set(key, command.copy(2), expiresAt);
    if (get) out.bulk(old?.value);
    else out.simple("OK");
  }
}
