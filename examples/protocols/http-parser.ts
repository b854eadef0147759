/**
 * A sans-IO HTTP/1.x request parser: bytes in (any fragmentation), whole
 * requests out. No sockets, no timers, no Node streams: `execute(bytes)`
 * returns the events those bytes completed.
 *
 * The grammar is llhttp's (Node's own parser, as of llhttp 9.4), strict
 * mode, request side, state for state where it matters, so that this
 * parser accepts exactly what Node's would: request line (known methods, origin/absolute/
 * authority/asterisk forms with llhttp's character classes, HTTP/0.9
 * lines without a version), header fields (token names, no space before
 * the colon, no obs-fold, HTAB/SP/VCHAR/obs-text values), Content-Length
 * (digits, no duplicates, not with Transfer-Encoding), Transfer-Encoding
 * (chunked must be final; a request whose last coding is not chunked is
 * refused), chunked bodies (hex sizes, strict extensions, trailers),
 * keep-alive (HTTP/1.1 unless `close`; 1.0 only with `keep-alive`),
 * pipelining (the next request starts right after the last), CONNECT and
 * Upgrade (the request is the last one parsed). test/http-parser.test.ts
 * checks it against llhttp itself (undici's WASM build) on generated and
 * mutated requests.
 *
 * On top of the grammar, limits: a head (request line and headers) longer
 * than `maxHeadBytes` is refused with 431, a body longer than
 * `maxBodyBytes` with 413 (at once for Content-Length, as soon as the
 * chunks pass it for chunked); any grammar error is a 400. After an error
 * the parser is dead: the connection should be answered and closed.
 *
 * Memory: the head is kept (at most maxHeadBytes) until the request is
 * complete, and so is the body (at most maxBodyBytes).
 */
import { Buffer } from "node:buffer";

export interface HttpRequest {
  method: string;
  /** The request target as sent (origin form "/a?b", absolute form, authority form for CONNECT, or "*"). */
  target: string;
  /** "HTTP" (or "RTSP"/"ICE", which llhttp accepts too; a server should refuse them). */
  protocol: string;
  major: number;
  minor: number;
  /** Header fields in order: [name as sent, value without surrounding whitespace]. Trailers of a chunked body follow. */
  headers: Array<[string, string]>;
  body: Uint8Array;
  /** The connection may carry another request after this one. */
  keepAlive: boolean;
  /** CONNECT, or Upgrade with Connection: upgrade: nothing after this request is HTTP. */
  upgrade: boolean;
  chunked: boolean;
}

export type HttpEvent =
  | { kind: "request"; request: HttpRequest }
  /** Headers asked for `Expect: 100-continue` and a body is coming: say "100 Continue" now. */
  | { kind: "continue" }
  | { kind: "error"; status: 400 | 413 | 431; reason: string };

export interface HttpLimits {
  /** Request line and header fields, in bytes (default 16 KiB, as Node's). */
  maxHeadBytes?: number;
  /** Body bytes (default 1 MiB). */
  maxBodyBytes?: number;
}

// ---------------------------------------------------------------- character classes (llhttp's constants)

function table(...ranges: Array<number | [number, number] | string>): Uint8Array {
  const t = new Uint8Array(256);
  for (const r of ranges) {
    if (typeof r === "number") t[r] = 1;
    else if (typeof r === "string") for (const ch of r) t[ch.charCodeAt(0)] = 1;
    else for (let c = r[0]; c <= r[1]; c++) t[c] = 1;
  }
  return t;
}
const ALPHA = table([0x41, 0x5a], [0x61, 0x7a]);
const TOKEN = table(0x21, [0x23, 0x27], [0x2a, 0x2b], [0x2d, 0x2e], [0x30, 0x39], [0x41, 0x5a], [0x5e, 0x7a], 0x7c, 0x7e);
const URL_CHAR = table([0x21, 0x22], [0x24, 0x3e], [0x40, 0x7e]);
const USERINFO = table(0x21, [0x24, 0x2e], [0x30, 0x3b], 0x3d, [0x41, 0x5a], 0x5f, [0x61, 0x7a], 0x7e);
const HEADER_CHARS = table(0x09, [0x20, 0x7e], [0x80, 0xff]);
const CONNECTION_TOKEN = table(0x09, [0x20, 0x2b], [0x2d, 0x7e], [0x80, 0xff]);
const QDTEXT = table(0x09, [0x20, 0x21], [0x23, 0x5b], [0x5d, 0x7e], [0x80, 0xff]);
const HEX_VALUE = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX_VALUE[0x30 + c] = c;
for (let c = 0; c < 6; c++) HEX_VALUE[0x41 + c] = HEX_VALUE[0x61 + c] = 10 + c;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;

/** llhttp's METHODS (request side: HTTP, RTSP and ICE methods alike; the protocol check comes later). */
const METHODS_HTTP = [
  "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE",
  "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
  "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR",
  "LINK", "UNLINK", "SOURCE", "PRI", "QUERY",
];
const METHODS_RTSP = [
  "OPTIONS", "GET", "POST", "DESCRIBE", "ANNOUNCE", "SETUP", "PLAY", "PAUSE", "TEARDOWN", "GET_PARAMETER",
  "SET_PARAMETER", "REDIRECT", "RECORD", "FLUSH",
];
const ALL_METHODS = new Set([...METHODS_HTTP, ...METHODS_RTSP]);
const HTTP_METHODS = new Set(METHODS_HTTP);
const RTSP_METHODS = new Set(METHODS_RTSP);
/** Every prefix of a method: a method being read that is no prefix is an error at once (as llhttp's trie). */
const METHOD_PREFIXES = new Set<string>();
for (const m of ALL_METHODS) for (let i = 1; i <= m.length; i++) METHOD_PREFIXES.add(m.slice(0, i));
const MAX_METHOD = Math.max(...[...ALL_METHODS].map((m) => m.length));

// ---------------------------------------------------------------- flags and header states (llhttp's)

const F_CONNECTION_KEEP_ALIVE = 1;
const F_CONNECTION_CLOSE = 2;
const F_CONNECTION_UPGRADE = 4;
const F_CHUNKED = 8;
const F_UPGRADE = 16;
const F_CONTENT_LENGTH = 32;
const F_TRAILING = 128;
const F_TRANSFER_ENCODING = 512;

const H_GENERAL = 0;
const H_CONNECTION = 1;
const H_CONTENT_LENGTH = 2;
const H_TRANSFER_ENCODING = 3;
const H_UPGRADE = 4;
const H_CONNECTION_KEEP_ALIVE = 5;
const H_CONNECTION_CLOSE = 6;
const H_CONNECTION_UPGRADE = 7;
const H_TRANSFER_ENCODING_CHUNKED = 8;

const SPECIAL_HEADERS: Record<string, number> = {
  connection: H_CONNECTION,
  "content-length": H_CONTENT_LENGTH,
  "proxy-connection": H_CONNECTION,
  "transfer-encoding": H_TRANSFER_ENCODING,
  upgrade: H_UPGRADE,
};

// ---------------------------------------------------------------- states

const S_START = 0;
const S_METHOD = 1;
const S_SPACES_BEFORE_URL = 2;
const S_URL_START = 3;
const S_URL_SCHEMA = 4;
const S_URL_SCHEMA_DELIM = 5; // expects "//" (matchAt counts)
const S_URL_SERVER = 6;
const S_URL_SERVER_AT = 7;
const S_URL_PATH = 8;
const S_URL_QUERY = 9;
const S_URL_FRAGMENT = 10;
const S_URL_CR = 11; // "\r" ended the URL: "\n" must follow (HTTP/0.9)
const S_HTTP_START = 12;
const S_PROTOCOL = 13; // matching "HTTP" / "RTSP" / "ICE"
const S_AFTER_PROTOCOL = 14; // expects "/"
const S_MAJOR = 15;
const S_DOT = 16;
const S_MINOR = 17;
const S_LINE_CR = 18; // expects "\r"
const S_LINE_LF = 19; // expects "\n"
const S_PRI = 20; // matching the HTTP/2 preface rest
const S_HEADERS_START = 21;
const S_FIELD_START = 22;
const S_FIELD = 23;
const S_VALUE_DISCARD_WS = 24;
const S_VALUE_DISCARD_WS_LF = 25;
const S_VALUE_DISCARD_LWS = 26;
const S_VALUE = 27;
const S_VALUE_LF = 28; // after "\r" in a value
const S_VALUE_LWS = 29; // after a value's "\r\n": no obs-fold
const S_TE_CHUNKED = 30; // matching "chunked"
const S_TE_CHUNKED_LAST = 31;
const S_TE_TOKEN = 32;
const S_TE_TOKEN_OWS = 33;
const S_CL = 34;
const S_CL_WS = 35;
const S_CONN = 36;
const S_CONN_MATCH = 37; // matching close / upgrade / keep-alive
const S_CONN_WS = 38;
const S_CONN_TOKEN = 39;
const S_HEADERS_LF = 40; // after the empty line's "\r"
const S_BODY = 41; // Content-Length body
const S_CHUNK_SIZE_START = 42;
const S_CHUNK_SIZE = 43;
const S_CHUNK_EXTENSIONS = 44;
const S_CHUNK_EXT_NAME = 45;
const S_CHUNK_EXT_VALUE = 46;
const S_CHUNK_EXT_QUOTED = 47;
const S_CHUNK_EXT_QUOTED_PAIR = 48;
const S_CHUNK_EXT_QUOTED_DONE = 49;
const S_CHUNK_SIZE_LF = 50;
const S_CHUNK_DATA = 51;
const S_CHUNK_DATA_CR = 52;
const S_CHUNK_DATA_LF = 53;
const S_CLOSED = 54; // after a message without keep-alive: only CR/LF may follow
const S_UPGRADED = 55; // after CONNECT/Upgrade: the rest is not HTTP
const S_DEAD = 56; // after an error

const PRI_PREFACE = "\r\n\r\nSM\r\n\r\n";
const CONNECTION_WORDS = ["close", "upgrade", "keep-alive"];
const CONNECTION_STATES = [H_CONNECTION_CLOSE, H_CONNECTION_UPGRADE, H_CONNECTION_KEEP_ALIVE];
const TWO_64 = 2n ** 64n;

/** An error that ends parsing: its status and a reason for the log. */
class ParseError {
  constructor(
    readonly status: 400 | 413 | 431,
    readonly reason: string,
  ) {}
}

export class HttpRequestParser {
  readonly #maxHead: number;
  readonly #maxBody: number;
  #state = S_START;

  // The head of the current message, copied as it is scanned; spans are offsets in it.
  #head = new Uint8Array(512);
  #headLength = 0;
  /** Where in the current input chunk the part not yet copied to #head starts (-1: nothing to copy). */
  #copyFrom = -1;

  #method = "";
  #urlStart = 0;
  #urlEnd = 0;
  #protocol = "";
  #major = 0;
  #minor = 0;
  /** Flat [nameStart, nameEnd, valueStart, valueEnd] per header field. */
  #fields: number[] = [];
  #fieldStart = 0;
  #valueStart = 0;
  /** Offset of the last byte of the value that was not SP/HTAB, + 1. */
  #valueEnd = 0;

  #flags = 0;
  #headerState = H_GENERAL;
  #contentLength = 0;
  #bigLength: bigint | undefined;
  /** Position in a literal being matched ("HTTP", "//", "chunked", a Connection word, the PRI preface). */
  #matchAt = 0;
  #matchWord = "";
  #matchIndex = 0;
  #upgrade = false;
  #expectContinue = false;

  #body: Uint8Array[] = [];
  #bodyLength = 0;
  #remaining = 0;
  #chunkSize = 0;
  #chunkOverflow = false;
  #chunkDigits = 0;

  constructor(limits: HttpLimits = {}) {
    this.#maxHead = limits.maxHeadBytes ?? 16 * 1024;
    this.#maxBody = limits.maxBodyBytes ?? 1024 * 1024;
  }

  /** True after an error: nothing more will be parsed. */
  get dead(): boolean {
    return this.#state === S_DEAD;
  }

  /** True after a message that did not keep the connection alive, or an upgrade. */
  get closed(): boolean {
    return this.#state === S_CLOSED || this.#state === S_UPGRADED;
  }

  /**
   * Parses `bytes` (the next bytes of the connection) and returns the
   * events they complete, in order: requests, a "continue" when a request
   * expecting one has its headers, or one error (the last event: the
   * parser is dead after it). Never throws for bad input.
   */
  execute(bytes: Uint8Array): HttpEvent[] {
    const events: HttpEvent[] = [];
    try {
      this.#run(bytes, events);
    } catch (err) {
      if (!(err instanceof ParseError)) throw err;
      this.#state = S_DEAD;
      this.#copyFrom = -1;
      events.push({ kind: "error", status: err.status, reason: err.reason });
    }
    return events;
  }

  #fail(reason: string): never {
    throw new ParseError(400, reason);
  }

  /** Copies bytes[#copyFrom, end) into the head buffer. */
  #copyHead(bytes: Uint8Array, end: number): void {
    const from = this.#copyFrom;
    if (from < 0 || end <= from) return;
    const n = end - from;
    const need = this.#headLength + n;
    if (need > this.#maxHead) throw new ParseError(431, `request head over ${this.#maxHead} bytes`);
    if (need > this.#head.length) {
      let size = this.#head.length * 2;
      while (size < need) size *= 2;
      const next = new Uint8Array(Math.min(size, Math.max(need, this.#maxHead)));
      next.set(this.#head.subarray(0, this.#headLength));
      this.#head = next;
    }
    this.#head.set(bytes.subarray(from, end), this.#headLength);
    this.#headLength = need;
    this.#copyFrom = end;
  }

  #startMessage(): void {
    this.#headLength = 0;
    this.#fields.length = 0;
    this.#flags = 0;
    this.#headerState = H_GENERAL;
    this.#contentLength = 0;
    this.#bigLength = undefined;
    this.#upgrade = false;
    this.#expectContinue = false;
    this.#body = [];
    this.#bodyLength = 0;
    this.#protocol = "";
    this.#major = 0;
    this.#minor = 0;
    this.#method = "";
  }

  #run(bytes: Uint8Array, events: HttpEvent[]): void {
    const n = bytes.length;
    let i = 0;
    // The head's bytes are copied to #head in runs; `base` maps an index
    // of `bytes` to an offset in #head: offset = base + i.
    let base = 0;
    if (this.#isHeadState() || this.#inTrailers()) {
      this.#copyFrom = 0;
      base = this.#headLength;
    }
    while (i < n) {
      const c = bytes[i]!;
      switch (this.#state) {
        case S_START:
          if (c === CR || c === LF) {
            i++;
            break;
          }
          this.#startMessage();
          this.#copyFrom = i;
          base = -i;
          this.#state = S_METHOD;
          break;

        case S_METHOD: {
          if (c === SP) {
            if (!ALL_METHODS.has(this.#method)) this.#fail(`unknown method ${this.#method}`);
            this.#state = S_SPACES_BEFORE_URL;
            i++;
            break;
          }
          const prefix = this.#method + String.fromCharCode(c);
          if (prefix.length > MAX_METHOD || !METHOD_PREFIXES.has(prefix)) this.#fail("invalid method");
          this.#method = prefix;
          i++;
          break;
        }

        case S_SPACES_BEFORE_URL:
          if (c === SP) {
            i++;
            break;
          }
          this.#urlStart = base + i;
          this.#state = this.#method === "CONNECT" ? S_URL_SERVER : S_URL_START;
          break;

        case S_URL_START:
          if (c === 0x2f || c === 0x2a) this.#state = S_URL_PATH;
          else if (ALPHA[c]) this.#state = S_URL_SCHEMA;
          else this.#fail("unexpected start char in url");
          i++;
          break;

        case S_URL_SCHEMA:
          if (ALPHA[c]) i++;
          else if (c === 0x3a) {
            this.#state = S_URL_SCHEMA_DELIM;
            this.#matchAt = 0;
            i++;
          } else this.#fail("unexpected char in url schema");
          break;

        case S_URL_SCHEMA_DELIM:
          if (c !== 0x2f) this.#fail("unexpected char in url schema");
          i++;
          if (++this.#matchAt === 2) this.#state = S_URL_SERVER;
          break;

        case S_URL_SERVER:
        case S_URL_SERVER_AT:
          if (c === 0x2f) {
            this.#state = S_URL_PATH;
            i++;
          } else if (c === 0x3f) {
            this.#state = S_URL_QUERY;
            i++;
          } else if (USERINFO[c] || c === 0x5b || c === 0x5d) {
            this.#state = S_URL_SERVER;
            i++;
          } else if (c === 0x40) {
            if (this.#state === S_URL_SERVER_AT) this.#fail("double @ in url");
            this.#state = S_URL_SERVER_AT;
            i++;
          } else i = this.#urlEnded(c, bytes, i, base);
          break;

        case S_URL_PATH:
          if (URL_CHAR[c]) {
            i++;
            break;
          }
          if (c === 0x3f) {
            this.#state = S_URL_QUERY;
            i++;
          } else if (c === 0x23) {
            this.#state = S_URL_FRAGMENT;
            i++;
          } else i = this.#urlEnded(c, bytes, i, base);
          break;

        case S_URL_QUERY:
          if (URL_CHAR[c] || c === 0x3f) i++;
          else if (c === 0x23) {
            this.#state = S_URL_FRAGMENT;
            i++;
          } else i = this.#urlEnded(c, bytes, i, base);
          break;

        case S_URL_FRAGMENT:
          if (URL_CHAR[c] || c === 0x3f || c === 0x23) i++;
          else i = this.#urlEnded(c, bytes, i, base);
          break;

        case S_URL_CR:
          if (c !== LF) this.#fail("expected CRLF after url");
          i++;
          this.#http09();
          break;

        case S_HTTP_START:
          if (c === SP) {
            i++;
            break;
          }
          if (c === 0x48) this.#matchWord = "HTTP";
          else if (c === 0x52) this.#matchWord = "RTSP";
          else if (c === 0x49) this.#matchWord = "ICE";
          else this.#fail("expected HTTP/, RTSP/ or ICE/");
          this.#matchAt = 1;
          this.#state = S_PROTOCOL;
          i++;
          break;

        case S_PROTOCOL: {
          const word = this.#matchWord;
          if (c !== word.charCodeAt(this.#matchAt)) this.#fail("expected HTTP/, RTSP/ or ICE/");
          i++;
          if (++this.#matchAt === word.length) {
            const allowed = word === "HTTP" ? HTTP_METHODS.has(this.#method) : word === "RTSP" ? RTSP_METHODS.has(this.#method) : this.#method === "SOURCE";
            if (!allowed) this.#fail(`invalid method for ${word}/x.x request`);
            this.#protocol = word;
            this.#state = S_AFTER_PROTOCOL;
          }
          break;
        }

        case S_AFTER_PROTOCOL:
          if (c !== 0x2f) this.#fail("expected HTTP/, RTSP/ or ICE/");
          this.#state = S_MAJOR;
          i++;
          break;

        case S_MAJOR:
          if (c < 0x30 || c > 0x39) this.#fail("invalid major version");
          this.#major = c - 0x30;
          this.#state = S_DOT;
          i++;
          break;

        case S_DOT:
          if (c !== 0x2e) this.#fail("expected dot");
          this.#state = S_MINOR;
          i++;
          break;

        case S_MINOR: {
          if (c < 0x30 || c > 0x39) this.#fail("invalid minor version");
          const minor = c - 0x30;
          const major = this.#major;
          if (!((major === 0 && minor === 9) || (major === 1 && minor <= 1) || (major === 2 && minor === 0))) this.#fail("invalid HTTP version");
          this.#minor = minor;
          i++;
          if (this.#method === "PRI") {
            this.#state = S_PRI;
            this.#matchAt = 0;
          } else this.#state = S_LINE_CR;
          break;
        }

        case S_PRI:
          if (c !== PRI_PREFACE.charCodeAt(this.#matchAt)) this.#fail("expected HTTP/2 connection preface");
          i++;
          if (++this.#matchAt === PRI_PREFACE.length) this.#fail("HTTP/2 connection preface (h2c upgrade is not supported)");
          break;

        case S_LINE_CR:
          if (c !== CR) this.#fail("expected CRLF after version");
          this.#state = S_LINE_LF;
          i++;
          break;

        case S_LINE_LF:
          if (c !== LF) this.#fail("expected CRLF after version");
          this.#state = S_HEADERS_START;
          i++;
          break;

        case S_HEADERS_START:
          if (c === SP) this.#fail("unexpected space after start line");
          this.#state = S_FIELD_START;
          break;

        case S_FIELD_START:
          if (c === CR) {
            this.#state = S_HEADERS_LF;
            i++;
          } else if (c === LF) this.#fail("invalid header field char");
          else if (c === 0x3a) this.#fail("invalid header token");
          else if (!TOKEN[c]) this.#fail("invalid header token");
          else {
            this.#fieldStart = base + i;
            this.#state = S_FIELD;
            i++;
          }
          break;

        case S_FIELD:
          if (TOKEN[c]) {
            i++;
            break;
          }
          if (c !== 0x3a) this.#fail("invalid header token");
          this.#fieldComplete(bytes, base + i, base);
          this.#state = S_VALUE_DISCARD_WS;
          i++;
          break;

        case S_VALUE_DISCARD_WS:
          if (c === SP || c === HTAB) i++;
          else if (c === CR) {
            this.#state = S_VALUE_DISCARD_WS_LF;
            i++;
          } else if (c === LF) this.#fail("invalid header value char");
          else this.#valueStarts(base + i);
          break;

        case S_VALUE_DISCARD_WS_LF:
          if (c !== LF) this.#fail("expected LF after CR");
          this.#state = S_VALUE_DISCARD_LWS;
          i++;
          break;

        case S_VALUE_DISCARD_LWS:
          if (c === SP || c === HTAB) this.#fail("invalid header value char");
          // An empty value.
          if (this.#headerState === H_CONTENT_LENGTH) this.#fail("empty Content-Length");
          this.#valueStart = this.#valueEnd = base + i;
          this.#valueComplete();
          break;

        case S_VALUE:
          if (HEADER_CHARS[c]) {
            if (c !== SP && c !== HTAB) this.#valueEnd = base + i + 1;
            i++;
            break;
          }
          i = this.#valueOtherwise(c, i);
          break;

        case S_VALUE_LF:
          if (c !== LF) this.#fail("missing expected LF after header value");
          this.#state = S_VALUE_LWS;
          i++;
          break;

        case S_VALUE_LWS:
          if (c === SP || c === HTAB) this.#fail("unexpected whitespace after header value");
          this.#valueComplete();
          break;

        case S_TE_CHUNKED: {
          const lower = c | 0x20;
          if (lower === "chunked".charCodeAt(this.#matchAt)) {
            this.#markValue(c, base + i);
            i++;
            if (++this.#matchAt === 7) this.#state = S_TE_CHUNKED_LAST;
            break;
          }
          this.#state = S_TE_TOKEN;
          break;
        }

        case S_TE_CHUNKED_LAST:
          if (c === SP) {
            i++;
            break;
          }
          if (c === CR || c === LF) {
            this.#headerState = H_TRANSFER_ENCODING_CHUNKED;
            i = this.#valueOtherwise(c, i);
            break;
          }
          if (c === 0x2c) this.#fail("invalid Transfer-Encoding header value: chunked must be last");
          this.#state = S_TE_TOKEN;
          break;

        case S_TE_TOKEN:
          if (c === 0x2c) {
            this.#state = S_TE_TOKEN_OWS;
            this.#markValue(c, base + i);
            i++;
          } else if (CONNECTION_TOKEN[c]) {
            this.#markValue(c, base + i);
            i++;
          } else {
            this.#headerState = H_GENERAL;
            this.#state = S_VALUE;
          }
          break;

        case S_TE_TOKEN_OWS:
          if (c === SP || c === HTAB) {
            i++;
            break;
          }
          this.#state = S_TE_CHUNKED;
          this.#matchAt = 0;
          break;

        case S_CL: {
          const digit = c - 0x30;
          if (digit >= 0 && digit <= 9) {
            this.#addLengthDigit(digit);
            this.#valueEnd = base + i + 1;
            i++;
            break;
          }
          this.#state = S_CL_WS;
          break;
        }

        case S_CL_WS:
          if (c === SP || c === HTAB) {
            i++;
            break;
          }
          if (c === CR || c === LF) {
            this.#flags |= F_CONTENT_LENGTH;
            i = this.#valueOtherwise(c, i);
            break;
          }
          this.#fail("invalid character in Content-Length");
          break;

        case S_CONN: {
          if (c === SP || c === HTAB) {
            i++;
            break;
          }
          const lower = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
          const index = lower === 0x63 ? 0 : lower === 0x75 ? 1 : lower === 0x6b ? 2 : -1;
          if (index < 0) {
            this.#state = S_CONN_TOKEN;
            break;
          }
          this.#matchIndex = index;
          this.#matchAt = 1;
          this.#state = S_CONN_MATCH;
          this.#markValue(c, base + i);
          i++;
          break;
        }

        case S_CONN_MATCH: {
          const word = CONNECTION_WORDS[this.#matchIndex]!;
          const lower = c >= 0x41 && c <= 0x5a ? c | 0x20 : c;
          if (lower !== word.charCodeAt(this.#matchAt)) {
            this.#state = S_CONN_TOKEN;
            break;
          }
          this.#markValue(c, base + i);
          i++;
          if (++this.#matchAt === word.length) {
            this.#headerState = CONNECTION_STATES[this.#matchIndex]!;
            this.#state = S_CONN_WS;
          }
          break;
        }

        case S_CONN_WS:
          if (c === 0x2c) {
            this.#setHeaderFlags();
            this.#markValue(c, base + i);
            this.#state = S_CONN;
            i++;
          } else if (c === SP || c === HTAB) i++;
          else if (c === CR || c === LF) i = this.#valueOtherwise(c, i);
          else {
            this.#headerState = H_GENERAL;
            this.#state = S_CONN_TOKEN;
          }
          break;

        case S_CONN_TOKEN:
          if (c === 0x2c) {
            this.#markValue(c, base + i);
            this.#state = S_CONN;
            i++;
          } else if (CONNECTION_TOKEN[c]) {
            this.#markValue(c, base + i);
            i++;
          } else i = this.#valueOtherwise(c, i);
          break;

        case S_HEADERS_LF: {
          if (c !== LF) this.#fail("expected LF after headers");
          i++;
          this.#copyHead(bytes, i);
          this.#copyFrom = -1;
          this.#headersComplete(events);
          break;
        }

        case S_BODY: {
          const take = Math.min(this.#remaining, n - i);
          this.#body.push(bytes.slice(i, i + take));
          this.#bodyLength += take;
          this.#remaining -= take;
          i += take;
          if (this.#remaining === 0) this.#messageComplete(events);
          break;
        }

        case S_CHUNK_SIZE_START:
          this.#chunkSize = 0;
          this.#chunkDigits = 0;
          this.#chunkOverflow = false;
          if (HEX_VALUE[c]! < 0) this.#fail("invalid character in chunk size");
          this.#state = S_CHUNK_SIZE;
          break;

        case S_CHUNK_SIZE: {
          const v = HEX_VALUE[c]!;
          if (v >= 0) {
            // Overflow as llhttp: the size must fit in 64 bits.
            if (this.#chunkSize > 0 || v > 0) this.#chunkDigits++;
            if (this.#chunkDigits > 16) this.#fail("chunk size overflow");
            this.#chunkSize = this.#chunkSize * 16 + v;
            i++;
            break;
          }
          if (c === CR) this.#state = S_CHUNK_SIZE_LF;
          else if (c === 0x3b) this.#state = S_CHUNK_EXTENSIONS;
          else if (c === LF) this.#fail("missing expected CR after chunk size");
          else this.#fail("invalid character in chunk size");
          i++;
          break;
        }

        case S_CHUNK_EXTENSIONS:
          if (c === SP || c === CR) this.#fail("invalid character in chunk extensions");
          this.#state = S_CHUNK_EXT_NAME;
          break;

        case S_CHUNK_EXT_NAME:
          if (TOKEN[c]) i++;
          else if (c === 0x3d) {
            this.#state = S_CHUNK_EXT_VALUE;
            i++;
          } else if (c === 0x3b) {
            this.#state = S_CHUNK_EXTENSIONS;
            i++;
          } else if (c === CR) {
            this.#state = S_CHUNK_SIZE_LF;
            i++;
          } else if (c === LF) this.#fail("missing expected CR after chunk extension name");
          else this.#fail("invalid character in chunk extensions name");
          break;

        case S_CHUNK_EXT_VALUE:
          if (c === 0x22) {
            this.#state = S_CHUNK_EXT_QUOTED;
            i++;
          } else if (TOKEN[c]) i++;
          else if (c === 0x3b) {
            this.#state = S_CHUNK_EXTENSIONS;
            i++;
          } else if (c === CR) {
            this.#state = S_CHUNK_SIZE_LF;
            i++;
          } else if (c === LF) this.#fail("missing expected CR after chunk extension value");
          else this.#fail("invalid character in chunk extensions value");
          break;

        case S_CHUNK_EXT_QUOTED:
          if (c === 0x22) this.#state = S_CHUNK_EXT_QUOTED_DONE;
          else if (c === 0x5c) this.#state = S_CHUNK_EXT_QUOTED_PAIR;
          else if (!QDTEXT[c]) this.#fail("invalid character in chunk extensions quoted value");
          i++;
          break;

        case S_CHUNK_EXT_QUOTED_PAIR:
          if (!HEADER_CHARS[c]) this.#fail("invalid quoted-pair in chunk extensions quoted value");
          this.#state = S_CHUNK_EXT_QUOTED;
          i++;
          break;

        case S_CHUNK_EXT_QUOTED_DONE:
          if (c === 0x3b) this.#state = S_CHUNK_EXTENSIONS;
          else if (c === CR) this.#state = S_CHUNK_SIZE_LF;
          else if (c === LF) this.#fail("missing expected CR after chunk extension value");
          else this.#fail("invalid character in chunk extensions quote value");
          i++;
          break;

        case S_CHUNK_SIZE_LF:
          if (c !== LF) this.#fail("expected LF after chunk size");
          i++;
          if (this.#chunkSize === 0) {
            // The last chunk: trailers follow, parsed as header fields.
            this.#flags |= F_TRAILING;
            this.#state = S_FIELD_START;
            this.#copyFrom = i;
            base = this.#headLength - i;
          } else {
            if (this.#bodyLength + this.#chunkSize > this.#maxBody) throw new ParseError(413, `body over ${this.#maxBody} bytes`);
            this.#remaining = this.#chunkSize;
            this.#state = S_CHUNK_DATA;
          }
          break;

        case S_CHUNK_DATA: {
          const take = Math.min(this.#remaining, n - i);
          this.#body.push(bytes.slice(i, i + take));
          this.#bodyLength += take;
          this.#remaining -= take;
          i += take;
          if (this.#remaining === 0) this.#state = S_CHUNK_DATA_CR;
          break;
        }

        case S_CHUNK_DATA_CR:
          if (c === LF) this.#fail("missing expected CR after chunk data");
          if (c !== CR) this.#fail("expected LF after chunk data");
          this.#state = S_CHUNK_DATA_LF;
          i++;
          break;

        case S_CHUNK_DATA_LF:
          if (c !== LF) this.#fail("expected LF after chunk data");
          this.#state = S_CHUNK_SIZE_START;
          i++;
          break;

        case S_CLOSED:
          if (c !== CR && c !== LF) this.#fail("data after Connection: close");
          i++;
          break;

        case S_UPGRADED:
          return;

        case S_DEAD:
          return;

        default:
          throw new Error(`http parser: unknown state ${this.#state}`);
      }
    }
    if (this.#copyFrom >= 0) {
      this.#copyHead(bytes, n);
      this.#copyFrom = -1;
    }
    // Past the head limit even while incomplete (a client that never ends its head).
    if (this.#isHeadState() && this.#headLength > this.#maxHead) throw new ParseError(431, `request head over ${this.#maxHead} bytes`);
  }

  #isHeadState(): boolean {
    const s = this.#state;
    return s >= S_METHOD && s <= S_HEADERS_LF && (this.#flags & F_TRAILING) === 0;
  }

  #inTrailers(): boolean {
    const s = this.#state;
    return (this.#flags & F_TRAILING) !== 0 && s >= S_HEADERS_START && s <= S_HEADERS_LF;
  }

  /** Text of head bytes [from, to): from #head, plus the part of `bytes` not yet copied. */
  #text(from: number, to: number, bytes: Uint8Array, base: number): string {
    // Everything before the current chunk's copy window is in #head.
    const copied = this.#headLength;
    if (to <= copied) return latin1(this.#head, from, to);
    const chunkFrom = Math.max(from, copied) - base;
    const tail = latin1(bytes, chunkFrom, to - base);
    return from < copied ? latin1(this.#head, from, copied) + tail : tail;
  }

  /** The URL ended at byte `c` (index i): a space (HTTP/x.y follows), CR LF or LF (HTTP/0.9), or an error. */
  #urlEnded(c: number, bytes: Uint8Array, i: number, base: number): number {
    if (c === SP) {
      this.#urlEnd = base + i;
      this.#state = S_HTTP_START;
      return i + 1;
    }
    if (c === CR) {
      this.#urlEnd = base + i;
      this.#state = S_URL_CR;
      return i + 1;
    }
    if (c === LF) {
      this.#urlEnd = base + i;
      this.#http09();
      return i + 1;
    }
    void bytes;
    this.#fail("invalid characters in url");
  }

  #http09(): void {
    this.#protocol = "HTTP";
    this.#major = 0;
    this.#minor = 9;
    this.#state = S_HEADERS_START;
  }

  #fieldComplete(bytes: Uint8Array, end: number, base: number): void {
    const name = this.#text(this.#fieldStart, end, bytes, base);
    const special = SPECIAL_HEADERS[name.toLowerCase()];
    this.#headerState = special ?? H_GENERAL;
    this.#fields.push(this.#fieldStart, end, 0, 0);
    if (special === H_TRANSFER_ENCODING && (this.#flags & F_CONTENT_LENGTH) !== 0) this.#fail("Transfer-Encoding can't be present with Content-Length");
    if (special === H_CONTENT_LENGTH && (this.#flags & F_TRANSFER_ENCODING) !== 0) this.#fail("Content-Length can't be present with Transfer-Encoding");
  }

  /** A value's first byte (not SP/HTAB/CR/LF) at head offset `at`: where it goes depends on the field. */
  #valueStarts(at: number): void {
    this.#valueStart = at;
    this.#valueEnd = at;
    switch (this.#headerState) {
      case H_UPGRADE:
        this.#flags |= F_UPGRADE;
        this.#headerState = H_GENERAL;
        this.#state = S_VALUE;
        return;
      case H_TRANSFER_ENCODING:
        if ((this.#flags & F_CHUNKED) !== 0) this.#fail("invalid Transfer-Encoding header value: chunked must be last");
        this.#flags |= F_TRANSFER_ENCODING;
        this.#flags &= ~F_CHUNKED;
        this.#state = S_TE_CHUNKED;
        this.#matchAt = 0;
        return;
      case H_CONTENT_LENGTH:
        if ((this.#flags & F_CONTENT_LENGTH) !== 0) this.#fail("duplicate Content-Length");
        this.#contentLength = 0;
        this.#bigLength = undefined;
        this.#state = S_CL;
        return;
      case H_CONNECTION:
        this.#state = S_CONN;
        return;
      default:
        this.#state = S_VALUE;
    }
  }

  /** Records byte `c` at head offset `at` as part of the value (for the trimmed end). */
  #markValue(c: number, at: number): void {
    if (c !== SP && c !== HTAB) this.#valueEnd = at + 1;
  }

  /** llhttp's header_value_otherwise: CR ends the value, LF alone or a bad byte is an error. */
  #valueOtherwise(c: number, i: number): number {
    if (c === CR) {
      this.#state = S_VALUE_LF;
      return i + 1;
    }
    if (c === LF) this.#fail("missing expected CR after header value");
    this.#fail("invalid header value char");
  }

  #addLengthDigit(digit: number): void {
    if (this.#bigLength !== undefined) {
      this.#bigLength = this.#bigLength * 10n + BigInt(digit);
      if (this.#bigLength >= TWO_64) this.#fail("Content-Length overflow");
      return;
    }
    const next = this.#contentLength * 10 + digit;
    if (next > Number.MAX_SAFE_INTEGER) {
      this.#bigLength = BigInt(this.#contentLength) * 10n + BigInt(digit);
      if (this.#bigLength >= TWO_64) this.#fail("Content-Length overflow");
      this.#contentLength = Number.MAX_SAFE_INTEGER;
      return;
    }
    this.#contentLength = next;
  }

  /** Sets the flag a Connection token or chunked ending asks for (llhttp's setHeaderFlags). */
  #setHeaderFlags(): void {
    switch (this.#headerState) {
      case H_CONNECTION_KEEP_ALIVE:
        this.#flags |= F_CONNECTION_KEEP_ALIVE;
        this.#headerState = H_CONNECTION;
        break;
      case H_CONNECTION_CLOSE:
        this.#flags |= F_CONNECTION_CLOSE;
        this.#headerState = H_CONNECTION;
        break;
      case H_CONNECTION_UPGRADE:
        this.#flags |= F_CONNECTION_UPGRADE;
        this.#headerState = H_CONNECTION;
        break;
      case H_TRANSFER_ENCODING_CHUNKED:
        this.#flags |= F_CHUNKED;
        break;
    }
  }

  #valueComplete(): void {
    this.#setHeaderFlags();
    const fields = this.#fields;
    fields[fields.length - 2] = this.#valueStart;
    fields[fields.length - 1] = Math.max(this.#valueStart, this.#valueEnd);
    this.#state = S_FIELD_START;
  }

  #headersComplete(events: HttpEvent[]): void {
    if ((this.#flags & F_TRAILING) !== 0) {
      this.#messageComplete(events);
      return;
    }
    const flags = this.#flags;
    const isConnect = this.#method === "CONNECT";
    this.#upgrade = ((flags & F_UPGRADE) !== 0 && (flags & F_CONNECTION_UPGRADE) !== 0) || isConnect;
    const hasBody = (flags & F_CHUNKED) !== 0 || this.#contentLength > 0;
    if (this.#upgrade && (isConnect || !hasBody)) {
      this.#messageComplete(events);
      return;
    }
    if ((flags & F_CHUNKED) !== 0) {
      this.#expectContinue = this.#asksContinue();
      if (this.#expectContinue) events.push({ kind: "continue" });
      this.#state = S_CHUNK_SIZE_START;
      return;
    }
    if ((flags & F_TRANSFER_ENCODING) !== 0) this.#fail("request has invalid Transfer-Encoding");
    if ((flags & F_CONTENT_LENGTH) === 0 || this.#contentLength === 0) {
      this.#messageComplete(events);
      return;
    }
    if (this.#contentLength > this.#maxBody) throw new ParseError(413, `body of ${this.#bigLength ?? this.#contentLength} bytes is over ${this.#maxBody}`);
    if (this.#asksContinue()) events.push({ kind: "continue" });
    this.#remaining = this.#contentLength;
    this.#state = S_BODY;
  }

  #asksContinue(): boolean {
    if (this.#major !== 1 || this.#minor !== 1) return false;
    const fields = this.#fields;
    for (let k = 0; k < fields.length; k += 4) {
      if (fields[k + 1]! - fields[k]! !== 6) continue;
      if (latin1(this.#head, fields[k]!, fields[k + 1]!).toLowerCase() !== "expect") continue;
      if (latin1(this.#head, fields[k + 2]!, fields[k + 3]!).toLowerCase() === "100-continue") return true;
    }
    return false;
  }

  #messageComplete(events: HttpEvent[]): void {
    const flags = this.#flags;
    let keepAlive: boolean;
    if (this.#major > 0 && this.#minor > 0) keepAlive = (flags & F_CONNECTION_CLOSE) === 0;
    else keepAlive = (flags & F_CONNECTION_KEEP_ALIVE) !== 0;
    const head = this.#head;
    const fields = this.#fields;
    const headers: Array<[string, string]> = [];
    for (let k = 0; k < fields.length; k += 4) {
      headers.push([latin1(head, fields[k]!, fields[k + 1]!), latin1(head, fields[k + 2]!, fields[k + 3]!)]);
    }
    let body: Uint8Array;
    if (this.#body.length === 1) body = this.#body[0]!;
    else {
      body = new Uint8Array(this.#bodyLength);
      let at = 0;
      for (const part of this.#body) {
        body.set(part, at);
        at += part.length;
      }
    }
    events.push({
      kind: "request",
      request: {
        method: this.#method,
        target: latin1(head, this.#urlStart, this.#urlEnd),
        protocol: this.#protocol,
        major: this.#major,
        minor: this.#minor,
        headers,
        body,
        keepAlive,
        upgrade: this.#upgrade,
        chunked: (flags & F_CHUNKED) !== 0,
      },
    });
    this.#body = [];
    this.#flags = 0;
    this.#state = this.#upgrade ? S_UPGRADED : keepAlive ? S_START : S_CLOSED;
  }
}

/** Bytes [from, to) of `bytes` as a flat latin1 string (each byte one UTF-16 unit; Buffer's own, also for a Uint8Array). */
const latin1Slice = (Buffer.prototype as unknown as { latin1Slice(this: Uint8Array, from: number, to: number): string }).latin1Slice;
function latin1(bytes: Uint8Array, from: number, to: number): string {
  return latin1Slice.call(bytes, from, to);
}
