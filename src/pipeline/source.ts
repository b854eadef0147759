/**
 * Reading a pipeline's source (an Iterable, an AsyncIterable or a
 * RecvChannel) in batches, in the main thread. The reader is only asked for
 * as many items as the first stage has credits for, so the source is read
 * only as fast as the first stage takes items.
 */
import { ChannelClosedError, RecvChannel } from "../index.js";

export type Source = Iterable<unknown> | AsyncIterable<unknown> | RecvChannel<unknown>;

export interface Pulled {
  values: unknown[];
  /** The source has no more items. */
  done: boolean;
}

export interface SourceReader {
  /** Reads between 1 and `max` items (fewer only at the end); waits for the first one. */
  pull(max: number): Promise<Pulled>;
  /** True while a read of the source is pending (an async iterator's next(), a channel's recv()). */
  readonly reading: boolean;
  /** True once the source said it has no more items. */
  readonly exhausted: boolean;
  /**
   * Stops reading: returns the iterator (runs its `finally` blocks), or closes
   * the pipeline's handle of a RecvChannel. Not awaited while a read is
   * pending (an iterator that never answers must not hang the pipeline).
   */
  close(): Promise<void>;
}

export function isSource(value: unknown): value is Source {
  if (value instanceof RecvChannel) return true;
  if (value === null || value === undefined) return false;
  const candidate = value as { [Symbol.iterator]?: unknown; [Symbol.asyncIterator]?: unknown };
  return typeof candidate[Symbol.asyncIterator] === "function" || typeof candidate[Symbol.iterator] === "function";
}

export function openSource(source: Source): SourceReader {
  if (source instanceof RecvChannel) return new ChannelReader(source);
  const asyncIterable = source as AsyncIterable<unknown>;
  if (typeof asyncIterable[Symbol.asyncIterator] === "function") return new AsyncReader(asyncIterable[Symbol.asyncIterator]());
  return new SyncReader((source as Iterable<unknown>)[Symbol.iterator]());
}

class SyncReader implements SourceReader {
  readonly reading = false;
  exhausted = false;
  #closed = false;
  constructor(readonly iterator: Iterator<unknown>) {}

  async pull(max: number): Promise<Pulled> {
    const values: unknown[] = [];
    while (values.length < max) {
      const step = this.iterator.next();
      if (step.done) {
        this.exhausted = true;
        return { values, done: true };
      }
      values.push(step.value);
    }
    return { values, done: false };
  }

  async close(): Promise<void> {
    if (this.#closed || this.exhausted) return;
    this.#closed = true;
    this.iterator.return?.();
  }
}

class AsyncReader implements SourceReader {
  reading = false;
  exhausted = false;
  #closed = false;
  constructor(readonly iterator: AsyncIterator<unknown>) {}

  /**
   * Waits for one item, then keeps taking items while they come without a
   * trip through the event loop (an async generator yielding from memory),
   * up to `max`: a setImmediate marks the end of "at once", so a slow source
   * sends each item as soon as it comes while a fast one fills batches.
   */
  async pull(max: number): Promise<Pulled> {
    const values: unknown[] = [];
    let turned = false;
    const timer = setImmediate(() => (turned = true));
    try {
      while (values.length < max) {
        this.reading = true;
        let step: IteratorResult<unknown>;
        try {
          step = await this.iterator.next();
        } finally {
          this.reading = false;
        }
        if (step.done) {
          this.exhausted = true;
          return { values, done: true };
        }
        values.push(step.value);
        if (turned) break;
      }
    } finally {
      clearImmediate(timer);
    }
    return { values, done: false };
  }

  async close(): Promise<void> {
    if (this.#closed || this.exhausted) return;
    this.#closed = true;
    const returned = this.iterator.return?.();
    if (!returned) return;
    if (this.reading) {
      void Promise.resolve(returned).catch(() => {});
      return;
    }
    await returned;
  }
}

class ChannelReader implements SourceReader {
  reading = false;
  exhausted = false;
  readonly #abort = new AbortController();
  constructor(readonly channel: RecvChannel<unknown>) {}

  /** Waits for one message, then takes what else is there without waiting (recvMany), up to `max`. */
  async pull(max: number): Promise<Pulled> {
    this.reading = true;
    try {
      return { values: await this.channel.recvMany(max, { signal: this.#abort.signal }), done: false };
    } catch (err) {
      if (err instanceof ChannelClosedError) {
        this.exhausted = true;
        return { values: [], done: true };
      }
      throw err;
    } finally {
      this.reading = false;
    }
  }

  async close(): Promise<void> {
    this.#abort.abort();
    try {
      this.channel.close();
    } catch {
      // already closed or moved
    }
  }
}
