/**
 * A seeded discrete-event simulation of a lab run: p producers, one
 * channel (capacity, overflow policy), C consumers, with the same rules
 * as the real run (party.ts) and the channel's contract:
 *
 * - a producer makes a message (a gap drawn from --arrival), then sends
 *   it. Room: fewer than `capacity` buffered, or at capacity 0 a consumer
 *   waiting in recv (it takes the message at once). No room: "wait"
 *   blocks the producer, holding its message, until a consumer makes room
 *   (blocked producers are served first come, first served);
 *   "drop-newest" and "error" lose the message; "drop-oldest" loses the
 *   oldest buffered one and buffers the new one.
 * - with "wait", the next gap starts when the send completes (the tandem
 *   line); with the others, gaps follow a fixed schedule (Poisson arrivals
 *   when exponential), since a send never waits.
 * - a consumer takes the oldest buffered message (or a blocked producer's
 *   at capacity 0), works on it (--service), and takes the next.
 *
 * It checks the formulas of theory.ts (test/lab-theory.test.ts), and gives
 * the lab a prediction where theory has none (bursts, constant with
 * exponential times): `simulatedThroughput` beside the measurement.
 */
import { type Arrival, gapSampler, type Service, serviceSampler } from "./distributions.js";
import { mulberry32, partySeed } from "./random.js";

export interface SimulationOptions {
  producers: number;
  consumers: number;
  capacity: number;
  overflow: "wait" | "drop-newest" | "drop-oldest" | "error";
  arrival: Arrival;
  service: Service;
  /** Messages taken by consumers before the measurement starts. */
  warmup: number;
  /** Messages taken by consumers while measuring. */
  messages: number;
  seed: number;
}

export interface SimulationResult {
  /** Messages taken per second. */
  throughput: number;
  /** Time-average of messages buffered plus held by blocked producers. */
  meanWaiting: number;
  /** Time-average of messages buffered. */
  meanBuffered: number;
  /** Mean ms from a message's send to its receive. */
  meanWaitMs: number;
  /** Fraction of producer time spent blocked in send. */
  blockedFraction: number;
  /** Fraction of messages sent that were lost to the overflow policy. */
  lossFraction: number;
}

/**
 * Pending events: each producer has at most one (its next message is
 * ready), each consumer at most one (its work is done), so a scan of
 * p + C slots finds the next (ties: the earlier scheduled).
 */
class EventSlots {
  readonly at: Float64Array;
  readonly order: Float64Array;
  private count = 0;
  constructor(readonly producers: number, consumers: number) {
    this.at = new Float64Array(producers + consumers).fill(Infinity);
    this.order = new Float64Array(producers + consumers);
  }
  /** Slot `i`: producer i, or consumer i - producers. */
  schedule(slot: number, at: number): void {
    this.at[slot] = at;
    this.order[slot] = this.count++;
  }
  /** The slot of the next event (and clears it), or -1. */
  next(): number {
    let best = -1;
    for (let i = 0; i < this.at.length; i++) {
      const at = this.at[i]!;
      if (at === Infinity) continue;
      if (best < 0 || at < this.at[best]! || (at === this.at[best]! && this.order[i]! < this.order[best]!)) best = i;
    }
    return best;
  }
}

/** A FIFO of numbers (send times), amortised O(1) at both ends. */
class Fifo {
  private items = new Float64Array(64);
  private head = 0;
  length = 0;
  push(value: number): void {
    if (this.length === this.items.length) {
      const bigger = new Float64Array(this.items.length * 2);
      for (let i = 0; i < this.length; i++) bigger[i] = this.items[(this.head + i) % this.items.length]!;
      this.items = bigger;
      this.head = 0;
    }
    this.items[(this.head + this.length) % this.items.length] = value;
    this.length++;
  }
  shift(): number {
    const value = this.items[this.head]!;
    this.head = (this.head + 1) % this.items.length;
    this.length--;
    return value;
  }
}

/** Runs the simulation (times in ms) until `warmup + messages` messages have been taken. */
export function simulate(options: SimulationOptions): SimulationResult {
  const { producers, consumers, capacity, overflow } = options;
  const gaps = Array.from({ length: producers }, (_, i) => gapSampler(options.arrival, mulberry32(partySeed(options.seed, 0, 1, i))));
  const services = Array.from({ length: consumers }, (_, i) => serviceSampler(options.service, mulberry32(partySeed(options.seed, 0, 2, i))));
  const events = new EventSlots(producers, consumers);
  const buffer = new Fifo(); // send times of buffered messages, oldest first
  const blocked: Array<{ producer: number; sentAt: number }> = [];
  const idleConsumers: number[] = [];
  const due = new Float64Array(producers);
  let now = 0;
  let taken = 0;
  // Measurement (from the warmup-th take on).
  let measuring = false;
  let start = 0;
  let lastChange = 0;
  let waitingArea = 0;
  let bufferedArea = 0;
  let blockedArea = 0;
  let waitSum = 0;
  let waitCount = 0;
  let sent = 0;
  let lost = 0;
  const account = (): void => {
    if (measuring) {
      const dt = now - lastChange;
      waitingArea += dt * (buffer.length + blocked.length);
      bufferedArea += dt * buffer.length;
      blockedArea += dt * blocked.length;
    }
    lastChange = now;
  };
  const nextReady = (producer: number, sendDone: number): void => {
    const gap = gaps[producer]!();
    due[producer] = (overflow === "wait" ? sendDone : due[producer]!) + gap;
    events.schedule(producer, due[producer]!);
  };
  const take = (consumer: number, sentAt: number): void => {
    taken++;
    if (!measuring && taken > options.warmup) {
      measuring = true;
      start = now;
      lastChange = now;
    } else if (measuring) {
      waitSum += now - sentAt;
      waitCount++;
    }
    events.schedule(producers + consumer, now + services[consumer]!());
  };
  for (let c = 0; c < consumers; c++) idleConsumers.push(c);
  for (let p = 0; p < producers; p++) nextReady(p, 0);

  const target = options.warmup + options.messages;
  while (taken < target) {
    const slot = events.next();
    if (slot < 0) break;
    now = events.at[slot]!;
    events.at[slot] = Infinity;
    account();
    if (slot < producers) {
      const producer = slot;
      if (measuring) sent++;
      if (idleConsumers.length > 0) {
        take(idleConsumers.shift()!, now);
        nextReady(producer, now);
      } else if (capacity === Infinity || buffer.length < capacity) {
        buffer.push(now);
        nextReady(producer, now);
      } else if (overflow === "wait") {
        blocked.push({ producer, sentAt: now });
      } else {
        if (measuring) lost++;
        if (overflow === "drop-oldest" && capacity > 0) {
          buffer.shift();
          buffer.push(now);
        }
        nextReady(producer, now);
      }
    } else {
      const consumer = slot - producers;
      if (buffer.length > 0) {
        take(consumer, buffer.shift()!);
        // Room for the first blocked producer's message.
        const next = blocked.shift();
        if (next) {
          buffer.push(next.sentAt);
          nextReady(next.producer, now);
        }
      } else if (blocked.length > 0) {
        // Capacity 0: the consumer takes a blocked producer's message directly.
        const next = blocked.shift()!;
        take(consumer, next.sentAt);
        nextReady(next.producer, now);
      } else {
        idleConsumers.push(consumer);
      }
    }
  }
  const elapsed = now - start;
  return {
    throughput: (1000 * (taken - options.warmup)) / elapsed,
    meanWaiting: waitingArea / elapsed,
    meanBuffered: bufferedArea / elapsed,
    meanWaitMs: waitCount > 0 ? waitSum / waitCount : 0,
    blockedFraction: blockedArea / elapsed / producers,
    lossFraction: sent > 0 ? lost / sent : 0,
  };
}
