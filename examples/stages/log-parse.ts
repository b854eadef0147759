/**
 * Stage "parse" of examples/pipeline-logs.ts: reads its byte range of the
 * log file and parses every line into columns (typed arrays travel between
 * interpreters as bytes, much cheaper than an object per line).
 */
import { closeSync, openSync, readSync } from "node:fs";
import { ROUTES } from "./log-format.js";

export interface Range {
  path: string;
  start: number;
  end: number;
}

/** The parsed lines of one range, column by column. */
export interface Columns {
  lines: number;
  route: Uint8Array;
  status: Uint16Array;
  bytes: Uint32Array;
  latencyUs: Uint32Array;
}

const routeIndex = new Map<string, number>(ROUTES.map((route, i) => [route, i]));
const files = new Map<string, number>();
process.once("exit", () => {
  for (const fd of files.values()) closeSync(fd);
});

const SPACE = 0x20;
const NEWLINE = 0x0a;
const SLASH = 0x2f;
const DOT = 0x2e;

export default function parse(range: Range): Columns {
  let fd = files.get(range.path);
  if (fd === undefined) files.set(range.path, (fd = openSync(range.path, "r")));
  const length = range.end - range.start;
  const buffer = Buffer.allocUnsafe(length);
  let read = 0;
  while (read < length) {
    const n = readSync(fd, buffer, read, length - read, range.start + read);
    if (n === 0) throw new Error(`${range.path}: file ended at ${range.start + read}, expected ${range.end}`);
    read += n;
  }
  // Upper bound on lines: a line is at least 40 bytes.
  const capacity = Math.ceil(length / 40) + 1;
  const route = new Uint8Array(capacity);
  const status = new Uint16Array(capacity);
  const bytes = new Uint32Array(capacity);
  const latencyUs = new Uint32Array(capacity);
  let lines = 0;
  let at = 0;
  while (at < length) {
    // time, client, method: skip three fields
    for (let field = 0; field < 3; field++) {
      while (buffer[at] !== SPACE) at++;
      at++;
    }
    // path -> route template (numeric segments are ids)
    let template = "";
    let segmentStart = at;
    let numeric = true;
    for (;;) {
      const c = buffer[at]!;
      if (c === SLASH || c === SPACE) {
        if (at > segmentStart) template += numeric ? ":id" : buffer.toString("latin1", segmentStart, at);
        if (c === SPACE) break;
        template += "/";
        segmentStart = at + 1;
        numeric = true;
      } else if (c < 0x30 || c > 0x39) numeric = false;
      at++;
    }
    at++;
    const index = routeIndex.get(template);
    if (index === undefined) throw new Error(`unknown route ${JSON.stringify(template)} at byte ${range.start + at}`);
    route[lines] = index;
    // status, bytes
    let value = 0;
    while (buffer[at] !== SPACE) value = value * 10 + buffer[at++]! - 0x30;
    status[lines] = value;
    at++;
    value = 0;
    while (buffer[at] !== SPACE) value = value * 10 + buffer[at++]! - 0x30;
    bytes[lines] = value;
    at++;
    // latency "12.345ms" -> 12345 µs
    value = 0;
    while (buffer[at] !== DOT) value = value * 10 + buffer[at++]! - 0x30;
    at++;
    for (let digit = 0; digit < 3; digit++) value = value * 10 + buffer[at++]! - 0x30;
    latencyUs[lines] = value;
    // the rest of the line
    while (buffer[at] !== NEWLINE) at++;
    at++;
    lines++;
  }
  return { lines, route: route.subarray(0, lines), status: status.subarray(0, lines), bytes: bytes.subarray(0, lines), latencyUs: latencyUs.subarray(0, lines) };
}
