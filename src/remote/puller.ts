/**
 * Pull requests to a JetStream pull consumer on one long-lived inbox (the
 * protocol of `$JS.API.CONSUMER.MSG.NEXT`, spoken directly), instead of the
 * client's `fetch()`, which makes an inbox per batch and drops it when its
 * own timer says the batch has expired:
 *
 * - A message the broker sent for a request whose client-side timer had
 *   already run out (a slow link, a short partition) still arrives here
 *   and is offered. With `fetch()` it went to an inbox nobody listened to,
 *   and the broker redelivered it only after `ackWait` (30 s by default), out
 *   of order.
 * - Everything arrives on one subscription, in the order the broker sends
 *   it, however many requests are open: no reordering between batches,
 *   and a new request can be open before the last one is fulfilled.
 *
 * Requests are served by the broker in the order made. Each has a batch
 * (messages) and an expiry; the broker answers an expired one with status
 * 408 and the number of messages it did not deliver (Nats-Pending-Messages).
 * A request the broker forgot (it restarted) is dropped locally a while
 * after its expiry.
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";

/** One message delivered by the consumer, with what its acknowledgement subject says. */
export interface Delivery {
  subject: string;
  data: Uint8Array;
  /** The acknowledgement subject. */
  reply: string;
  /** The message's sequence number in the stream. */
  seq: number;
  /** How many times the consumer has delivered it (1: the first time). */
  deliveries: number;
}

interface Request {
  remaining: number;
  /** performance.now() after which, without a 408, the request counts as forgotten. */
  forgetAt: number;
}

export interface PullerOptions {
  nc: NatsConnection;
  stream: string;
  consumer: string;
  deliver(delivery: Delivery): void;
  /** A request ended without filling its batch (expired, or refused: consumer gone, too many waiting). */
  ended?(status: number, description: string): void;
}

/** How long after its expiry a request that got no 408 is taken as forgotten by the broker. */
const FORGET_AFTER_MS = 2000;

export class Puller {
  readonly #o: PullerOptions;
  readonly #inbox = createInbox();
  readonly #subject: string;
  readonly #sub: Subscription;
  readonly #open: Request[] = [];

  constructor(options: PullerOptions) {
    this.#o = options;
    this.#subject = `$JS.API.CONSUMER.MSG.NEXT.${options.stream}.${options.consumer}`;
    this.#sub = options.nc.subscribe(this.#inbox, { callback: (err, msg) => (err ? undefined : this.#arrived(msg)) });
  }

  /** Messages asked for by open requests and not yet delivered. */
  get requested(): number {
    this.#forgetExpired();
    let sum = 0;
    for (const request of this.#open) sum += request.remaining;
    return sum;
  }

  /** Open requests (not fulfilled, not expired). */
  get openRequests(): number {
    this.#forgetExpired();
    return this.#open.length;
  }

  /** Asks for up to `batch` messages within `expiresMs`. */
  pull(batch: number, expiresMs: number): void {
    this.#open.push({ remaining: batch, forgetAt: performance.now() + expiresMs + FORGET_AFTER_MS });
    this.#o.nc.publish(this.#subject, JSON.stringify({ batch, expires: expiresMs * 1_000_000 }), { reply: this.#inbox });
  }

  /** Takes every open request as gone (after a reconnection: a restarted server forgot them; late deliveries still arrive here). */
  forgetAll(): void {
    this.#open.length = 0;
  }

  /** Stops listening (after every request has ended: later deliveries would wait for ackWait). */
  close(): void {
    this.#sub.unsubscribe();
  }

  #arrived(msg: Msg): void {
    const code = msg.headers?.code ?? 0;
    if (code !== 0 && msg.data.length === 0) {
      // A status: 100 idle heartbeat; 404/408 the oldest request ended with Nats-Pending-Messages undelivered; 409 refused.
      if (code === 100) return;
      const ended = this.#open.shift();
      if (ended && code !== 404 && code !== 408) this.#o.ended?.(code, msg.headers?.description ?? "");
      else if (ended) this.#o.ended?.(code, "");
      return;
    }
    const head = this.#open[0];
    if (head && --head.remaining <= 0) this.#open.shift();
    const delivery = parseAckSubject(msg);
    if (delivery) this.#o.deliver(delivery);
  }

  #forgetExpired(): void {
    const now = performance.now();
    while (this.#open.length > 0 && this.#open[0]!.forgetAt < now) this.#open.shift();
  }
}

/**
 * Reads the stream sequence and delivery count from the acknowledgement
 * subject: `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
 * (and the newer form with a domain and an account hash in front: 12 tokens or more).
 */
function parseAckSubject(msg: Msg): Delivery | undefined {
  const reply = msg.reply;
  if (!reply || !reply.startsWith("$JS.ACK.")) return undefined;
  const tokens = reply.split(".");
  const at = tokens.length === 9 ? 4 : tokens.length >= 12 ? 6 : -1;
  if (at < 0) return undefined;
  return { subject: msg.subject, data: msg.data, reply, deliveries: Number(tokens[at]), seq: Number(tokens[at + 1]) };
}
