/**
 * Stage "filter" of examples/pipeline-logs.ts: keeps the problem requests
 * (5xx, or slower than SLOW_MS) of a parsed range, and how many lines the
 * range had.
 */
import { SLOW_MS } from "./log-format.js";
import type { Columns } from "./log-parse.js";

export default function filter(columns: Columns): Columns {
  const { lines, route, status, bytes, latencyUs } = columns;
  const keep: number[] = [];
  const slowUs = SLOW_MS * 1000;
  for (let i = 0; i < lines; i++) if (status[i]! >= 500 || latencyUs[i]! > slowUs) keep.push(i);
  const pick = <A extends Uint8Array | Uint16Array | Uint32Array>(column: A, make: new (n: number) => A): A => {
    const out = new make(keep.length);
    for (let j = 0; j < keep.length; j++) out[j] = column[keep[j]!]!;
    return out;
  };
  // `lines` stays the count of the whole range (the report counts every line).
  return { lines, route: pick(route, Uint8Array), status: pick(status, Uint16Array), bytes: pick(bytes, Uint32Array), latencyUs: pick(latencyUs, Uint32Array) };
}
