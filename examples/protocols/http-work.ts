/**
 * The HTTP server's work stage (SEDA: parse and route in the protocol
 * interpreters, handle `/work` in interpreters of its own), so that a flood
 * of CPU-heavy requests never stands between a cheap request (`/health`)
 * and the interpreter that parses it.
 *
 * Wiring (made by examples/http-server.ts):
 * - one bounded `jobs` channel, every protocol interpreter a sender, every
 *   work interpreter a receiver: a full stage makes senders wait (their
 *   connection's next request waits with them: backpressure to the socket);
 * - one `results` channel per protocol interpreter, every work interpreter
 *   a sender: the answer goes back to the interpreter that owns the
 *   connection, which keeps its responses in order.
 */
import { readlinkSync } from "node:fs";
import { setPriority } from "node:os";
import { ChannelClosedError, type RecvChannel, type SendChannel } from "interpreters";
import { burn } from "./work.js";

export interface Job {
  /** The asking interpreter's index (which results channel to answer on). */
  from: number;
  /** Tells this incarnation of that interpreter from an earlier one (a replacement starts its ids anew). */
  epoch: number;
  id: number;
  us: number;
}

export interface Result {
  epoch: number;
  id: number;
  digest: string;
}

/** The protocol interpreter's side: hands out jobs, matches results to the requests waiting for them. */
export class WorkClient {
  readonly #jobs: SendChannel<Job>;
  readonly #from: number;
  readonly #epoch = (Math.random() * 2 ** 31) | 0;
  #next = 1;
  readonly #waiting = new Map<number, { resolve(digest: string): void; reject(err: Error): void }>();

  constructor(jobs: SendChannel<Job>, results: RecvChannel<Result>, from: number) {
    this.#jobs = jobs;
    this.#from = from;
    void this.#receive(results);
  }

  /** Runs `us` microseconds of work in the stage; resolves with its digest. Waits while the stage is full. */
  async run(us: number): Promise<string> {
    const id = this.#next++;
    const answered = new Promise<string>((resolve, reject) => this.#waiting.set(id, { resolve, reject }));
    try {
      await this.#jobs.send({ from: this.#from, epoch: this.#epoch, id, us });
    } catch (err) {
      this.#waiting.delete(id);
      throw err;
    }
    return answered;
  }

  async #receive(results: RecvChannel<Result>): Promise<void> {
    try {
      for (;;) {
        const result = await results.recv();
        if (result.epoch !== this.#epoch) continue; // for an interpreter this one replaced
        const waiting = this.#waiting.get(result.id);
        this.#waiting.delete(result.id);
        waiting?.resolve(result.digest);
      }
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) throw err;
      for (const waiting of this.#waiting.values()) waiting.reject(new Error("the work stage is gone"));
      this.#waiting.clear();
    }
  }
}

/**
 * Lowers this thread's scheduling priority (Linux: setpriority on the
 * thread's own id, which affects this thread only). The work stage is
 * batch work: with a higher nice value, the threads that move bytes and
 * parse (the main thread, the protocol interpreters) get a core as soon as
 * they wake, even while every core is busy with /work. Returns whether it
 * could (not on other systems).
 */
export function niceThisThread(nice: number): boolean {
  if (nice === 0) return true;
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    if (!Number.isInteger(tid)) return false;
    setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}

/**
 * A work interpreter's loop (called through `Interpreter.call`): takes jobs
 * until every sender is gone, answers each on its asker's results channel.
 * `nice` (0-19) lowers this thread's priority first (niceThisThread).
 */
export function serveWork(jobs: RecvChannel<Job>, results: SendChannel<Result>[], nice = 0): number {
  niceThisThread(nice);
  let done = 0;
  for (const job of jobs) {
    const digest = burn(job.us);
    try {
      results[job.from]!.sendSync({ epoch: job.epoch, id: job.id, digest });
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) throw err;
    }
    done++;
  }
  for (const channel of results) channel.close();
  return done;
}
