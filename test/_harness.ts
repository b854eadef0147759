/**
 * Test harness: uvu suites whose every test body races a deadline.
 *
 * uvu has no per-test timeout, so a test that hangs would hang CI. `suite()`
 * wraps uvu's `suite` so that each body is raced against a timer; a body that
 * does not settle in time fails with a message naming the test. Async waits
 * are what we race: a test that blocks the main thread synchronously cannot
 * be interrupted, so sync blocking belongs inside interpreters (whose `exec`
 * promise is raced) or carries its own `timeout` option.
 */
import { suite as uvuSuite } from "uvu";

export { assert } from "./_assert.js";

/** Default deadline per test, in ms: generous, because this machine is shared and noisy. */
export const DEFAULT_TIMEOUT = 30_000;

export interface TimedSuite {
  (name: string, body: () => unknown | Promise<unknown>, opts?: { timeout?: number }): void;
  skip(name: string, body?: () => unknown): void;
  before: { each(fn: () => unknown): void; (fn: () => unknown): void };
  after: { each(fn: () => unknown): void; (fn: () => unknown): void };
  run(): void;
}

/** Races `promise` against a deadline; rejects with an Error naming `what`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

export function suite(name: string): TimedSuite {
  const s = uvuSuite(name);
  const wrap =
    (title: string, body: () => unknown, opts?: { timeout?: number }) => () =>
      withTimeout(Promise.resolve().then(body), opts?.timeout ?? DEFAULT_TIMEOUT, `${name} > ${title}`);
  const t = ((title: string, body: () => unknown, opts?: { timeout?: number }) =>
    s(title, wrap(title, body, opts))) as TimedSuite;
  t.skip = (title) => s.skip(title);
  t.before = s.before as TimedSuite["before"];
  t.after = s.after as TimedSuite["after"];
  t.run = () => s.run();
  return t;
}

/** A seeded PRNG (mulberry32): tests print the seed so a failure can be replayed. */
export { rng } from "./_rng.js";

/** The seed for a randomized test: $SEED when set, else a fresh one. */
export function seedFromEnv(): number {
  const fromEnv = process.env.SEED;
  return fromEnv ? Number(fromEnv) : (Math.random() * 2 ** 31) >>> 0;
}
