/**
 * The HTTP/1.1 protocol module of examples/http-server.ts, run by offload()
 * in each protocol interpreter: bytes in, response bytes out.
 *
 * Routes:
 * - `GET /` (and HEAD): "Hello, world!\n"
 * - `GET /health` (and HEAD): "ok\n"
 * - `GET /work?us=N`: N microseconds of real CPU work (SHA-256, work.ts),
 *   answered with its digest; done in the work stage when there is one
 *   (globals `jobs` and `results`, see http-work.ts), else right here
 * - `POST /echo` (or PUT): the body back
 *
 * Keep-alive and pipelining as the parser says (responses in request
 * order), `Expect: 100-continue` answered, 400/413/431 for what the parser
 * refuses (then the connection is closed), 400 for an HTTP/1.1 request
 * without exactly one Host (RFC 9112), 404/405, 505 for anything but
 * HTTP/1.0 and 1.1, 501 for transfer codings other than chunked. Every
 * response has Date, Content-Type and Content-Length.
 */
import type { ConnectionInfo, ProtocolContext, RecvChannel, Reply, SendChannel } from "interpreters";
import { HttpRequestParser, type HttpEvent, type HttpLimits, type HttpRequest } from "./http-parser.js";
import { WorkClient, type Job, type Result } from "./http-work.js";
import { burn, workMicros } from "./work.js";

declare global {
  /** The work stage's jobs channel (a clone per interpreter), if the server has a work stage. */
  var jobs: SendChannel<Job> | undefined;
  /** One results channel per protocol interpreter (this one uses its own index's). */
  var results: RecvChannel<Result>[] | undefined;
  /** Parser limits, if the server sets them. */
  var httpLimits: HttpLimits | undefined;
}

let workStage: WorkClient | undefined;

export function start(context: ProtocolContext): void {
  const results = globalThis.results;
  if (globalThis.jobs && results) {
    results.forEach((channel, index) => {
      if (index !== context.index) channel.close();
    });
    workStage = new WorkClient(globalThis.jobs, results[context.index]!, context.index);
  }
}

const encoder = new TextEncoder();

function latin1(text: string): Uint8Array {
  return Buffer.from(text, "latin1");
}

// ---------------------------------------------------------------- Date, cached per second

let dateSecond = 0;
let dateHeader = "";
function date(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateHeader = new Date(second * 1000).toUTCString();
  }
  return dateHeader;
}

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Content Too Large",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

interface Options {
  /** The connection stays open after this response. */
  keepAlive: boolean;
  /** The client spoke HTTP/1.0: keep-alive must be said. */
  http10?: boolean;
  /** HEAD: headers only. */
  head?: boolean;
  contentType?: string;
  extra?: string;
}

/** A whole response: status line, headers, body (one array, or two for a body we did not copy). */
function response(status: number, body: Uint8Array, options: Options): Uint8Array | Uint8Array[] {
  let head =
    `HTTP/1.1 ${status} ${REASONS[status]}\r\nDate: ${date()}\r\nContent-Type: ${options.contentType ?? "text/plain"}\r\n` +
    `Content-Length: ${body.length}\r\n`;
  if (!options.keepAlive) head += "Connection: close\r\n";
  else if (options.http10) head += "Connection: keep-alive\r\n";
  if (options.extra) head += options.extra;
  head += "\r\n";
  if (options.head || body.length === 0) return latin1(head);
  if (body.length <= 256) return latin1(head + Buffer.from(body.buffer, body.byteOffset, body.length).toString("latin1"));
  return [latin1(head), body];
}

const CONTINUE = latin1("HTTP/1.1 100 Continue\r\n\r\n");
const HELLO = encoder.encode("Hello, world!\n");
const OK = encoder.encode("ok\n");

function errorResponse(status: number): Uint8Array {
  return response(status, encoder.encode(`${REASONS[status]}\n`), { keepAlive: false }) as Uint8Array;
}

/** The reply to data that arrived while this interpreter was full (offload "reject"). */
export function overloaded(): Uint8Array {
  return response(503, encoder.encode("Service Unavailable\n"), { keepAlive: false, extra: "Retry-After: 1\r\n" }) as Uint8Array;
}

/** The reply when a handler threw or an interpreter died. */
export function failed(): Uint8Array {
  return errorResponse(500);
}

type Answer = Uint8Array | Uint8Array[] | Promise<Uint8Array | Uint8Array[]>;

/** The answer to one request, and whether the connection ends after it. */
function respond(request: HttpRequest): { answer: Answer; close: boolean } {
  if (request.protocol !== "HTTP" || request.major !== 1) return { answer: errorResponse(505), close: true };
  if (request.method === "CONNECT") return { answer: errorResponse(405), close: true };
  if (request.chunked && !onlyChunked(request)) return { answer: errorResponse(501), close: true };
  // RFC 9112 3.2: an HTTP/1.1 request must have exactly one Host.
  if (request.minor === 1 && hostCount(request) !== 1) return { answer: errorResponse(400), close: true };
  // After an Upgrade request nothing more is HTTP: answer it (ignoring the
  // upgrade, as RFC 9110 allows) and close.
  const keepAlive = request.keepAlive && !request.upgrade;
  const options: Options = { keepAlive, http10: request.minor === 0 };
  const target = request.target;
  const question = target.indexOf("?");
  let path = question < 0 ? target : target.slice(0, question);
  const query = question < 0 ? "" : target.slice(question + 1);
  const scheme = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/]*/.exec(path);
  if (scheme) path = path.slice(scheme[0].length) || "/";
  const method = request.method;
  const close = !keepAlive;
  switch (path) {
    case "/":
    case "/health": {
      if (method !== "GET" && method !== "HEAD") return { answer: response(405, encoder.encode("GET or HEAD\n"), { ...options, extra: "Allow: GET, HEAD\r\n" }), close };
      return { answer: response(200, path === "/" ? HELLO : OK, { ...options, head: method === "HEAD" }), close };
    }
    case "/work": {
      if (method !== "GET") return { answer: response(405, encoder.encode("GET\n"), { ...options, extra: "Allow: GET\r\n" }), close };
      const us = workMicros(query);
      if (us === undefined) return { answer: response(400, encoder.encode("/work?us=N with 0 <= N <= 1000000\n"), options), close };
      const answer = (digest: string) => response(200, encoder.encode(`worked ${us} us: ${digest}\n`), options);
      if (workStage) return { answer: workStage.run(us).then(answer), close };
      return { answer: answer(burn(us)), close };
    }
    case "/echo":
      if (method !== "POST" && method !== "PUT") return { answer: response(405, encoder.encode("POST or PUT\n"), { ...options, extra: "Allow: POST, PUT\r\n" }), close };
      return { answer: response(200, request.body, { ...options, contentType: "application/octet-stream" }), close };
    default:
      return { answer: response(404, encoder.encode("Not Found\n"), options), close };
  }
}

function hostCount(request: HttpRequest): number {
  let n = 0;
  for (const [name] of request.headers) if (name.length === 4 && name.toLowerCase() === "host") n++;
  return n;
}

function onlyChunked(request: HttpRequest): boolean {
  for (const [name, value] of request.headers) {
    if (name.length !== 17 || name.toLowerCase() !== "transfer-encoding") continue;
    for (const coding of value.split(",")) if (coding.trim().toLowerCase() !== "chunked") return false;
  }
  return true;
}

/** A connection: the parser's events become responses, in order. */
export default function connect(_info: ConnectionInfo) {
  const parser = new HttpRequestParser(globalThis.httpLimits);
  let closing = false;
  return {
    receive(bytes: Uint8Array): Reply | Promise<Reply> {
      if (closing) return undefined;
      const events: HttpEvent[] = parser.execute(bytes);
      if (events.length === 0) return undefined;
      const answers: Answer[] = [];
      let pending = false;
      for (const event of events) {
        if (event.kind === "continue") answers.push(CONTINUE);
        else if (event.kind === "error") {
          answers.push(errorResponse(event.status));
          closing = true;
        } else {
          const { answer, close } = respond(event.request);
          answers.push(answer);
          if (answer instanceof Promise) pending = true;
          if (close) closing = true;
        }
        if (closing) break;
      }
      const close = closing;
      if (!pending) return close ? { write: (answers as Array<Uint8Array | Uint8Array[]>).flat(), close } : (answers as Array<Uint8Array | Uint8Array[]>).flat();
      return Promise.all(answers).then((done) => ({ write: done.flat(), close }));
    },
  };
}
