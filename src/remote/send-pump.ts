/**
 * The send pump of one connected channel, in the bridge: takes what this
 * process's send handles send (the local rendezvous channel `local`) and
 * publishes it to the channel's stream, each message with the id
 * `<sender>:<seq>` so that the broker stores a retried publish once.
 *
 * It takes a message from the local channel only when it can publish it:
 * with `window` 1 (bounded channels) after the previous one was stored, so
 * a process has at most one message between a completed `send` and the
 * broker, and per-sender order holds even through retries; with a larger
 * window (unbounded channels) up to `window` publishes are in flight.
 *
 * A publish refused because the stream is full (capacity n reached, or the
 * byte budget) is retried with the same id after a short wait (1 ms
 * doubling to FULL_RETRY_CAP_MS), or at once when a receiving process says
 * it took a message (`roomSubject`, bounded channels), never reported as an
 * error: the local senders meanwhile wait in their `send`, which is the
 * backpressure. A
 * publish that times out or finds no responder (broker restart, leader
 * election) is retried with backoff, with the same id: stored at most once
 * within the broker's 2-minute de-duplication window.
 */
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import { JetStreamApiError } from "@nats-io/jetstream";
import { ChannelClosedError, NotShareableError, RecvChannel, SendChannel } from "../core.js";
import { encodeWire } from "./wire.js";
import { backoff, sleep } from "./timing.js";

/** Longest wait between two attempts to publish into a full stream (the resume latency after a receive). */
export const FULL_RETRY_CAP_MS = 16;

export interface SendPumpOptions {
  js: JetStreamClient;
  nc: NatsConnection;
  /** Where receivers announce room (bounded channels), or undefined. */
  roomSubject?: string;
  /** The channel's name, for messages. */
  channel: string;
  subject: string;
  senderId: string;
  window: number;
  publishTimeout: number;
  local: RecvChannel<unknown>;
  warn(message: string): void;
}

export type SendOutcome = "closed-locally" | "closed-remotely";

export interface SendCounts {
  /** Messages stored by the broker. */
  stored: number;
  /** Publishes the broker answered "duplicate" (a retry of one it had stored). */
  duplicates: number;
  /** Attempts refused because the stream was full (each retried). */
  fullRetries: number;
  /** Attempts that failed otherwise (timeouts, no responders; each retried). */
  failedAttempts: number;
  /** Values that cannot cross machines, dropped with a warning. */
  refused: number;
}

export class SendPump {
  readonly #o: SendPumpOptions;
  readonly counts: SendCounts = { stored: 0, duplicates: 0, fullRetries: 0, failedAttempts: 0, refused: 0 };
  #seq = 0;
  readonly #stop = new AbortController();
  /** Wakes publishes waiting for room in a full stream. */
  #roomWaiters: Array<() => void> = [];

  constructor(options: SendPumpOptions) {
    this.#o = options;
  }

  /** The other side closed (every receiver gone) or this member was evicted: stop, dropping what is in flight. */
  stopRemotely(): void {
    this.#stop.abort();
  }

  get stoppedRemotely(): boolean {
    return this.#stop.signal.aborted;
  }

  /**
   * Runs until every local send handle is closed and everything taken is
   * stored ("closed-locally"), or until stopRemotely() ("closed-remotely").
   * Closes the pump's local handle on the way out: local sends then fail
   * with ChannelClosedError.
   */
  async run(): Promise<SendOutcome> {
    const inFlight: Array<Promise<void>> = [];
    let outcome: SendOutcome = "closed-locally";
    let room: Subscription | undefined;
    if (this.#o.roomSubject) {
      room = this.#o.nc.subscribe(this.#o.roomSubject, {
        callback: () => {
          const waiters = this.#roomWaiters;
          this.#roomWaiters = [];
          for (const wake of waiters) wake();
        },
      });
    }
    try {
      for (;;) {
        let value: unknown;
        try {
          const got = this.#o.local.tryRecv();
          if (got.ok) value = got.value;
          else value = await this.#o.local.recv({ signal: this.#stop.signal });
        } catch (err) {
          if (this.#stop.signal.aborted) outcome = "closed-remotely";
          else if (!(err instanceof ChannelClosedError)) throw err;
          break;
        }
        let payload: Uint8Array;
        try {
          payload = encodeWire(this.#seq + 1, value);
        } catch (err) {
          if (!(err instanceof NotShareableError)) throw err;
          this.counts.refused++;
          closeEndsIn(value);
          this.#o.warn(`remote channel "${this.#o.channel}": a message was dropped: ${err.message}`);
          continue;
        }
        inFlight.push(this.#publish(++this.#seq, payload));
        if (inFlight.length >= this.#o.window) await inFlight.shift();
      }
      await Promise.all(inFlight);
      if (this.#stop.signal.aborted) outcome = "closed-remotely";
    } finally {
      room?.unsubscribe();
      this.#o.local.close();
    }
    return outcome;
  }

  async #publish(seq: number, payload: Uint8Array): Promise<void> {
    const msgID = `${this.#o.senderId}:${seq}`;
    let fullWait = 1;
    for (let attempt = 0; !this.#stop.signal.aborted; attempt++) {
      try {
        const ack = await this.#o.js.publish(this.#o.subject, payload, { msgID, timeout: this.#o.publishTimeout, retries: 0 });
        if (ack.duplicate) this.counts.duplicates++;
        this.counts.stored++;
        return;
      } catch (err) {
        if (isFull(err)) {
          this.counts.fullRetries++;
          await this.#roomOrTimeout(fullWait);
          fullWait = Math.min(FULL_RETRY_CAP_MS, fullWait * 2);
          attempt = 0;
          continue;
        }
        if (err instanceof JetStreamApiError && err.code === 10059) {
          // stream not found: the channel was removed
          this.#stop.abort();
          return;
        }
        this.counts.failedAttempts++;
        await sleep(backoff(attempt));
      }
    }
  }

  /** Resolves after `ms`, or earlier when a receiver announces room. */
  #roomOrTimeout(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        const at = this.#roomWaiters.indexOf(wake);
        if (at >= 0) this.#roomWaiters.splice(at, 1);
        resolve();
      }, ms);
      this.#roomWaiters.push(wake);
    });
  }
}

/** The broker's "stream full" answer (v2.9: err_code 10077, the generic store error, so the text is checked too). */
function isFull(err: unknown): boolean {
  return err instanceof JetStreamApiError && /maximum (messages|bytes)/i.test(err.message);
}

/** Closes the channel ends a refused message carried into the bridge (they cannot go anywhere). */
function closeEndsIn(value: unknown, seen = new Set<unknown>()): void {
  if (typeof value !== "object" || value === null || seen.has(value)) return;
  seen.add(value);
  if (value instanceof SendChannel || value instanceof RecvChannel) {
    value.close();
    return;
  }
  if (value instanceof Map) {
    for (const [k, v] of value) {
      closeEndsIn(k, seen);
      closeEndsIn(v, seen);
    }
    return;
  }
  if (value instanceof Set || Array.isArray(value)) {
    for (const v of value) closeEndsIn(v, seen);
    return;
  }
  for (const v of Object.values(value)) closeEndsIn(v, seen);
}
