/**
 * The CPU work behind `/work?us=N`, shared by the offloaded HTTP server and
 * the node:http baselines it is measured against (the same handler for
 * every system): SHA-256 chained over its own digest until N microseconds
 * of this thread's time have passed. The digest is returned (and answered)
 * so that the work cannot be optimised away.
 */
import { createHash } from "node:crypto";

/** Longest work a request may ask for (1 s). */
export const MAX_WORK_US = 1_000_000;

export function burn(us: number): string {
  const until = performance.now() + us / 1000;
  let digest: Buffer = Buffer.alloc(32);
  do {
    digest = createHash("sha256").update(digest).digest();
  } while (performance.now() < until);
  return digest.toString("hex", 0, 8);
}

/** `us` from a query string such as "us=200&x=1", or undefined if missing or out of range. */
export function workMicros(query: string): number | undefined {
  for (const pair of query.split("&")) {
    if (!pair.startsWith("us=")) continue;
    const text = pair.slice(3);
    if (!/^\d{1,7}$/.test(text)) return undefined;
    const us = Number(text);
    return us <= MAX_WORK_US ? us : undefined;
  }
  return undefined;
}
