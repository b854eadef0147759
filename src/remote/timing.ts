/** Small timing helpers of the remote channels' bridge. */

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Exponential backoff with jitter: about 10 ms, 20 ms, ... up to `cap` ms. */
export function backoff(attempt: number, cap = 1000): number {
  return Math.min(cap, 10 * 2 ** Math.min(attempt, 20)) * (0.5 + Math.random() / 2);
}
