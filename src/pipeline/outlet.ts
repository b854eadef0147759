/**
 * The sending side of a hop: what the source reader (main thread) and each
 * worker use to hand items to the next stage, to the pipeline's output
 * window, or to the user's sink.
 *
 * Items are buffered here and leave as batches: one channel message carries
 * up to `batch` items as `[indices, values]`, where `indices` (the items'
 * positions in the source, kept for errors) is the first index when they
 * are consecutive, else a Float64Array. Before a batch is sent, one credit
 * per item is taken from the target's slot in the control block (see
 * control.ts): that is the backpressure, counted in items. With a lossy
 * `overflow` ("drop-newest", "drop-oldest", "error") items travel one per
 * message and a sender that finds no credit never waits: it drops the item,
 * drops the oldest waiting one (taking its message out of the queue), or
 * fails, as the policy says; drops are counted in the target's DROPPED.
 */
import { ChannelClosedError, ChannelFullError, type RecvChannel, type SendChannel } from "../index.js";
import { type Control, DROPPED, EVICTED, SENT } from "./control.js";
import type { Overflow } from "./stage.js";

/** Where a hop leads; sent to workers as is (its channel ends move there). */
export interface OutletSpec {
  kind: "stage" | "output" | "sink";
  /** Credit slot of the target (stage index, or the output window's); -1 for a sink. */
  slot: number;
  /** The target's name, for errors. */
  name: string;
  /** One shared channel, or one per worker of a keyed stage. */
  channels: SendChannel<unknown>[];
  /** Keyed stages: the property whose value picks the channel. */
  key?: string;
  overflow: Overflow;
  /** drop-oldest: receive ends of `channels`, to take the oldest waiting item out. */
  evict?: RecvChannel<unknown>[];
  /** Most items in one message. */
  batch: number;
}

/** A batch message on a stage's input channel: indices (first index when consecutive) and values. */
export type BatchMessage = [number | Float64Array, unknown[]];

/** Thrown by a flush when a stage with overflow "error" is full. */
export class IntakeFull extends Error {
  constructor(readonly target: string, readonly index: number, readonly value: unknown) {
    super(`stage "${target}" is full (overflow "error"): item ${index} was refused`);
  }
}

/** Thrown by a flush that was waiting for credits when the pipeline was cancelled. */
export class Cancelled extends Error {
  constructor() {
    super("the pipeline was cancelled");
  }
}

/** Thrown by a flush when every worker of the target stage has stopped taking items: stop sending. */
export class DownstreamClosed extends Error {
  constructor(readonly target: string) {
    super(`stage "${target}" stopped taking items`);
  }
}

/** Receives notice when the outlet starts and stops waiting for room (statistics). */
export interface WaitObserver {
  waiting(): void;
  resumed(): void;
}

interface Group {
  values: unknown[];
  indices: number[];
  contiguous: boolean;
}

function newGroup(): Group {
  return { values: [], indices: [], contiguous: true };
}

/** 32-bit FNV-1a of a string: the same key always picks the same worker. */
function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The worker (0..workers-1) that handles key `value`. */
export function workerForKey(value: unknown, workers: number): number {
  if (workers === 1) return 0;
  if (typeof value === "number" && Number.isInteger(value)) return ((value % workers) + workers) % workers;
  return hashString(typeof value === "string" ? value : typeof value === "bigint" ? `${value}n` : JSON.stringify(value) ?? String(value)) % workers;
}

export class Outlet {
  readonly spec: OutletSpec;
  readonly #control: Control;
  readonly #groups: Group[];
  readonly #observer: WaitObserver | undefined;
  #pending = 0;

  constructor(spec: OutletSpec, control: Control, observer?: WaitObserver) {
    this.spec = spec;
    this.#control = control;
    this.#observer = observer;
    this.#groups = spec.channels.map(newGroup);
  }

  /** Items buffered, not yet sent. */
  get pending(): number {
    return this.#pending;
  }

  /** True for targets whose items travel one per message without waiting (lossy overflow). */
  get lossy(): boolean {
    return this.spec.kind === "stage" && this.spec.overflow !== "wait";
  }

  /** The channel (index into spec.channels) item `value` goes to. */
  route(value: unknown): number {
    const key = this.spec.key;
    if (key === undefined) return 0;
    const keyValue = value !== null && typeof value === "object" ? (value as Record<string, unknown>)[key] : undefined;
    return workerForKey(keyValue, this.spec.channels.length);
  }

  /** Buffers `value` (from source position `index`) to be sent by the next flush. */
  push(value: unknown, index: number): void {
    const group = this.#groups[this.route(value)]!;
    const n = group.indices.length;
    if (n > 0 && group.indices[n - 1]! + 1 !== index) group.contiguous = false;
    group.values.push(value);
    group.indices.push(index);
    this.#pending++;
  }

  /**
   * Sends every buffered item, waiting (Atomics.wait) for credits of the
   * target as needed; a sink is sent to with its own sendSync. Throws
   * Cancelled if the pipeline is cancelled while waiting, IntakeFull for a
   * full stage with overflow "error", and whatever the channel throws.
   */
  flushSync(): void {
    if (this.#pending === 0) return;
    for (let g = 0; g < this.#groups.length; g++) {
      const group = this.#groups[g]!;
      if (group.values.length === 0) continue;
      this.#groups[g] = newGroup();
      this.#pending -= group.values.length;
      if (this.spec.kind === "sink") this.#toSinkSync(group.values);
      else if (this.lossy) this.#offerEach(g, group);
      else this.#sendWithCreditsSync(g, group);
    }
  }

  /** flushSync without blocking the thread. */
  async flushAsync(): Promise<void> {
    if (this.#pending === 0) return;
    for (let g = 0; g < this.#groups.length; g++) {
      const group = this.#groups[g]!;
      if (group.values.length === 0) continue;
      this.#groups[g] = newGroup();
      this.#pending -= group.values.length;
      if (this.spec.kind === "sink") await this.#toSinkAsync(group.values);
      else if (this.lossy) this.#offerEach(g, group);
      else await this.#sendWithCreditsAsync(g, group);
    }
  }

  #sendWithCreditsSync(g: number, group: Group): void {
    const { slot, batch } = this.spec;
    const total = group.values.length;
    for (let at = 0; at < total; ) {
      const want = Math.min(batch, total - at);
      const least = this.#least(want);
      let got = this.#control.tryTake(slot, want, least);
      if (got === 0) {
        this.#observer?.waiting();
        got = this.#control.takeSync(slot, want, least);
        this.#observer?.resumed();
        if (got === 0) throw this.#stopped();
      }
      this.#sendSlice(g, group, at, got);
      at += got;
    }
  }

  async #sendWithCreditsAsync(g: number, group: Group): Promise<void> {
    const { slot, batch } = this.spec;
    const total = group.values.length;
    for (let at = 0; at < total; ) {
      const want = Math.min(batch, total - at);
      const least = this.#least(want);
      let got = this.#control.tryTake(slot, want, least);
      if (got === 0) {
        this.#observer?.waiting();
        got = await this.#control.takeAsync(slot, want, least);
        this.#observer?.resumed();
        if (got === 0) throw this.#stopped();
      }
      this.#sendSlice(g, group, at, got);
      at += got;
    }
  }

  /**
   * The fewest credits worth sending `want` items with: half a batch (never
   * more than `want`). A batch of `batch` items never exceeds half the
   * target's credits, so this much always comes free in the end.
   */
  #least(want: number): number {
    return Math.min(want, Math.ceil(this.spec.batch / 2));
  }

  /** Sends `count` items of `group` from `at`, credits already taken for them. */
  #sendSlice(g: number, group: Group, at: number, count: number): void {
    const whole = at === 0 && count === group.values.length;
    const values = whole ? group.values : group.values.slice(at, at + count);
    let message: unknown;
    if (this.spec.kind === "output") message = values;
    else {
      let indices: number | Float64Array;
      if (group.contiguous) indices = group.indices[at]!;
      else indices = new Float64Array(whole ? group.indices : group.indices.slice(at, at + count));
      message = [indices, values] satisfies BatchMessage;
    }
    this.#put(g, message);
    if (this.spec.kind === "stage") this.#control.count(this.spec.slot, SENT, count);
    else this.#control.ringMain(); // the output collector waits on the main thread's doorbell, not on the channel
  }

  /**
   * Puts a message on channel `g`. Credits were taken, so the channel
   * (whose capacity is the slot's total credits, counted in messages) has
   * room; only its byte budget could refuse, and then sendSync waits for
   * the receiver to free bytes.
   */
  #put(g: number, message: unknown): void {
    const channel = this.spec.channels[g]!;
    try {
      if (!channel.trySend(message)) channel.sendSync(message);
    } catch (err) {
      // Every receiver is gone: the stage stopped (or the pipeline is being torn down).
      if (err instanceof ChannelClosedError && this.spec.kind !== "sink") throw this.#stopped();
      throw err;
    }
  }

  /** Why credits could not be had: the pipeline was cancelled, or the target stopped taking items. */
  #stopped(): Error {
    return this.#control.cancelled ? new Cancelled() : new DownstreamClosed(this.spec.name);
  }

  /**
   * Sends items taken from the source with credits the caller already took
   * (the source reader takes credits before it reads, so that the source is
   * read only as fast as the first stage takes items).
   */
  sendReserved(values: unknown[], firstIndex: number): void {
    if (this.spec.key === undefined) {
      const { batch } = this.spec;
      for (let at = 0; at < values.length; at += batch) {
        const chunk = at === 0 && values.length <= batch ? values : values.slice(at, at + batch);
        this.#put(0, [firstIndex + at, chunk] satisfies BatchMessage);
      }
      this.#control.count(this.spec.slot, SENT, values.length);
      return;
    }
    for (let i = 0; i < values.length; i++) this.push(values[i], firstIndex + i);
    for (let g = 0; g < this.#groups.length; g++) {
      const group = this.#groups[g]!;
      if (group.values.length === 0) continue;
      this.#groups[g] = newGroup();
      this.#pending -= group.values.length;
      for (let at = 0; at < group.values.length; at += this.spec.batch) {
        this.#sendSlice(g, group, at, Math.min(this.spec.batch, group.values.length - at));
      }
    }
  }

  /** Lossy targets: each item is offered once, never waiting. */
  #offerEach(g: number, group: Group): void {
    for (let i = 0; i < group.values.length; i++) this.offer(group.values[i], group.indices[i]!, g);
  }

  /**
   * Offers one item to a lossy stage: sent if a credit is free; otherwise
   * dropped ("drop-newest"), sent in place of the oldest waiting item
   * ("drop-oldest", which takes that item's message out of the queue), or
   * refused with IntakeFull ("error").
   */
  offer(value: unknown, index: number, g = this.route(value)): void {
    const { slot, overflow } = this.spec;
    if (this.#control.isClosed(slot)) throw this.#stopped();
    if (this.#control.tryTake(slot, 1) === 1) {
      this.#put(g, [index, [value]] satisfies BatchMessage);
      this.#control.count(slot, SENT, 1);
      return;
    }
    if (overflow === "error") throw new IntakeFull(this.spec.name, index, value);
    if (overflow === "drop-oldest") {
      const oldest = this.spec.evict?.[g]?.tryRecv();
      if (oldest?.ok) {
        // The evicted item's credit passes to this one.
        this.#control.count(slot, EVICTED, 1);
        this.#control.count(slot, DROPPED, 1);
        this.#put(g, [index, [value]] satisfies BatchMessage);
        this.#control.count(slot, SENT, 1);
        return;
      }
    }
    this.#control.count(slot, DROPPED, 1);
  }

  /**
   * The user's sink takes items one message each (it is their channel):
   * those it has room for at once, then the rest in one sendMany, which
   * waits for room (time counted as back-pressured).
   */
  #toSinkSync(values: unknown[]): void {
    const sink = this.spec.channels[0]!;
    try {
      let at = 0;
      while (at < values.length && sink.trySend(values[at])) at++;
      if (at === values.length) return;
      this.#observer?.waiting();
      try {
        sink.sendManySync(at === 0 ? values : values.slice(at));
      } finally {
        this.#observer?.resumed();
      }
    } catch (err) {
      throw this.#sinkGone(err);
    }
  }

  async #toSinkAsync(values: unknown[]): Promise<void> {
    const sink = this.spec.channels[0]!;
    try {
      let at = 0;
      while (at < values.length && sink.trySend(values[at])) at++;
      if (at === values.length) return;
      this.#observer?.waiting();
      try {
        await sink.sendMany(at === 0 ? values : values.slice(at));
      } finally {
        this.#observer?.resumed();
      }
    } catch (err) {
      throw this.#sinkGone(err);
    }
  }

  /** Every receive end of the sink was closed: the consumer left, so the pipeline stops (as when its loop breaks). */
  #sinkGone(err: unknown): unknown {
    return err instanceof ChannelClosedError ? new DownstreamClosed("sink") : err;
  }

  /** Closes this side's channel handles (the Go rule: a stage closes what it sends on when done). */
  close(): void {
    for (const channel of this.spec.channels) channel.close();
    for (const channel of this.spec.evict ?? []) channel.close();
  }
}

/** A ChannelFullError for an item refused by a stage with overflow "error". */
export function intakeFullError(full: IntakeFull): ChannelFullError {
  return new ChannelFullError(`stage "${full.target}" is full and its overflow is "error": item ${full.index} was refused; raise its capacity or workers, or choose overflow "wait"`);
}
