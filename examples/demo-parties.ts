/**
 * The two sides of `npm start`'s producer/consumer runs (examples/index.ts),
 * run inside interpreters through `call`. `progress` is shared memory the
 * main thread reads to see how far ahead of the consumer the producer is:
 * Int32 word SENT = messages sent so far, word RECEIVED = messages received
 * so far, each written by one side after every message (64 bytes apart, so
 * the two sides never write the same cache line).
 */
import type { RecvChannel, SendChannel } from "interpreters";

export interface Job {
  id: number;
  payload: string;
}

/** Word indexes in `progress` (a SharedArrayBuffer of PROGRESS_BYTES). */
export const SENT = 0;
export const RECEIVED = 16;
export const PROGRESS_BYTES = 128;

/** How many messages a producer sends between looks at the clock. */
const BATCH = 256;

/**
 * Sends jobs 0, 1, 2, ... on `jobs` for `seconds` (checking the clock every
 * BATCH messages), then closes it. Returns how many it sent.
 */
export function produce(jobs: SendChannel<Job>, seconds: number, progress: SharedArrayBuffer): number {
  const counts = new Int32Array(progress);
  const deadline = performance.now() + seconds * 1000;
  let sent = 0;
  while (performance.now() < deadline) {
    for (let i = 0; i < BATCH; i++, sent++) {
      jobs.sendSync({ id: sent, payload: `job-${sent}` });
      Atomics.store(counts, SENT, sent + 1);
    }
  }
  jobs.close();
  return sent;
}

/** Receives every job until the channel ends; checks they arrived in order, once each. */
export function consume(jobs: RecvChannel<Job>, progress: SharedArrayBuffer): { received: number; inOrder: boolean } {
  const counts = new Int32Array(progress);
  let received = 0;
  let inOrder = true;
  for (const job of jobs) {
    if (job.id !== received || job.payload !== `job-${received}`) inOrder = false;
    received++;
    Atomics.store(counts, RECEIVED, received);
  }
  return { received, inOrder };
}
