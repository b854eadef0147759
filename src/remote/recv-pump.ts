/**
 * The receive pump of one connected channel, in the bridge: pulls messages
 * from the channel's durable consumer and hands each to one of this
 * process's receivers through the local rendezvous channel `local`, then
 * acknowledges it.
 *
 * Order of events for one message: pulled (the broker now counts it as
 * pending for this process) → offered on `local` → taken by a local receiver
 * (its `recv` returns) → acknowledged (`ackAck`: the broker deletes it and
 * confirms). If this process dies before the acknowledgement, the broker
 * redelivers the message to another receiver after `ackWait`
 * (at-least-once). A message this process already handed over, delivered
 * again, is acknowledged and suppressed by the per-sender sequence check.
 *
 * Two modes:
 *
 * - **active**: some local receiver wants messages. The pump keeps up to
 *   `credit` messages pulled ahead (fetches of at most that many, two open at
 *   a time); `credit` starts at 1 and doubles, up to `window`, each time a
 *   message is taken at once (a receiver was already waiting: the pump is the
 *   bottleneck). An offer nobody takes within `hold` ms is withdrawn (nobody
 *   receives it) and the pump goes idle.
 * - **idle**: nobody local is waiting. Everything pulled is released (nak:
 *   the broker offers it to other processes at once) once no fetch of ours
 *   is open (releasing earlier would hand it back to our own open fetch).
 *   The pump polls the local channel's waiting receivers (1 ms doubling to
 *   IDLE_POLL_CAP_MS) and goes active when one waits.
 *
 * So a process that stops receiving holds other processes' messages for at
 * most `hold` ms plus one fetch's expiry, and a message waits in this
 * process only while one of its receivers is there to take it.
 *
 * Closing: when the send side is closed (every remote sender gone) and the
 * stream holds nothing (nothing stored, nothing pending anywhere), the pump
 * closes its local send handle: local receivers then get ChannelClosedError.
 */
import type { Consumer, JetStreamManager, JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { ChannelClosedError, CorruptDataError, TimeoutError } from "../errors.js";
import type { SendChannel } from "../channel.js";
import { senderOfSubject } from "./naming.js";
import type { SequenceCheck } from "./sequence-check.js";
import { decodeWire } from "./wire.js";
import { backoff, sleep } from "./timing.js";

export const IDLE_POLL_CAP_MS = 25;
/** A fetch's expiry: how long one pull request waits for messages. */
const FETCH_EXPIRES_MS = 2000;
/** While active with nothing to offer, how often to look whether the channel is drained (also on every state change). */
const DRAIN_CHECK_MS = 1000;
/** An offer taken within this many ms found a receiver waiting (or about to). */
const QUICK_TAKE_MS = 2;

export interface RecvPumpOptions {
  nc: NatsConnection;
  consumer: Consumer;
  jsm: JetStreamManager;
  stream: string;
  channel: string;
  local: SendChannel<unknown>;
  /** Most messages pulled ahead of the local receivers. */
  window: number;
  /** Milliseconds an offer waits for a local receiver before the pump goes idle. */
  hold: number;
  ackWait: number;
  ackTimeout: number;
  check: SequenceCheck;
  /** Whether every remote sender is gone (state.ts sendClosed). */
  sendClosed(): boolean;
  warn(message: string): void;
}

export type RecvOutcome = "closed-locally" | "drained" | "closed-remotely";

export interface RecvCounts {
  /** Messages handed to a local receiver. */
  delivered: number;
  /** ... of which the broker had delivered before (to this or another process). */
  redelivered: number;
  /** Messages released to other processes (nak) because no local receiver took them. */
  released: number;
  /** Messages not written by a remote channel's sender: terminated (never redelivered) with a warning. */
  corrupt: number;
  /** Acknowledgements whose confirmation never came (the message may be delivered again elsewhere). */
  acksUnconfirmed: number;
}

type Mode = "idle" | "active";

export class RecvPump {
  readonly #o: RecvPumpOptions;
  readonly counts: RecvCounts = { delivered: 0, redelivered: 0, released: 0, corrupt: 0, acksUnconfirmed: 0 };
  #mode: Mode = "idle";
  #finished = false;
  /** Pulled, to be offered, in arrival order. */
  #held: JsMsg[] = [];
  /** Pulled while idle: released when no fetch of ours is open. */
  #parked: JsMsg[] = [];
  #offering: JsMsg | undefined;
  /** Messages asked for by open fetches and not yet arrived. */
  #requested = 0;
  #fetches = 0;
  #fetchFailures = 0;
  #fetchPausedUntil = 0;
  #credit = 1;
  readonly #stop = new AbortController();
  #wakeUp: (() => void) | undefined;
  #lastDrainCheck = 0;

  constructor(options: RecvPumpOptions) {
    this.#o = options;
  }

  /** Something changed (the channel's state, a message arrived): the loop looks again. */
  wake(): void {
    const wakeUp = this.#wakeUp;
    this.#wakeUp = undefined;
    wakeUp?.();
  }

  /** Every receiver everywhere is gone, or this member was evicted: stop and release everything. */
  stopRemotely(): void {
    this.#stop.abort();
    this.wake();
  }

  async run(): Promise<RecvOutcome> {
    const keepAlive = setInterval(() => this.#working(), Math.max(100, this.#o.ackWait / 3));
    try {
      for (;;) {
        if (this.#stop.signal.aborted) return "closed-remotely";
        if (this.#mode === "idle") {
          const why = await this.#idle();
          if (why !== "demand") return why;
          this.#mode = "active";
          this.#credit = 1;
          continue;
        }
        const message = await this.#nextHeld();
        if (message === undefined) {
          if (this.#o.local.stats().receivers === 0) return "closed-locally";
          if (await this.#drainedNow()) return "drained";
          continue;
        }
        const outcome = await this.#offer(message);
        if (outcome === "withdrawn") this.#goIdle();
        else if (outcome === "closed") return "closed-locally";
      }
    } finally {
      clearInterval(keepAlive);
      this.#finished = true;
      this.#mode = "idle";
      this.#releaseAll();
      this.#o.local.close();
    }
  }

  /** Waits for a local receiver to wait. */
  async #idle(): Promise<RecvOutcome | "demand"> {
    let delay = 1;
    for (;;) {
      if (this.#stop.signal.aborted) return "closed-remotely";
      this.#releaseParkedIfNoFetch();
      const stats = this.#o.local.stats();
      if (stats.receivers === 0) return "closed-locally";
      if (stats.waitingReceivers > 0) return "demand";
      if (await this.#drainedNow()) return "drained";
      await this.#sleepOrWake(delay);
      delay = Math.min(IDLE_POLL_CAP_MS, delay * 2);
    }
  }

  /** The next pulled message, or undefined after a while with none (or on a wake-up) so the caller can look at the channel. */
  async #nextHeld(): Promise<JsMsg | undefined> {
    if (this.#held.length === 0) {
      this.#pull();
      await this.#sleepOrWake(DRAIN_CHECK_MS);
      if (this.#held.length === 0) return undefined;
    }
    this.#pull(); // keep the pipeline full behind the one taken now
    return this.#held.shift();
  }

  async #offer(message: JsMsg): Promise<"taken" | "skipped" | "withdrawn" | "closed"> {
    let seq: number;
    let value: unknown;
    try {
      ({ seq, value } = decodeWire(message.data, message.subject));
    } catch (err) {
      if (!(err instanceof CorruptDataError)) throw err;
      this.counts.corrupt++;
      message.term();
      this.#o.warn(`remote channel "${this.#o.channel}": stream message ${message.seq} was terminated, never delivered: ${err.message}`);
      return "skipped";
    }
    const sender = senderOfSubject(message.subject);
    if (this.#o.check.isDuplicate(sender, seq)) {
      this.#ack(message);
      return "skipped";
    }
    const local = this.#o.local;
    this.#offering = message;
    const offered = performance.now();
    try {
      if (!local.trySend(value)) await local.send(value, { timeout: this.#o.hold, signal: this.#stop.signal });
    } catch (err) {
      this.#offering = undefined;
      this.#held.unshift(message); // withdrawn: nobody received it
      if (err instanceof ChannelClosedError) return "closed";
      if (err instanceof TimeoutError || this.#stop.signal.aborted) return "withdrawn";
      throw err;
    }
    const waited = performance.now() - offered;
    this.#offering = undefined;
    this.#o.check.delivered(sender, seq);
    this.counts.delivered++;
    if (message.redelivered) this.counts.redelivered++;
    this.#ack(message);
    // Taken at once: a receiver was waiting, so pulling one at a time is what it waits for; pull more ahead.
    // Taken late: the receivers are the slower side; hold less for them.
    if (waited < QUICK_TAKE_MS) this.#credit = Math.min(this.#o.window, this.#credit * 2);
    else if (waited > this.#o.hold / 2) this.#credit = Math.max(1, this.#credit >> 1);
    return "taken";
  }

  /** Acknowledges with confirmation, retrying through broker trouble, in the background. */
  #ack(message: JsMsg): void {
    message.ackAck({ timeout: this.#o.ackTimeout }).then(
      () => {},
      () => void this.#retryAck(message),
    );
  }

  async #retryAck(message: JsMsg): Promise<void> {
    const reply = (message as unknown as { reply?: string }).reply;
    for (let attempt = 0; reply && attempt < 8; attempt++) {
      await sleep(backoff(attempt, 2000));
      try {
        await this.#o.nc.request(reply, "+ACK", { timeout: this.#o.ackTimeout });
        return;
      } catch {
        // try again
      }
    }
    this.counts.acksUnconfirmed++;
  }

  #pull(): void {
    if (this.#mode !== "active" || this.#finished || this.#stop.signal.aborted) return;
    const wait = this.#fetchPausedUntil - performance.now();
    if (wait > 0) {
      setTimeout(() => this.wake(), wait);
      return;
    }
    while (this.#fetches < 2) {
      const want = this.#credit - this.#held.length - this.#requested - (this.#offering ? 1 : 0);
      if (want <= 0) return;
      void this.#fetch(want);
    }
  }

  async #fetch(count: number): Promise<void> {
    this.#fetches++;
    this.#requested += count;
    let arrived = 0;
    try {
      const messages = await this.#o.consumer.fetch({ max_messages: count, expires: FETCH_EXPIRES_MS });
      for await (const message of messages) {
        arrived++;
        this.#requested--;
        this.#arrive(message);
      }
      this.#fetchFailures = 0;
    } catch {
      // broker trouble (restart, leader election, consumer gone): pause, then pull again
      this.#fetchPausedUntil = performance.now() + backoff(this.#fetchFailures++);
    } finally {
      this.#requested -= count - arrived;
      this.#fetches--;
      this.wake();
    }
  }

  #arrive(message: JsMsg): void {
    if (this.#finished) {
      this.#release(message);
    } else if (this.#mode === "idle" || this.#stop.signal.aborted) {
      this.#parked.push(message);
    } else {
      this.#held.push(message);
      this.wake();
    }
  }

  #goIdle(): void {
    this.#mode = "idle";
    this.#parked.push(...this.#held);
    this.#held = [];
  }

  #releaseParkedIfNoFetch(): void {
    if (this.#fetches > 0) return;
    const parked = this.#parked;
    this.#parked = [];
    for (const message of parked) this.#release(message);
  }

  #releaseAll(): void {
    const all = [...this.#held, ...this.#parked];
    if (this.#offering) all.push(this.#offering);
    this.#held = [];
    this.#parked = [];
    this.#offering = undefined;
    for (const message of all) this.#release(message);
  }

  #release(message: JsMsg): void {
    this.counts.released++;
    message.nak();
  }

  /** Tells the broker that messages held here are still being worked on (so it does not redeliver them after ackWait). */
  #working(): void {
    for (const message of this.#held) message.working();
    for (const message of this.#parked) message.working();
    this.#offering?.working();
  }

  /** Whether the channel is closed and drained: the send side closed, nothing held here, nothing left in the stream. */
  async #drainedNow(): Promise<boolean> {
    if (!this.#o.sendClosed() || this.#held.length > 0 || this.#parked.length > 0 || this.#offering) return false;
    const now = performance.now();
    if (now - this.#lastDrainCheck < 50) return false; // a wake-up storm must not flood the broker with requests
    this.#lastDrainCheck = now;
    try {
      const info = await this.#o.jsm.streams.info(this.#o.stream);
      return info.state.messages === 0;
    } catch {
      return false;
    }
  }

  #sleepOrWake(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#wakeUp = undefined;
        resolve();
      }, ms);
      this.#wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
