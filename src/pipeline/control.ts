/**
 * A pipeline's shared control block: the credits that bound each stage,
 * the turnstile that keeps input order across a stage's workers, the intake
 * lock that numbers the batches they take, and the per-worker statistics.
 * One block per pipeline, created by the main thread and shared (not
 * copied) with every worker of the pipeline.
 *
 * Credits (Flink's credit-based flow control, in shared memory). A stage
 * holds at most `capacity + workers` items: in its input channel, in its
 * workers, in their finished-but-not-yet-sent outputs and reorder stash.
 * A sender (the source reader or a worker of the stage before) takes
 * credits before it sends items and the stage gives them back once the
 * items' outputs have left it (into the next stage, the output window or
 * the sink). So capacity is counted in items, however many items a message
 * carries, and a slow stage holds back everything upstream of it, down to
 * the source. Channels between stages only carry batches; they never fill
 * before the credits run out.
 *
 * Layout of `words` (Int32Array over a SharedArrayBuffer), slot s = 0..n-1
 * for the stages, slot n for the output window (the pipeline's own
 * iterator). Word index = GLOBAL_WORDS + s * SLOT_WORDS + field:
 *
 * | offset (words) | size | meaning | written by |
 * |---|---|---|---|
 * | 0 | 1 | CANCEL: 1 once the pipeline is cancelled or failed | main |
 * | 1 | 1 | DOOR: the main thread's doorbell, bumped (+1, notify) by ringMain() | any party |
 * | 2 | 1 | MAIN_WAITERS: main-thread loops (source reader, output collector) armed on DOOR | main |
 * | 3..7 | 5 | reserved | - |
 * | slot + 0 | 1 | FREE: credits not taken | senders (take), the stage (give back) |
 * | slot + 1 | 1 | CREDIT_WAITERS: parties asleep waiting for credits | those parties |
 * | slot + 2 | 1 | TOTAL: capacity + workers (constant) | main, at creation |
 * | slot + 3 | 1 | SENT: items ever sent into the stage | senders |
 * | slot + 4 | 1 | DROPPED: items discarded at intake (overflow) | senders |
 * | slot + 5 | 1 | TURN: sequence number of the next batch allowed out (input order) | the worker whose turn it is |
 * | slot + 6 | 1 | TURN_WAITERS: workers asleep waiting for their turn | those workers |
 * | slot + 7 | 1 | INTAKE_SEQ: sequence number for the next batch taken in | the holder of INTAKE_LOCK |
 * | slot + 8 | 1 | INTAKE_LOCK: 0 free, 1 held, 2 held with waiters | the stage's workers |
 * | slot + 9 | 1 | EVICTED: items taken out of the queue by drop-oldest | senders |
 * | slot + 10 | 1 | RECEIVERS: workers of the stage still taking items | main (init), each worker once when it stops |
 * | slot + 11 | 1 | CLOSED: 1 once every worker of the stage stopped taking items, or the pipeline was cancelled (senders then stop too); FREE is then biased by -2^30 | the last worker to stop, main |
 * | slot + 12 | 1 | WAKE_AT: credits worth waking a sender for (half a batch into the stage) | main, at creation |
 * | slot + 13 | 1 | SMALL_WAITERS: waiters (among CREDIT_WAITERS) waiting for other than WAKE_AT credits (woken at every give) | those parties |
 * | slot + 14 | 1 | RINGS_MAIN: 1 when the slot's sender is the main thread (the first stage's): give() rings DOOR instead of notifying FREE | main, at creation |
 * | slot + 15 | 1 | reserved | - |
 *
 * Per-worker statistics, `stats` (Float64Array), worker slot w (numbered
 * across all stages), base w * WORKER_STATS:
 *
 * | offset | meaning | written by |
 * |---|---|---|
 * | 0 | STATE: 0 idle (waiting for input), 1 busy, 2 back-pressured (waiting for room downstream), 3 finished | the worker |
 * | 1 | SINCE: when STATE was entered (ms since the epoch) | the worker |
 * | 2, 3, 4 | busy, back-pressured, idle ms before SINCE | the worker |
 * | 5, 6, 7 | items in, outputs out, items failed (skipped) | the worker |
 * | 8 | source index of the item being processed (-1: none) | the worker |
 * | 9 | items whose service time was sampled | the worker |
 * | 10 | STARTED: when the worker's statistics started (ms since the epoch), 0 before or with statistics off | the worker |
 * | 11 | ENTERED: 1 once the worker's code runs in its interpreter (even with statistics off) | the worker |
 *
 * Service-time histogram, `histogram` (Int32Array), worker w at
 * w * HISTOGRAM_BUCKETS: bucket b counts sampled items whose service time t
 * (µs) had floor(4 * log2(t * 10)) = b (clamped to 0..HISTOGRAM_BUCKETS-1):
 * four buckets per doubling from 0.1 µs, about 19% wide. Written by the
 * worker only.
 *
 * Preview of the item a worker was processing when its interpreter exited,
 * `previews` (Uint8Array), worker w at w * PREVIEW_BYTES: 2 bytes of length
 * (little-endian) then UTF-8. Written by the worker's exit hook.
 *
 * Cancellation words, `signals` (Int32Array), one per worker: 0 running, 1
 * cancelled (main sets it and wakes the worker's watcher: the stage's
 * AbortSignal aborts), 2 finished (the worker sets it when it ends, waking
 * its own watcher so that nothing stays pending in a pooled interpreter).
 *
 * Every word with more than one writer is changed with Atomics; the
 * Float64 statistics have one writer each and are read without locks (an
 * aligned 8-byte store is not torn on the platforms Node supports).
 */

export const GLOBAL_WORDS = 8;
export const SLOT_WORDS = 16;
export const CANCEL = 0;
export const DOOR = 1;
export const MAIN_WAITERS = 2;

export const FREE = 0;
export const CREDIT_WAITERS = 1;
export const TOTAL = 2;
export const SENT = 3;
export const DROPPED = 4;
export const TURN = 5;
export const TURN_WAITERS = 6;
export const INTAKE_SEQ = 7;
export const INTAKE_LOCK = 8;
export const EVICTED = 9;
export const RECEIVERS = 10;
export const CLOSED = 11;
export const WAKE_AT = 12;
export const SMALL_WAITERS = 13;
export const RINGS_MAIN = 14;

export const WORKER_STATS = 12;
export const STATE = 0;
export const SINCE = 1;
export const BUSY_MS = 2;
export const BACKPRESSURED_MS = 3;
export const IDLE_MS = 4;
export const IN = 5;
export const OUT = 6;
export const FAILED = 7;
export const CURRENT_INDEX = 8;
export const SAMPLED = 9;
export const STARTED = 10;
export const ENTERED = 11;

export const IDLE = 0;
export const BUSY = 1;
export const BACKPRESSURED = 2;
export const FINISHED = 3;

export const HISTOGRAM_BUCKETS = 128;
export const PREVIEW_BYTES = 256;

/** The largest credit count a slot can hold (capacity Infinity maps here: no bound). */
export const UNBOUNDED_CREDITS = 2 ** 29;
/** Subtracted from FREE when a slot is shut (see Control.#shut): keeps it negative whatever is given back. */
const SHUT_BIAS = 2 ** 30;

/** Everything a party of the pipeline needs to reach the control block (sent to workers as is: shared). */
export interface ControlBuffers {
  words: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  histogram: SharedArrayBuffer;
  previews: SharedArrayBuffer;
  signals: SharedArrayBuffer;
}

/** Typed views of a pipeline's control block. */
export class Control {
  readonly words: Int32Array;
  readonly stats: Float64Array;
  readonly histogram: Int32Array;
  readonly previews: Uint8Array;
  readonly signals: Int32Array;
  readonly buffers: ControlBuffers;

  constructor(buffers: ControlBuffers) {
    this.buffers = buffers;
    this.words = new Int32Array(buffers.words);
    this.stats = new Float64Array(buffers.stats);
    this.histogram = new Int32Array(buffers.histogram);
    this.previews = new Uint8Array(buffers.previews);
    this.signals = new Int32Array(buffers.signals);
  }

  /** A new control block for `slots` credit slots (stages + the output window) and `workers` workers in all. */
  static allocate(slots: number, workers: number): Control {
    const control = new Control({
      words: new SharedArrayBuffer((GLOBAL_WORDS + slots * SLOT_WORDS) * 4),
      stats: new SharedArrayBuffer(Math.max(1, workers) * WORKER_STATS * 8),
      histogram: new SharedArrayBuffer(Math.max(1, workers) * HISTOGRAM_BUCKETS * 4),
      previews: new SharedArrayBuffer(Math.max(1, workers) * PREVIEW_BYTES),
      signals: new SharedArrayBuffer(Math.max(1, workers) * 4),
    });
    for (let w = 0; w < workers; w++) control.stats[w * WORKER_STATS + CURRENT_INDEX] = -1;
    return control;
  }

  /** Index of `field` of credit slot `slot` in `words`. */
  word(slot: number, field: number): number {
    return GLOBAL_WORDS + slot * SLOT_WORDS + field;
  }

  /**
   * Sets up credit slot `slot`: `total` credits, `receivers` workers taking
   * from it, and `wakeAt`: how many free credits are worth waking a sender
   * that waits for a full batch (fewer wake-ups: see give()).
   */
  initSlot(slot: number, total: number, receivers: number, wakeAt = 1): void {
    Atomics.store(this.words, this.word(slot, WAKE_AT), Math.max(1, Math.min(wakeAt, total)));
    Atomics.store(this.words, this.word(slot, TOTAL), total);
    Atomics.store(this.words, this.word(slot, FREE), total);
    Atomics.store(this.words, this.word(slot, RECEIVERS), receivers);
  }

  /**
   * A worker of the stage at `slot` stops taking items (its generator
   * returned early, or everything after it stopped). When it is the last
   * one, the stage is closed: senders waiting for its credits wake and stop
   * sending (the Go rule, upstream: a stage that stops receiving stops its
   * senders, down to the source).
   */
  stopReceiving(slot: number): void {
    if (Atomics.sub(this.words, this.word(slot, RECEIVERS), 1) === 1) this.close(slot);
  }

  /** Marks the stage at `slot` closed and wakes its senders. */
  close(slot: number): void {
    this.#shut(slot);
  }

  /**
   * Shuts a credit slot once: CLOSED is set and FREE is pushed far below
   * zero, so no credit can be taken again (credits given back later do not
   * lift it above zero) and a sender that saw FREE at 0 just before finds
   * it changed instead of sleeping through the wake-up.
   */
  #shut(slot: number): void {
    if (Atomics.compareExchange(this.words, this.word(slot, CLOSED), 0, 1) !== 0) return;
    Atomics.sub(this.words, this.word(slot, FREE), SHUT_BIAS);
    Atomics.notify(this.words, this.word(slot, FREE));
    this.ringMain();
  }

  /** True once the stage at `slot` stopped taking items (or the pipeline was cancelled). */
  isClosed(slot: number): boolean {
    return Atomics.load(this.words, this.word(slot, CLOSED)) !== 0;
  }

  get cancelled(): boolean {
    return Atomics.load(this.words, CANCEL) !== 0;
  }

  /**
   * Marks the pipeline cancelled and wakes everyone waiting on a credit or
   * a turn: each slot is shut (below) and every turn word set to -1 (no
   * batch's turn), so that a waiter that checked the flag just before
   * finds its word changed and cannot sleep through it. (Waits on the
   * intake lock need no wake-up: cancelling terminates the workers.)
   */
  cancel(slots: number): void {
    Atomics.store(this.words, CANCEL, 1);
    for (let w = 0; w < this.signals.length; w++) {
      if (Atomics.compareExchange(this.signals, w, 0, 1) === 0) Atomics.notify(this.signals, w);
    }
    for (let s = 0; s < slots; s++) {
      this.#shut(s);
      this.endTurns(s);
    }
    this.ringMain(); // even when every slot was shut before (#shut rings only the first time)
  }

  // ---- credits ----

  /**
   * Takes between `least` (default 1) and `want` credits of `slot` if at
   * least `least` are free, without waiting; returns how many (0: fewer
   * than `least` free). `least` keeps a sender from sending a trickle of
   * tiny batches into a window that reopens a few credits at a time (TCP's
   * "silly window syndrome"): it waits for a worthwhile batch instead. It
   * must not exceed the slot's total, or nothing would ever be enough.
   */
  tryTake(slot: number, want: number, least = 1): number {
    const at = this.word(slot, FREE);
    for (;;) {
      const free = Atomics.load(this.words, at);
      if (free < least || free <= 0) return 0;
      const take = free < want ? free : want;
      if (Atomics.compareExchange(this.words, at, free, free - take) === free) return take;
    }
  }

  /**
   * Takes between 1 and `want` credits of `slot`, sleeping (Atomics.wait)
   * until at least one is free. Woken by give() when credits come back, by
   * cancel() and by close(); re-checks all three. Returns 0 only when the
   * pipeline is cancelled or the stage closed.
   */
  takeSync(slot: number, want: number, least = 1): number {
    const at = this.word(slot, FREE);
    const waiters = this.word(slot, CREDIT_WAITERS);
    const small = this.word(slot, SMALL_WAITERS);
    // Only a waiter for exactly WAKE_AT credits may rely on the give that crosses it; any other is woken at every give.
    const isSmall = least !== Atomics.load(this.words, this.word(slot, WAKE_AT));
    for (;;) {
      const got = this.tryTake(slot, want, least);
      if (got > 0) return got;
      if (this.cancelled || this.isClosed(slot)) return 0;
      // Registered first, then FREE read: a give() after that read changes FREE,
      // so the wait returns at once (no lost wake-up); one before it is seen here.
      Atomics.add(this.words, waiters, 1);
      if (isSmall) Atomics.add(this.words, small, 1);
      const free = Atomics.load(this.words, at);
      if (free < least) Atomics.wait(this.words, at, free);
      if (isSmall) Atomics.sub(this.words, small, 1);
      Atomics.sub(this.words, waiters, 1);
    }
  }

  /** takeSync without blocking the thread (Atomics.waitAsync). */
  async takeAsync(slot: number, want: number, least = 1): Promise<number> {
    const at = this.word(slot, FREE);
    const waiters = this.word(slot, CREDIT_WAITERS);
    const small = this.word(slot, SMALL_WAITERS);
    // Only a waiter for exactly WAKE_AT credits may rely on the give that crosses it; any other is woken at every give.
    const isSmall = least !== Atomics.load(this.words, this.word(slot, WAKE_AT));
    for (;;) {
      const got = this.tryTake(slot, want, least);
      if (got > 0) return got;
      if (this.cancelled || this.isClosed(slot)) return 0;
      Atomics.add(this.words, waiters, 1);
      if (isSmall) Atomics.add(this.words, small, 1);
      try {
        const free = Atomics.load(this.words, at);
        if (free < least) {
          const wait = Atomics.waitAsync(this.words, at, free);
          if (wait.async) await wait.value;
        }
      } finally {
        if (isSmall) Atomics.sub(this.words, small, 1);
        Atomics.sub(this.words, waiters, 1);
      }
    }
  }

  /**
   * Gives `count` credits of `slot` back and wakes whoever waits for them:
   * a waiter content with a few credits at every give, waiters for a
   * full batch only when the free credits reach WAKE_AT (the give that
   * crosses it). Every credit comes back in the end, and the last give
   * brings FREE to TOTAL >= WAKE_AT, so no waiter is left asleep; fewer
   * wake-ups matter here, since a woken thread costs its waker a system
   * call and, on a busy machine, a wait for a core.
   */
  give(slot: number, count: number): void {
    if (count <= 0) return;
    const free = Atomics.add(this.words, this.word(slot, FREE), count) + count;
    if (Atomics.load(this.words, this.word(slot, RINGS_MAIN)) !== 0) {
      // The main thread waits for exactly WAKE_AT credits here (the source reader), on its doorbell.
      const wakeAt = Atomics.load(this.words, this.word(slot, WAKE_AT));
      if (free >= wakeAt && free - count < wakeAt) this.ringMain();
      return;
    }
    if (Atomics.load(this.words, this.word(slot, CREDIT_WAITERS)) === 0) return;
    const wakeAt = Atomics.load(this.words, this.word(slot, WAKE_AT));
    const crossed = free >= wakeAt && free - count < wakeAt;
    if (crossed || Atomics.load(this.words, this.word(slot, SMALL_WAITERS)) > 0) Atomics.notify(this.words, this.word(slot, FREE));
  }

  /**
   * Wakes the main thread's armed loops (see Doorbell), if any: the first
   * stage's credits came back, an output batch was sent, a stage ended or
   * the pipeline was cancelled. Nothing (not even a notify, which takes a
   * process-wide lock in V8) when no loop is armed.
   */
  ringMain(): void {
    if (Atomics.load(this.words, MAIN_WAITERS) === 0) return;
    Atomics.add(this.words, DOOR, 1);
    Atomics.notify(this.words, DOOR);
  }

  /** Marks `slot` as fed by the main thread: its credits coming back ring the doorbell (see give()). */
  ringsMain(slot: number): void {
    Atomics.store(this.words, this.word(slot, RINGS_MAIN), 1);
  }

  /** Credits of `slot` in use: items the stage holds right now. */
  held(slot: number): number {
    const free = Atomics.load(this.words, this.word(slot, FREE)) + (this.isClosed(slot) ? SHUT_BIAS : 0);
    return Math.max(0, Atomics.load(this.words, this.word(slot, TOTAL)) - free);
  }

  count(slot: number, field: number, n: number): void {
    Atomics.add(this.words, this.word(slot, field), n);
  }

  read(slot: number, field: number): number {
    return Atomics.load(this.words, this.word(slot, field));
  }

  // ---- the turnstile (input order across a stage's workers) ----

  /** True when batch `seq` of `slot` may leave now. */
  isTurn(slot: number, seq: number): boolean {
    return Atomics.load(this.words, this.word(slot, TURN)) === seq;
  }

  /**
   * Sleeps until batch `seq` of `slot` may leave (every earlier batch has
   * left). Woken by passTurn(), endTurns() and cancel(). False when the
   * turns are over (the pipeline was cancelled, or a worker of the stage
   * found the next stage closed: nothing more may leave).
   */
  awaitTurnSync(slot: number, seq: number): boolean {
    const at = this.word(slot, TURN);
    const waiters = this.word(slot, TURN_WAITERS);
    for (;;) {
      const turn = Atomics.load(this.words, at);
      if (turn === seq) return true;
      if (turn < 0 || this.cancelled) return false;
      Atomics.add(this.words, waiters, 1);
      Atomics.wait(this.words, at, turn);
      Atomics.sub(this.words, waiters, 1);
    }
  }

  async awaitTurnAsync(slot: number, seq: number): Promise<boolean> {
    const at = this.word(slot, TURN);
    const waiters = this.word(slot, TURN_WAITERS);
    for (;;) {
      const turn = Atomics.load(this.words, at);
      if (turn === seq) return true;
      if (turn < 0 || this.cancelled) return false;
      Atomics.add(this.words, waiters, 1);
      try {
        const wait = Atomics.waitAsync(this.words, at, turn);
        if (wait.async) await wait.value;
      } finally {
        Atomics.sub(this.words, waiters, 1);
      }
    }
  }

  /** No batch of `slot` may leave any more (the next stage stopped taking items); wakes every worker waiting for a turn. */
  endTurns(slot: number): void {
    Atomics.store(this.words, this.word(slot, TURN), -1);
    Atomics.notify(this.words, this.word(slot, TURN));
  }

  /** Batch `seq` has left: the next one may go. */
  passTurn(slot: number, seq: number): void {
    // Never revives ended turns (a compare-exchange: only the turn's holder moves it on).
    Atomics.compareExchange(this.words, this.word(slot, TURN), seq, seq + 1);
    if (Atomics.load(this.words, this.word(slot, TURN_WAITERS)) > 0) Atomics.notify(this.words, this.word(slot, TURN));
  }

  // ---- the intake lock (numbers the batches a stage's workers take, in the order taken) ----

  tryLockIntake(slot: number): boolean {
    return Atomics.compareExchange(this.words, this.word(slot, INTAKE_LOCK), 0, 1) === 0;
  }

  /**
   * Takes the intake lock, sleeping while another worker holds it (a futex
   * mutex, Drepper's "Futexes are tricky" #2: once it had to wait, a taker
   * marks the lock contended (2) whenever it takes it, because others may
   * be asleep; unlocking a contended lock wakes one). False when cancelled.
   */
  lockIntakeSync(slot: number): boolean {
    const at = this.word(slot, INTAKE_LOCK);
    if (Atomics.compareExchange(this.words, at, 0, 1) === 0) return true;
    while (Atomics.exchange(this.words, at, 2) !== 0) {
      if (this.cancelled) return false;
      Atomics.wait(this.words, at, 2);
    }
    return true;
  }

  async lockIntakeAsync(slot: number): Promise<boolean> {
    const at = this.word(slot, INTAKE_LOCK);
    if (Atomics.compareExchange(this.words, at, 0, 1) === 0) return true;
    while (Atomics.exchange(this.words, at, 2) !== 0) {
      if (this.cancelled) return false;
      const wait = Atomics.waitAsync(this.words, at, 2);
      if (wait.async) await wait.value;
    }
    return true;
  }

  /** Numbers the batch just taken under the intake lock. */
  nextIntakeSeq(slot: number): number {
    const at = this.word(slot, INTAKE_SEQ);
    const seq = Atomics.load(this.words, at);
    Atomics.store(this.words, at, seq + 1);
    return seq;
  }

  unlockIntake(slot: number): void {
    const at = this.word(slot, INTAKE_LOCK);
    if (Atomics.exchange(this.words, at, 0) === 2) Atomics.notify(this.words, at, 1);
  }
}

/**
 * The main thread's one wait (Atomics.waitAsync on DOOR) for everything it
 * waits for from the workers: credits of the first stage (the source
 * reader) and output batches and ends (the output collector). One wait
 * instead of one per loop, so that a worker that gives credits back and
 * sends outputs at once wakes the main thread once: each wake-up costs the
 * main thread tens of microseconds (a posted task, a turn of its event loop).
 *
 * Use, in each loop: `const seen = bell.arm()`, then re-check what the loop
 * waits for, then `await bell.wait(seen)` if there is nothing, and
 * `bell.disarm()` in every case (finally). Armed loops are counted in
 * MAIN_WAITERS, which is how ringMain() knows to notify; `seen` is read after
 * the count went up, so a ring after the re-check moves DOOR and the wait
 * returns at once (no lost wake-up). Loops armed on the same value share
 * one waitAsync.
 */
export class Doorbell {
  readonly #words: Int32Array;
  #pending: Promise<unknown> | undefined;
  #pendingSeen = 0;

  constructor(control: Control) {
    this.#words = control.words;
  }

  /** Counts the calling loop as armed; returns the doorbell's value, to pass to wait(). */
  arm(): number {
    Atomics.add(this.#words, MAIN_WAITERS, 1);
    return Atomics.load(this.#words, DOOR);
  }

  disarm(): void {
    Atomics.sub(this.#words, MAIN_WAITERS, 1);
  }

  /**
   * Resolves once the doorbell moves from `seen` (at once if it has). What
   * rings it: give() of the first stage's credits crossing WAKE_AT (what the
   * source reader waits for), an output batch sent (Outlet), a worker that
   * ends (after closing its ends), the main thread closing its own handles,
   * and cancel()/close() of any slot (teardown, a stage that stops taking
   * items).
   */
  wait(seen: number): Promise<unknown> {
    if (this.#pending && this.#pendingSeen === seen) return this.#pending;
    // No timeout: a waitAsync with one costs the main thread a delayed task per wait (measured: 1-3 µs of
    // its CPU per item more in bench:pipeline case B). Every change an armed loop waits for rings.
    const wait = Atomics.waitAsync(this.#words, DOOR, seen);
    if (!wait.async) return Promise.resolve();
    const pending = wait.value.then(() => {
      if (this.#pending === pending) this.#pending = undefined;
    });
    this.#pending = pending;
    this.#pendingSeen = seen;
    return pending;
  }
}

/** Milliseconds since the epoch, comparable across threads (performance.now() is per thread). */
export function epochMs(): number {
  return TIME_ORIGIN + performance.now();
}
/** performance.timeOrigin, read once (the getter costs about 25 ns, and the clock is read per batch). */
const TIME_ORIGIN = performance.timeOrigin;

/** The histogram bucket of a service time in microseconds. */
export function bucketOf(us: number): number {
  if (!(us > 0.1)) return 0;
  const b = Math.floor(4 * Math.log2(us * 10));
  return b >= HISTOGRAM_BUCKETS ? HISTOGRAM_BUCKETS - 1 : b;
}

/** The upper edge of bucket `b` in microseconds (what a percentile falling in it reports). */
export function bucketUpperUs(b: number): number {
  return 2 ** ((b + 1) / 4) / 10;
}
