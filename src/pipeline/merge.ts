/**
 * `merge`: several sources into one, fairly, by weighted deficit round
 * robin (Shreedhar and Varghese, SIGCOMM '95), with every item costing 1.
 *
 * The sources are visited in turn. A visit to a source that has an item
 * ready adds its quantum (its weight divided by the smallest weight, so at
 * least 1) to its deficit and lets it emit while the deficit is at least 1
 * and it has items ready; what is left (a fraction) carries to its next
 * visit. A source with nothing ready at its visit loses its deficit (it is
 * not backlogged) and the turn passes on. So while several sources have
 * items ready each gets turns in proportion to its weight, and an item that
 * becomes ready on one source waits at most one round: the others' quanta,
 * rounded up (with weights 1:1, one item of a flooding source).
 *
 * "Ready" is known without waiting for a sync iterable (the next item is
 * pulled when its turn comes) and for a RecvChannel (tryRecv); an async
 * iterable is asked for its next item ahead of its turn, and that item is
 * ready once its promise has resolved. When no source has an item ready,
 * merge waits for whichever answers first.
 */
import { ChannelClosedError, RecvChannel } from "../index.js";

export interface MergeOptions {
  /** One positive weight per source (default: all 1). */
  weights?: number[];
}

type AnySource<T> = Iterable<T> | AsyncIterable<T> | RecvChannel<T>;

interface Input<T> {
  kind: "sync" | "async" | "channel";
  sync?: Iterator<T>;
  async?: AsyncIterator<T>;
  channel?: RecvChannel<T>;
  quantum: number;
  deficit: number;
  /** The next item, taken and not yet emitted (async iterables, and channels after a wait). */
  ready: boolean;
  value: T | undefined;
  /** A read in progress (an async next(), a channel recv()). */
  reading: Promise<void> | undefined;
  done: boolean;
  failed: boolean;
  error: unknown;
}

/**
 * Interleaves `sources` (iterables, async iterables, channels' receive
 * ends) into one async iterable, by weighted deficit round robin: while
 * several sources have items ready, each gets turns in proportion to its
 * weight, so a flood on one delays another's next item by at most one
 * round. Ends when every source has ended.
 *
 * Iterate it once. Throws (from the iteration) the first error a source
 * throws, after returning the others. Leaving the loop early returns every
 * iterator and stops waiting on every channel; the channels are left open
 * (merge does not own them), but an item a channel gave while merge was
 * waiting on all sources and not yet emitted is lost then.
 *
 * Throws TypeError when a source is none of these and RangeError when
 * `weights` does not give one positive finite number per source.
 */
export function merge<T>(sources: Array<AnySource<T>>, options: MergeOptions = {}): AsyncIterableIterator<T> {
  if (!Array.isArray(sources)) throw new TypeError("merge: sources must be an array of iterables, async iterables or RecvChannels");
  const weights = options.weights ?? sources.map(() => 1);
  if (!Array.isArray(weights) || weights.length !== sources.length) {
    throw new RangeError(`merge: weights must give one weight per source (${sources.length}), got ${Array.isArray(weights) ? weights.length : typeof weights}`);
  }
  weights.forEach((w, i) => {
    if (typeof w !== "number" || !Number.isFinite(w) || w <= 0) throw new RangeError(`merge: weights[${i}] must be a positive finite number, got ${String(w)}`);
  });
  const smallest = Math.min(...weights);
  const inputs = sources.map((source, i) => open(source, i, weights[i]! / smallest));
  return new Merger(inputs);
}

function open<T>(source: AnySource<T>, i: number, quantum: number): Input<T> {
  const input: Input<T> = { kind: "sync", quantum, deficit: 0, ready: false, value: undefined, reading: undefined, done: false, failed: false, error: undefined };
  if (source instanceof RecvChannel) {
    input.kind = "channel";
    input.channel = source;
  } else if (source !== null && source !== undefined && typeof (source as AsyncIterable<T>)[Symbol.asyncIterator] === "function") {
    input.kind = "async";
    input.async = (source as AsyncIterable<T>)[Symbol.asyncIterator]();
  } else if (source !== null && source !== undefined && typeof (source as Iterable<T>)[Symbol.iterator] === "function") {
    input.sync = (source as Iterable<T>)[Symbol.iterator]();
  } else {
    throw new TypeError(`merge: sources[${i}] is not an Iterable, an AsyncIterable or a RecvChannel`);
  }
  return input;
}

class Merger<T> implements AsyncIterableIterator<T> {
  readonly #inputs: Input<T>[];
  #current = 0;
  /** The current source's visit has had its quantum. */
  #visiting = false;
  #finished = false;
  #iterated = false;
  readonly #abort = new AbortController();
  #wake: (() => void) | undefined;

  constructor(inputs: Input<T>[]) {
    this.#inputs = inputs;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    if (this.#iterated) throw new TypeError("merge: this merged iterable was already iterated; call merge() again");
    this.#iterated = true;
    return this;
  }

  async next(): Promise<IteratorResult<T>> {
    for (;;) {
      if (this.#finished) return { value: undefined, done: true };
      const failed = this.#inputs.find((input) => input.failed);
      if (failed) {
        await this.#stop();
        throw failed.error;
      }
      if (this.#inputs.every((input) => input.done && !input.ready)) {
        this.#finished = true;
        return { value: undefined, done: true };
      }
      const picked = this.#pick();
      if (picked.found) return { value: picked.value as T, done: false };
      // A source found failed or ended by this pick is dealt with at the top.
      if (this.#inputs.some((input) => input.failed) || this.#inputs.every((input) => input.done && !input.ready)) continue;
      // Nothing is ready: wait on every source that can still give something.
      for (const input of this.#inputs) if (!input.done && !input.ready && input.kind === "channel") this.#startRead(input);
      if (this.#inputs.some((input) => input.ready)) continue;
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  async return(): Promise<IteratorResult<T>> {
    await this.#stop();
    return { value: undefined, done: true };
  }

  /**
   * One decision of deficit round robin: the item to emit now, visiting
   * at most every source once past the current visit.
   */
  #pick(): { found: true; value: T } | { found: false } {
    const inputs = this.#inputs;
    for (let visits = 0; visits <= inputs.length; visits++) {
      const input = inputs[this.#current]!;
      if (!input.ready && !input.done) this.#probe(input);
      if (input.failed) return { found: false };
      if (input.ready) {
        if (!this.#visiting) {
          input.deficit += input.quantum;
          this.#visiting = true;
        }
        if (input.deficit >= 1) {
          input.deficit -= 1;
          const value = input.value as T;
          input.ready = false;
          input.value = undefined;
          if (input.deficit < 1) this.#advance();
          if (input.kind === "async" && !input.done) this.#startRead(input); // ask ahead: ready by its next turn
          return { found: true, value };
        }
      } else {
        input.deficit = 0; // not backlogged: no credit carries over (DRR)
      }
      this.#advance();
    }
    return { found: false };
  }

  #advance(): void {
    this.#current = (this.#current + 1) % this.#inputs.length;
    this.#visiting = false;
  }

  /** Finds out, without waiting, whether `input` has an item (taking it into `value`). */
  #probe(input: Input<T>): void {
    try {
      if (input.kind === "sync") {
        const step = input.sync!.next();
        if (step.done) input.done = true;
        else {
          input.ready = true;
          input.value = step.value;
        }
      } else if (input.kind === "channel") {
        if (input.reading) return;
        const tried = input.channel!.tryRecv();
        if (tried.ok) {
          input.ready = true;
          input.value = tried.value;
        } else if (tried.closed) input.done = true;
      } else {
        this.#startRead(input);
      }
    } catch (err) {
      input.failed = true;
      input.error = err;
    }
  }

  /** Starts reading `input`'s next item (async iterables; channels when merge must wait). */
  #startRead(input: Input<T>): void {
    if (input.reading || input.ready || input.done) return;
    const settle = (): void => {
      input.reading = undefined;
      const wake = this.#wake;
      this.#wake = undefined;
      wake?.();
    };
    if (input.kind === "async") {
      input.reading = input.async!.next().then(
        (step) => {
          if (step.done) input.done = true;
          else {
            input.ready = true;
            input.value = step.value;
          }
          settle();
        },
        (err) => {
          input.failed = true;
          input.error = err;
          settle();
        },
      );
    } else if (input.kind === "channel") {
      input.reading = input.channel!.recv({ signal: this.#abort.signal }).then(
        (value) => {
          input.ready = true;
          input.value = value;
          settle();
        },
        (err) => {
          if (err instanceof ChannelClosedError) input.done = true;
          else if (!this.#abort.signal.aborted) {
            input.failed = true;
            input.error = err;
          }
          settle();
        },
      );
    }
  }

  /** Stops every source: returns the iterators (not waiting on one whose read is pending), stops waiting on channels. */
  async #stop(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.#abort.abort();
    const returning: Array<Promise<unknown>> = [];
    for (const input of this.#inputs) {
      if (input.done || input.failed) continue;
      try {
        if (input.kind === "sync") input.sync!.return?.();
        else if (input.kind === "async") {
          const returned = input.async!.return?.();
          if (returned && !input.reading) returning.push(Promise.resolve(returned).catch(() => {}));
          else if (returned) void Promise.resolve(returned).catch(() => {});
        }
      } catch {
        // a source's return() failing does not stop the others from being returned
      }
    }
    await Promise.all(returning);
  }
}
