/**
 * The receive pump of one connected channel, in the bridge: pulls messages
 * from the channel's durable consumer and offers each to this process's
 * receivers on the local rendezvous channel `local`, then acknowledges it.
 *
 * One message: pulled (the broker now counts it as pending for this
 * process) → offered: an async `send` on the capacity-0 local channel, which
 * puts it in the ring and completes when a local receiver has taken it →
 * taken (that receiver's `recv` returns it) → acknowledged (an
 * acknowledgement with a reply subject: the broker deletes the message and
 * confirms; retried in the background, RecvCounts.acksUnconfirmed when it
 * never is). If this
 * process dies before the acknowledgement, the broker redelivers the message
 * to another receiver after `ackWait` (at-least-once). A message this
 * process has handed over already, delivered again, is acknowledged and
 * dropped by the per-sender sequence check (sequence-check.ts).
 *
 * Several offers are pending at once (they queue in the ring in stream
 * order, and the receivers take them in that order), so a receiver that
 * comes back for the next message finds it there: no wake-up of the bridge
 * per message. But each is still an offer, not a buffer: the pump knows
 * exactly which messages were taken (their `send` completed), and can
 * withdraw the others, which nobody then receives.
 *
 * Two modes:
 *
 * - **active**: some local receiver wants messages. The pump keeps up to
 *   `credit` messages pulled or offered; `credit` starts at START_CREDIT
 *   (at most `window`) and doubles, up to `window`, each time an offer is
 *   taken within QUICK_TAKE_MS (the receivers were waiting for the pump),
 *   and halves, down to 1, when one waited more than `hold` / 2. When
 *   offers are pending and none was taken for `hold` ms, all are withdrawn
 *   and the pump goes idle.
 * - **idle**: no local receiver is waiting. What was pulled is released
 *   (nak: the broker offers it to other processes at once), once no pull
 *   request of ours is open (releasing earlier could hand it straight back
 *   to our own open request). The pump polls the local channel's waiting
 *   receivers (1 ms doubling to IDLE_POLL_CAP_MS) and goes active when one
 *   waits.
 *
 * So a process that stops receiving keeps other processes' messages for at
 * most `hold` ms plus one pull request's expiry, and a message is offered in
 * this process only while its receivers take messages. Pull requests go out
 * on one inbox of the pump's own (puller.ts).
 *
 * Closing: when the send side is closed (every remote sender gone) and the
 * consumer has nothing left to deliver and nothing unacknowledged anywhere
 * (drainedNow), the pump closes its local send handle: local receivers then
 * get ChannelClosedError.
 */
import { setMaxListeners } from "node:events";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { ChannelClosedError, CorruptDataError, type SendChannel } from "../core.js";
import { CONSUMER_NAME, senderOfSubject } from "./naming.js";
import type { SequenceCheck } from "./sequence-check.js";
import { decodeWire } from "./wire.js";
import { Puller, type Delivery } from "./puller.js";
import { backoff, sleep } from "./timing.js";

export const IDLE_POLL_CAP_MS = 25;
/** How long one pull request waits for messages. */
const PULL_EXPIRES_MS = 1000;
/** While active, how often the loop looks at the channel when nothing else wakes it. */
const LOOK_EVERY_MS = 250;
/**
 * Offers pending at once. Enough that a receiver coming back finds the next
 * message there; few, because this thread's pending async operations are
 * all re-attempted on every wake-up of the thread (waiting.ts), one per take.
 */
const MAX_OFFERS = 16;
/**
 * An offer taken within this many ms found a receiver waiting, or about to
 * be (a woken receiver may wait several ms for a core on a loaded machine).
 */
const QUICK_TAKE_MS = 10;
/**
 * Messages pulled ahead when a receiver starts waiting: enough that a pull
 * request is always open at the broker (a message published while none is
 * waits for the next, a round trip), few enough not to hoard.
 */
const START_CREDIT = 8;

export interface RecvPumpOptions {
  nc: NatsConnection;
  jsm: JetStreamManager;
  stream: string;
  channel: string;
  local: SendChannel<unknown>;
  /** Most messages pulled or offered ahead of the local receivers. */
  window: number;
  /** Milliseconds pending offers wait without any being taken before the pump withdraws them and goes idle. */
  hold: number;
  ackWait: number;
  ackTimeout: number;
  check: SequenceCheck;
  /** Bounded channels: where to announce, after each acknowledgement, that the stream has room. */
  roomSubject?: string;
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

interface Offer {
  sender: string;
  seq: number;
  at: number;
  /** How it ended: taken by a receiver, or withdrawn (its error); pending while neither. */
  outcome?: { taken: true; at: number } | { taken: false; error: unknown };
}

type Mode = "idle" | "active";

/** The reason pending offers are aborted with when the pump withdraws them. */
const WITHDRAW = new Error("withdrawn by the bridge");

export class RecvPump {
  readonly #o: RecvPumpOptions;
  readonly counts: RecvCounts = { delivered: 0, redelivered: 0, released: 0, corrupt: 0, acksUnconfirmed: 0 };
  #mode: Mode = "idle";
  #finished = false;
  /** Pulled while idle, or withdrawn: released (nak) when no pull request of ours is open. */
  #parked: Delivery[] = [];
  /** Pulled while active, waiting for a free offer slot (at most MAX_OFFERS are offered at once). */
  #held: Delivery[] = [];
  /** Offered on the local channel, not yet taken. */
  readonly #offers = new Map<Delivery, Offer>();
  /** "<sender>:<seq>" of every pending offer (the same message stored twice is offered once). */
  readonly #offeredKeys = new Set<string>();
  #withdraw = new AbortController();
  /** When the pending offers last made progress (one was taken, or the first was made). */
  #progressAt = 0;
  #localClosed = false;
  readonly #puller: Puller;
  #pullFailures = 0;
  #pullPausedUntil = 0;
  #credit = START_CREDIT;
  readonly #stop = new AbortController();
  #wakeUp: (() => void) | undefined;
  #lastDrainCheck = 0;

  constructor(options: RecvPumpOptions) {
    this.#o = options;
    this.#puller = new Puller({
      nc: options.nc,
      stream: options.stream,
      consumer: CONSUMER_NAME,
      deliver: (delivery) => {
        this.#pullFailures = 0;
        this.#arrive(delivery);
      },
      ended: (status, description) => {
        if (description) {
          // Refused (409: consumer deleted, too many waiting requests, ...): pause before asking again.
          this.#pullPausedUntil = performance.now() + backoff(this.#pullFailures++);
        }
        this.#pull();
        this.wake();
      },
    });
  }

  /** What the pump is doing now (diagnostics). */
  inside(): { mode: Mode; credit: number; offers: number; held: number; parked: number; requested: number } {
    return { mode: this.#mode, credit: this.#credit, offers: this.#offers.size, held: this.#held.length, parked: this.#parked.length, requested: this.#puller.requested };
  }

  /** Something changed (the channel's state, an offer settled): the loop looks again. */
  wake(): void {
    const wakeUp = this.#wakeUp;
    this.#wakeUp = undefined;
    wakeUp?.();
  }

  /** The connection came back: a restarted server has forgotten our open pull requests, so ask again now. */
  reconnected(): void {
    this.#puller.forgetAll();
    this.#pull();
    this.wake();
  }

  /** Every receiver everywhere is gone, or this member was evicted: stop and release everything. */
  stopRemotely(): void {
    this.#stop.abort();
    this.#withdraw.abort(WITHDRAW);
    this.wake();
  }

  async run(): Promise<RecvOutcome> {
    const tick = setInterval(() => this.#tick(), Math.max(50, Math.min(this.#o.hold / 4, this.#o.ackWait / 3)));
    try {
      for (;;) {
        if (this.#stop.signal.aborted) return "closed-remotely";
        if (this.#mode === "idle") {
          const why = await this.#idle();
          if (why !== "demand") return why;
          this.#goActive();
          continue;
        }
        await this.#sleepOrWake(LOOK_EVERY_MS);
        if (this.#localClosed) return "closed-locally";
        if (this.#withdraw.signal.aborted) {
          if (this.#offers.size === 0) this.#goIdle();
          continue;
        }
        if (this.#offers.size === 0 && this.#o.local.stats().receivers === 0) return "closed-locally";
        if (await this.#drainedNow()) return "drained";
        this.#pull();
      }
    } finally {
      clearInterval(tick);
      this.#finished = true;
      this.#withdraw.abort(WITHDRAW);
      // Withdrawn offers settle (and are released) in a later microtask; closing
      // the local end afterwards keeps a withdrawal from turning into ChannelClosedError.
      await this.#offersSettled();
      this.#parked.push(...this.#held);
      this.#held = [];
      this.#releaseParked(true);
      this.#o.local.close();
      // Our open requests may still deliver: listen until they end (arrivals are released), then stop.
      while (this.#puller.openRequests > 0) await this.#sleepOrWake(50);
      this.#puller.close();
    }
  }

  /** Waits for a local receiver to wait. */
  async #idle(): Promise<RecvOutcome | "demand"> {
    let delay = 1;
    for (;;) {
      if (this.#stop.signal.aborted) return "closed-remotely";
      this.#releaseParked(false);
      const stats = this.#o.local.stats();
      if (stats.receivers === 0) return "closed-locally";
      if (stats.waitingReceivers > 0) return "demand";
      if (await this.#drainedNow()) return "drained";
      await this.#sleepOrWake(delay);
      delay = Math.min(IDLE_POLL_CAP_MS, delay * 2);
    }
  }

  #goActive(): void {
    this.#mode = "active";
    this.#credit = Math.min(this.#o.window, START_CREDIT);
    this.#withdraw = new AbortController();
    setMaxListeners(MAX_OFFERS + 2, this.#withdraw.signal); // one listener per pending offer
    this.#pull();
  }

  #goIdle(): void {
    this.#mode = "idle";
    this.#parked.push(...this.#held);
    this.#held = [];
  }

  /** Every interval: keeps held messages from being redelivered, and withdraws offers nobody takes. */
  #tick(): void {
    for (const message of this.#parked) this.#tell(message, "+WPI");
    for (const message of this.#held) this.#tell(message, "+WPI");
    for (const message of this.#offers.keys()) this.#tell(message, "+WPI");
    if (this.#mode === "active" && this.#offers.size > 0 && performance.now() - this.#progressAt > this.#o.hold) {
      this.#withdraw.abort(WITHDRAW);
      this.wake();
    }
  }

  #arrive(message: Delivery): void {
    if (this.#finished) this.#release(message);
    else if (this.#mode === "idle" || this.#withdraw.signal.aborted) this.#parked.push(message);
    else if (this.#offers.size >= MAX_OFFERS || this.#held.length > 0) this.#held.push(message); // behind those already waiting
    else this.#offer(message);
  }

  /** Offers held messages while there are free offer slots. */
  #offerHeld(): void {
    while (this.#held.length > 0 && this.#offers.size < MAX_OFFERS && this.#mode === "active" && !this.#withdraw.signal.aborted && !this.#finished) {
      this.#offer(this.#held.shift()!);
    }
  }

  #offer(message: Delivery): void {
    let seq: number;
    let value: unknown;
    try {
      ({ seq, value } = decodeWire(message.data, message.subject));
    } catch (err) {
      if (!(err instanceof CorruptDataError)) throw err;
      this.counts.corrupt++;
      this.#tell(message, "+TERM");
      this.#o.warn(`remote channel "${this.#o.channel}": stream message ${message.seq} was terminated, never delivered: ${err.message}`);
      return;
    }
    const sender = senderOfSubject(message.subject);
    const key = `${sender}:${seq}`;
    if (this.#offeredKeys.has(key) || this.#o.check.isDuplicate(sender, seq)) {
      this.#ack(message);
      return;
    }
    const now = performance.now();
    if (this.#offers.size === 0) this.#progressAt = now;
    this.#offers.set(message, { sender, seq, at: now });
    this.#offeredKeys.add(key);
    this.#o.local.send(value, { signal: this.#withdraw.signal }).then(
      () => this.#taken(message),
      (err: unknown) => this.#notTaken(message, err),
    );
  }

  #taken(message: Delivery): void {
    this.#offers.get(message)!.outcome = { taken: true, at: performance.now() };
    this.#settleInOrder();
  }

  #notTaken(message: Delivery, err: unknown): void {
    this.#offers.get(message)!.outcome = { taken: false, error: err };
    this.#settleInOrder();
  }

  /**
   * Settles offers from the oldest while they have an outcome. Receivers take
   * offers in the order they were made (the ring's), but the sends' promises
   * may settle in another order; the bookkeeping (the sequence check, acks,
   * order counts) follows the order of the takes.
   */
  #settleInOrder(): void {
    for (const [message, offer] of this.#offers) {
      const outcome = offer.outcome;
      if (!outcome) break;
      this.#offers.delete(message);
      this.#offeredKeys.delete(`${offer.sender}:${offer.seq}`);
      if (outcome.taken) {
        this.#o.check.delivered(offer.sender, offer.seq);
        this.counts.delivered++;
        if (message.deliveries > 1) this.counts.redelivered++;
        this.#ack(message);
        this.#progressAt = outcome.at;
        // Taken at once: the receivers wait for the pump, so pull further ahead.
        // Taken late: the receivers are the slower side; hold less for them.
        const waited = outcome.at - offer.at;
        if (waited < QUICK_TAKE_MS) this.#credit = Math.min(this.#o.window, this.#credit * 2);
        else if (waited > this.#o.hold / 2) this.#credit = Math.max(1, this.#credit >> 1);
      } else {
        this.#parked.push(message); // withdrawn: nobody received it
        if (outcome.error instanceof ChannelClosedError) this.#localClosed = true;
        else if (outcome.error !== WITHDRAW) this.#o.warn(`remote channel "${this.#o.channel}": offering a message failed: ${(outcome.error as Error).message}`);
        this.wake();
      }
    }
    if (this.#offers.size === 0) this.#settledWaiter?.();
    this.#offerHeld();
    this.#pull();
  }

  #settledWaiter: (() => void) | undefined;
  #offersSettled(): Promise<void> {
    if (this.#offers.size === 0) return Promise.resolve();
    return new Promise((resolve) => (this.#settledWaiter = resolve));
  }

  /** Tells the broker about a message: "+WPI" still working on it, "-NAK" give it to someone else, "+TERM" never deliver it again. */
  #tell(message: Delivery, what: "+WPI" | "-NAK" | "+TERM"): void {
    try {
      this.#o.nc.publish(message.reply, what);
    } catch {
      // the connection is closed: the broker will redeliver after ackWait
    }
  }

  /** Acknowledges with confirmation (the broker answers an acknowledgement that has a reply subject), retrying through broker trouble, in the background. */
  #ack(message: Delivery): void {
    void this.#ackConfirmed(message);
  }

  async #ackConfirmed(message: Delivery): Promise<void> {
    for (let attempt = 0; attempt < 8; attempt++) {
      if (attempt > 0) await sleep(backoff(attempt, 2000));
      try {
        await this.#o.nc.request(message.reply, "+ACK", { timeout: this.#o.ackTimeout });
        if (this.#o.roomSubject) this.#o.nc.publish(this.#o.roomSubject); // the message is deleted: a waiting sender may go on
        return;
      } catch {
        // try again
      }
    }
    this.counts.acksUnconfirmed++;
  }

  #pull(): void {
    if (this.#mode !== "active" || this.#finished || this.#withdraw.signal.aborted) return;
    const wait = this.#pullPausedUntil - performance.now();
    if (wait > 0) {
      setTimeout(() => this.#pull(), wait);
      return;
    }
    const requested = this.#puller.requested;
    if (this.#puller.openRequests >= 2) return;
    const want = this.#credit - this.#held.length - this.#offers.size - requested;
    // Ask in batches (a quarter of the credit at least), unless nothing at all is asked for.
    if (want <= 0 || (requested > 0 && want < this.#credit / 4)) return;
    this.#puller.pull(want, PULL_EXPIRES_MS);
  }

  /** Releases parked messages to other processes, once no pull request of ours is open (or at the end, whatever). */
  #releaseParked(finally_: boolean): void {
    if (this.#puller.openRequests > 0 && !finally_) return;
    const parked = this.#parked.sort((a, b) => a.seq - b.seq);
    this.#parked = [];
    for (const message of parked) this.#release(message);
  }

  #release(message: Delivery): void {
    this.counts.released++;
    this.#tell(message, "-NAK");
  }

  /**
   * Whether the channel is closed and drained: the send side closed, nothing
   * held here, and the consumer has nothing left to deliver (num_pending) and
   * nothing delivered awaiting acknowledgement anywhere (num_ack_pending).
   * The consumer's counts, not the stream's: after a crash of a 2.9 server,
   * a work-queue stream can keep messages the consumer has already had
   * acknowledged (their deletions were not on disk yet), which would never
   * be delivered again.
   */
  async #drainedNow(): Promise<boolean> {
    if (!this.#o.sendClosed() || this.#parked.length > 0 || this.#held.length > 0 || this.#offers.size > 0) return false;
    const now = performance.now();
    if (now - this.#lastDrainCheck < 50) return false; // a wake-up storm must not flood the broker with requests
    this.#lastDrainCheck = now;
    let info;
    try {
      info = await this.#o.jsm.consumers.info(this.#o.stream, CONSUMER_NAME);
    } catch {
      return false;
    }
    if (this.#offers.size > 0 || this.#parked.length > 0 || this.#held.length > 0) return false;
    if (info.num_pending === 0 && info.num_ack_pending === 0) return true;
    return this.#onlyGhostsPending(info, now);
  }

  #ghostPrint = "";
  #ghostSince = 0;
  /**
   * After a crash, a 2.9 consumer can keep entries "awaiting
   * acknowledgement" for messages it never redelivers (nats-server issues
   * #6093, #7680): the channel would never drain. Such entries are taken as
   * gone when nothing else is left to deliver, a pull request is waiting
   * (so a real pending message would have been redelivered), and the
   * consumer's counts have not moved for two ackWaits and a hold: in this
   * protocol a message is pending only while offered (at most `hold`), or
   * until ackWait after its receiver died.
   */
  #onlyGhostsPending(info: { num_pending: number; num_ack_pending: number; num_waiting: number; delivered: { consumer_seq: number }; ack_floor: { consumer_seq: number } }, now: number): boolean {
    if (info.num_pending !== 0 || info.num_waiting === 0) {
      this.#ghostPrint = "";
      return false;
    }
    const print = `${info.num_ack_pending}/${info.delivered.consumer_seq}/${info.ack_floor.consumer_seq}`;
    if (print !== this.#ghostPrint) {
      this.#ghostPrint = print;
      this.#ghostSince = now;
      return false;
    }
    const stuckFor = now - this.#ghostSince;
    if (stuckFor < 2 * this.#o.ackWait + this.#o.hold + PULL_EXPIRES_MS) return false;
    this.#o.warn(
      `remote channel "${this.#o.channel}": the broker reports ${info.num_ack_pending} message(s) awaiting acknowledgement that it has not redelivered for ${Math.round(stuckFor)} ms while nothing else is left (a known nats-server fault after a crash); taking the channel as drained`,
    );
    return true;
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
