/**
 * A channel's shared memory: one growable SharedArrayBuffer holding a header
 * and a ring of variable-size records. This file owns the layout; every
 * function here that touches the ring runs with the channel lock held
 * (header word LOCK, see mutex.ts) unless its comment says otherwise.
 *
 * Header (Int32 words unless noted; byte offset = word × 4):
 *
 * | offset | size  | meaning                                                  | written by (under the lock)   |
 * |--------|-------|----------------------------------------------------------|-------------------------------|
 * | 0      | 4     | LOCK: 0 free, else (owner slot + 1) plus a contended bit | lockers (mutex.ts)            |
 * | 4      | 4     | MAGIC 0x43484e31 ("CHN1")                                | creator                       |
 * | 8      | 4     | channel id                                               | creator                       |
 * | 12     | 4     | capacity: -1 = Infinity, 0 = rendezvous, n = bounded     | creator                       |
 * | 16     | 4     | SEND_HANDLES: open send handles, in transit included     | handle owners, supervisor     |
 * | 20     | 4     | RECV_HANDLES: open recv handles, in transit included     | handle owners, supervisor     |
 * | 24     | 4     | CLOSED bits: 1 no sender left, 2 no receiver left (sticky)| last closer                  |
 * | 28     | 4     | LENGTH: messages buffered (not withdrawn, not taken)     | senders, receivers            |
 * | 32     | 4     | HEAD: byte offset of the oldest record in the data area  | receivers                     |
 * | 36     | 4     | TAIL: byte offset where the next record goes             | senders                       |
 * | 40     | 4     | WRAP_AT: where readers jump back to 0; -1 = not wrapped  | senders, receivers            |
 * | 44     | 4     | DATA_SIZE: bytes in the data area now                    | senders (growth)              |
 * | 48     | 4     | MAX_DATA_SIZE: the data area's budget (maxBufferBytes)   | creator                       |
 * | 52     | 4     | MAX_MESSAGE_BYTES                                        | creator                       |
 * | 56     | 4     | SEQ_HEAD: seq of the newest message taken, plus one      | receivers                     |
 * | 60     | 4     | SEQ_TAIL: seq the next message gets                      | senders                       |
 * | 64     | 4     | WAITING_SENDERS: send operations parked                  | senders                       |
 * | 68     | 4     | WAITING_RECEIVERS: recv operations parked                | receivers                     |
 * | 72     | 4     | STREAM_SENDER: slot + 1 of the party streaming, or 0     | the streaming sender          |
 * | 76     | 4     | STREAM_RECEIVER: slot + 1 of the party taking a stream   | the claiming receiver         |
 * | 80     | 4     | STREAM_SEQ: seq of the message being streamed            | the streaming sender          |
 * | 84     | 4     | USED_BYTES: bytes of records in the ring                 | senders, receivers            |
 * | 88     | 4     | NAME_LEN                                                 | creator                       |
 * | 128    | 8     | SENT (float64): messages accepted                        | senders                       |
 * | 136    | 8     | RECEIVED (float64): messages taken                       | receivers                     |
 * | 160    | 32    | SEND_WAITERS: bitmap, bit s = party s waits to send      | waiting senders               |
 * | 192    | 32    | RECV_WAITERS: bitmap, bit s = party s waits to recv      | waiting receivers             |
 * | 224    | 64    | NAME (UTF-8)                                             | creator                       |
 * | 288    | 1028  | HOLDERS_SEND[257]: send handles held by party s (256 = in transit) | handle owners       |
 * | 1316   | 1028  | HOLDERS_RECV[257]: recv handles held by party s (256 = in transit) | handle owners       |
 * | 2344   | 1024  | WAITS_SEND[256]: send operations party s has parked here | waiting senders               |
 * | 3368   | 1024  | WAITS_RECV[256]: recv operations party s has parked here | waiting receivers             |
 * | 4400   | 4     | JOURNAL_VALID: 1 while a critical section may be half done | the lock holder             |
 * | 4404   | 4     | JOURNAL_UNDO: number of undo entries                     | the lock holder               |
 * | 4416   | 128   | JOURNAL snapshot of bytes 16..144 (words 4..35)          | the lock holder               |
 * | 4544   | 768   | JOURNAL undo entries: 64 × (area, index, old value)      | the lock holder               |
 * | 8192   | ...   | DATA area: the ring (DATA_SIZE bytes; grows in place)    | senders write, receivers read |
 *
 * Record (at an 8-aligned offset of the data area; 16-byte header):
 *
 * | offset | size | meaning                                                            |
 * |--------|------|--------------------------------------------------------------------|
 * | 0      | 4    | payload bytes in this record                                       |
 * | 4      | 4    | flags: FIRST 1, LAST 2, TOMBSTONE 4 (withdrawn), ATTACH 8          |
 * | 8      | 4    | seq of the message                                                 |
 * | 12     | 4    | total payload bytes of the message (over all its records)          |
 * | 16     | len  | payload, then padding to a multiple of 8                           |
 *
 * A message is one record (FIRST|LAST) or, when larger than the ring can
 * ever hold, a stream of records FIRST, ..., LAST written by one sender
 * (STREAM_SENDER) and taken by one receiver (STREAM_RECEIVER).
 *
 * The journal makes every critical section all-or-nothing even if its
 * thread is killed inside it (terminate(), resource limits): the lock
 * holder snapshots the header words it may change before changing any,
 * logs the old value of every other word it changes (holder and waiter
 * tables, record flags), and clears JOURNAL_VALID just before unlocking.
 * Whoever takes over the lock of a dead owner rolls the journal back
 * (rollback), so a half-written record is never published and a half-taken
 * message is back in the ring.
 *
 * Ring invariants (established by createChannelMemory, kept by every writer):
 * HEAD, TAIL, WRAP_AT are multiples of 8 within [0, DATA_SIZE]. Not wrapped
 * (WRAP_AT = -1): records fill [HEAD, TAIL). Wrapped: records fill
 * [HEAD, WRAP_AT) then [0, TAIL), and TAIL <= HEAD. Records never wrap
 * around the end. Records are in seq order. Every value read back from
 * shared memory is checked against these bounds (CorruptDataError).
 */
import { CorruptDataError } from "./errors.js";

export const HEADER_BYTES = 8192;
export const RECORD_HEADER_BYTES = 16;
const MAGIC = 0x43484e31;

export const H = {
  LOCK: 0,
  MAGIC: 1,
  ID: 2,
  CAPACITY: 3,
  SEND_HANDLES: 4,
  RECV_HANDLES: 5,
  CLOSED: 6,
  LENGTH: 7,
  HEAD: 8,
  TAIL: 9,
  WRAP_AT: 10,
  DATA_SIZE: 11,
  MAX_DATA_SIZE: 12,
  MAX_MESSAGE_BYTES: 13,
  SEQ_HEAD: 14,
  SEQ_TAIL: 15,
  WAITING_SENDERS: 16,
  WAITING_RECEIVERS: 17,
  STREAM_SENDER: 18,
  STREAM_RECEIVER: 19,
  STREAM_SEQ: 20,
  USED_BYTES: 21,
  NAME_LEN: 22,
} as const;

const F64_SENT = 128 / 8;
const F64_RECEIVED = 136 / 8;
const SEND_WAITERS_WORD = 160 / 4;
const RECV_WAITERS_WORD = 192 / 4;
const BITMAP_WORDS = 8;
const NAME_OFFSET = 224;
export const NAME_BYTES = 64;
const HOLDERS_SEND_WORD = 288 / 4;
const HOLDERS_RECV_WORD = 1316 / 4;
const WAITS_SEND_WORD = 2344 / 4;
const WAITS_RECV_WORD = 3368 / 4;
const JOURNAL_VALID_WORD = 4400 / 4;
const JOURNAL_UNDO_WORD = 4404 / 4;
const SNAPSHOT_FIRST_WORD = 4;
const SNAPSHOT_END_WORD = 36;
const JOURNAL_SNAPSHOT_WORD = 4416 / 4;
const JOURNAL_ENTRIES_WORD = 4544 / 4;
const JOURNAL_MAX_ENTRIES = 64;
const AREA_HEADER = 1;
const AREA_DATA = 2;
/** Holder table index that counts ends carried inside messages or in flight. */
export const TRANSIT = 256;

export const CLOSED_NO_SENDERS = 1;
export const CLOSED_NO_RECEIVERS = 2;

export const R_FIRST = 1;
export const R_LAST = 2;
export const R_TOMBSTONE = 4;
export const R_ATTACH = 8;

export type Side = "send" | "recv";

/** Rounds up to the next multiple of 8. */
export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Bytes one record with `payload` bytes of payload takes in the ring. */
export function recordBytes(payload: number): number {
  return RECORD_HEADER_BYTES + align8(payload);
}

interface RingIndices {
  head: number;
  tail: number;
  wrapAt: number;
  size: number;
}

/** One thread's views of a channel's shared memory. */
export class ChannelMemory {
  private readonly indices: RingIndices = { head: 0, tail: 0, wrapAt: -1, size: 0 };
  /** This thread's current spin budget on this channel (µs), adapted by the sync driver. */
  spinMicros = 100;
  /** `rollback` bound once (passed to the lock on every acquisition). */
  readonly rollbackBound: () => void = () => void this.rollback();
  readonly buffer: SharedArrayBuffer;
  readonly header: Int32Array;
  readonly counters: Float64Array;
  /**
   * Fixed-length views of the data area, remapped when it grows (see
   * remapData). Not length-tracking views: on V8 11 an element access through
   * a length-tracking view of a growable buffer costs ~35x a fixed one.
   */
  data: Uint8Array;
  dataWords: Int32Array;
  readonly id: number;
  readonly name: string;
  /** -1 for Infinity. */
  readonly capacity: number;

  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength < HEADER_BYTES) throw new CorruptDataError(`channel memory of ${buffer.byteLength} bytes is smaller than its header`);
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.counters = new Float64Array(buffer, 0, HEADER_BYTES / 8);
    const dataBytes = buffer.byteLength - HEADER_BYTES;
    this.data = new Uint8Array(buffer, HEADER_BYTES, dataBytes);
    this.dataWords = new Int32Array(buffer, HEADER_BYTES, dataBytes >>> 2);
    if (Atomics.load(this.header, H.MAGIC) !== MAGIC) throw new CorruptDataError("shared memory is not a channel (bad magic word)");
    this.id = Atomics.load(this.header, H.ID);
    this.capacity = Atomics.load(this.header, H.CAPACITY);
    if (this.capacity < -1) throw new CorruptDataError(`channel ${this.id}: capacity ${this.capacity} out of range`);
    const nameLength = Atomics.load(this.header, H.NAME_LEN);
    if (nameLength < 0 || nameLength > NAME_BYTES) throw new CorruptDataError(`channel ${this.id}: name length ${nameLength} out of range`);
    this.name = new TextDecoder().decode(new Uint8Array(buffer, NAME_OFFSET, nameLength).slice());
  }

  // ---- journal (see the file comment) ----
  /** Starts a critical section: snapshots the header words it may change. */
  beginJournal(): void {
    const header = this.header;
    header.copyWithin(JOURNAL_SNAPSHOT_WORD, SNAPSHOT_FIRST_WORD, SNAPSHOT_END_WORD);
    Atomics.store(header, JOURNAL_UNDO_WORD, 0);
    Atomics.store(header, JOURNAL_VALID_WORD, 1);
  }
  /** Ends a critical section: its changes stand. */
  endJournal(): void {
    Atomics.store(this.header, JOURNAL_VALID_WORD, 0);
  }
  /** Logs the old value of a word outside the snapshot before it changes. */
  private logUndo(area: number, index: number, old: number): void {
    const header = this.header;
    if (Atomics.load(header, JOURNAL_VALID_WORD) !== 1) return; // not in a journaled section (creation)
    const count = Atomics.load(header, JOURNAL_UNDO_WORD);
    if (count >= JOURNAL_MAX_ENTRIES) throw this.corrupt("journal overflow");
    const at = JOURNAL_ENTRIES_WORD + count * 3;
    header[at] = area;
    header[at + 1] = index;
    header[at + 2] = old;
    Atomics.store(header, JOURNAL_UNDO_WORD, count + 1);
  }
  /**
   * Undoes a critical section its owner died in (call holding the lock,
   * taken over from the dead owner). Returns true when there was one.
   */
  rollback(): boolean {
    const header = this.header;
    if (Atomics.load(header, JOURNAL_VALID_WORD) !== 1) return false;
    const count = Math.min(Math.max(Atomics.load(header, JOURNAL_UNDO_WORD), 0), JOURNAL_MAX_ENTRIES);
    for (let i = count - 1; i >= 0; i--) {
      const at = JOURNAL_ENTRIES_WORD + i * 3;
      const [area, index, old] = [header[at]!, header[at + 1]!, header[at + 2]!];
      if (area === AREA_HEADER && index >= 0 && index < header.length) Atomics.store(header, index, old);
      else if (area === AREA_DATA && index >= 0 && index < this.dataWords.length) this.dataWords[index] = old;
      else throw this.corrupt(`journal entry ${i} (area ${area}, index ${index})`);
    }
    header.copyWithin(SNAPSHOT_FIRST_WORD, JOURNAL_SNAPSHOT_WORD, JOURNAL_SNAPSHOT_WORD + (SNAPSHOT_END_WORD - SNAPSHOT_FIRST_WORD));
    Atomics.store(header, JOURNAL_VALID_WORD, 0);
    return true;
  }

  // Header fields are plain loads and stores: they are written only under the
  // lock, whose acquire/release (Atomics) orders them; readers outside the lock
  // (stats, wake-ups, the deadlock detector) tolerate a stale value by design.
  get(field: number): number {
    return this.header[field]!;
  }
  set(field: number, value: number): void {
    this.header[field] = value;
  }
  add(field: number, delta: number): number {
    return (this.header[field] = this.header[field]! + delta);
  }

  /**
   * A number that changes whenever a message is added or taken, bytes are
   * freed or a side closes: what a spinning waiter watches (without the
   * lock) before it attempts again. Read with Atomics so the loop re-reads.
   */
  progressStamp(): number {
    const h = this.header;
    return (
      (Atomics.load(h, H.SEQ_HEAD) * 0x9e3779b1) ^
      Atomics.load(h, H.SEQ_TAIL) ^
      (Atomics.load(h, H.USED_BYTES) * 0x85ebca6b) ^
      (Atomics.load(h, H.CLOSED) << 29) ^
      (Atomics.load(h, H.STREAM_RECEIVER) << 21) ^
      (Atomics.load(h, H.WAITING_RECEIVERS) << 13)
    );
  }

  /** `channel 5 "replies"` — how messages name this channel. */
  describe(): string {
    return this.name ? `channel ${this.id} "${this.name}"` : `channel ${this.id}`;
  }

  corrupt(what: string): CorruptDataError {
    return new CorruptDataError(`${this.describe()}: shared state is corrupt (${what}); the channel cannot be used`);
  }

  // ---- statistics (float64, under the lock) ----
  get sent(): number {
    return this.counters[F64_SENT]!;
  }
  set sent(value: number) {
    this.counters[F64_SENT] = value;
  }
  get received(): number {
    return this.counters[F64_RECEIVED]!;
  }
  set received(value: number) {
    this.counters[F64_RECEIVED] = value;
  }

  // ---- waiters ----
  /**
   * Counts `delta` operations of party `slot` as parked on `side` (WAITING_*
   * and the party's own count), and keeps its bit in the waiter bitmap set
   * exactly while that count is positive. Under the lock.
   */
  addWaits(side: Side, slot: number, delta: number): void {
    const word = (side === "send" ? WAITS_SEND_WORD : WAITS_RECV_WORD) + slot;
    const bitmapWord = (side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD) + (slot >>> 5);
    this.logUndo(AREA_HEADER, word, Atomics.load(this.header, word));
    this.logUndo(AREA_HEADER, bitmapWord, Atomics.load(this.header, bitmapWord));
    const count = Atomics.add(this.header, word, delta) + delta;
    if (count < 0) throw this.corrupt(`party ${slot} would have ${count} parked ${side} operations`);
    this.add(side === "send" ? H.WAITING_SENDERS : H.WAITING_RECEIVERS, delta);
    const base = side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD;
    if (count === 0) Atomics.and(this.header, base + (slot >>> 5), ~(1 << (slot & 31)));
    else if (count === delta) Atomics.or(this.header, base + (slot >>> 5), 1 << (slot & 31));
  }
  /** Operations of party `slot` parked on `side`. */
  waits(side: Side, slot: number): number {
    return Atomics.load(this.header, (side === "send" ? WAITS_SEND_WORD : WAITS_RECV_WORD) + slot);
  }
  /** Appends the slots of parties waiting on `side` to `out`. */
  collectWaiters(side: Side, out: number[]): void {
    const base = side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD;
    for (let w = 0; w < BITMAP_WORDS; w++) {
      let bits = Atomics.load(this.header, base + w);
      while (bits !== 0) {
        const bit = 31 - Math.clz32(bits & -bits);
        out.push(w * 32 + bit);
        bits &= bits - 1;
      }
    }
  }

  // ---- holders ----
  holders(side: Side, slot: number): number {
    return Atomics.load(this.header, (side === "send" ? HOLDERS_SEND_WORD : HOLDERS_RECV_WORD) + slot);
  }
  /** Adds `delta` handles of `side` held by `slot` (TRANSIT for in flight); keeps the total in step. */
  addHolders(side: Side, slot: number, delta: number): void {
    const word = (side === "send" ? HOLDERS_SEND_WORD : HOLDERS_RECV_WORD) + slot;
    this.logUndo(AREA_HEADER, word, Atomics.load(this.header, word));
    const held = Atomics.add(this.header, word, delta) + delta;
    if (held < 0) {
      Atomics.store(this.header, word, 0);
      throw this.corrupt(`party ${slot} would hold ${held} ${side} handles`);
    }
    this.add(side === "send" ? H.SEND_HANDLES : H.RECV_HANDLES, delta);
  }

  // ---- ring ----
  /** Checked read of the ring indices (throws CorruptDataError on any violation). */
  /** Re-creates the data views over the whole buffer (after this or another thread grew it). */
  private remapData(): void {
    const dataBytes = this.buffer.byteLength - HEADER_BYTES;
    this.data = new Uint8Array(this.buffer, HEADER_BYTES, dataBytes);
    this.dataWords = new Int32Array(this.buffer, HEADER_BYTES, dataBytes >>> 2);
  }

  ringIndices(): RingIndices {
    const size = this.get(H.DATA_SIZE);
    if (size > this.data.length) this.remapData(); // another thread grew the ring
    const head = this.get(H.HEAD);
    const tail = this.get(H.TAIL);
    const wrapAt = this.get(H.WRAP_AT);
    if (size < 0 || size > this.data.length || (size & 7) !== 0) throw this.corrupt(`data size ${size}`);
    if (head < 0 || head > size || (head & 7) !== 0) throw this.corrupt(`head ${head}`);
    if (tail < 0 || tail > size || (tail & 7) !== 0) throw this.corrupt(`tail ${tail}`);
    if (wrapAt !== -1 && (wrapAt < head || wrapAt > size || tail > head || (wrapAt & 7) !== 0)) throw this.corrupt(`wrap point ${wrapAt}`);
    if (wrapAt === -1 && tail < head) throw this.corrupt(`tail ${tail} behind head ${head}`);
    const indices = this.indices; // reused: the hot paths must not allocate
    indices.head = head;
    indices.tail = tail;
    indices.wrapAt = wrapAt;
    indices.size = size;
    return indices;
  }


  /**
   * Finds room for a record of `bytes` bytes and returns its offset, growing
   * the buffer (up to MAX_DATA_SIZE) when that helps; -1 when there is no
   * room now. Does not write anything but WRAP_AT/TAIL bookkeeping in grow.
   */
  reserve(bytes: number): number {
    const at = this.findRoom(bytes);
    if (at >= 0) return at;
    if (this.grow(bytes)) return this.findRoom(bytes);
    return -1;
  }

  private findRoom(bytes: number): number {
    const { head, tail, wrapAt, size } = this.ringIndices();
    if (wrapAt === -1) {
      if (size - tail >= bytes) return tail;
      // Not enough room at the end: wrap to 0 if [0, head) has room. A wrapped
      // ring may fill up to tail == head; USED_BYTES tells full from empty.
      return this.get(H.USED_BYTES) > 0 && head >= bytes ? 0 : -1;
    }
    return head - tail >= bytes ? tail : -1;
  }

  /** Bytes a record could have if written now (without growing). */
  largestRoom(): number {
    const { head, tail, wrapAt, size } = this.ringIndices();
    if (wrapAt === -1) return Math.max(size - tail, head > 0 ? head : 0);
    return head - tail;
  }

  /** Writes a record at `offset` (from reserve) and publishes it (TAIL, USED_BYTES). */
  commitRecord(offset: number, payloadLength: number, flags: number, seq: number, total: number): void {
    const { tail, wrapAt } = this.ringIndices();
    const size = recordBytes(payloadLength);
    if (offset !== tail) {
      if (offset !== 0 || wrapAt !== -1) throw this.corrupt(`record offset ${offset} is neither tail ${tail} nor a wrap`);
      this.set(H.WRAP_AT, tail);
    }
    const word = offset >>> 2;
    this.dataWords[word] = payloadLength;
    this.dataWords[word + 1] = flags;
    this.dataWords[word + 2] = seq;
    this.dataWords[word + 3] = total;
    this.set(H.TAIL, offset + size);
    this.add(H.USED_BYTES, size);
  }

  /** Offset of the oldest record, or -1 when the ring is empty. Normalises a pending wrap. */
  headRecord(): number {
    if (this.get(H.USED_BYTES) === 0) return -1;
    const { head, wrapAt } = this.ringIndices();
    if (wrapAt !== -1 && head === wrapAt) {
      this.set(H.HEAD, 0);
      this.set(H.WRAP_AT, -1);
      return this.checkRecord(0);
    }
    return this.checkRecord(head);
  }

  /** Validates the head record at `offset` and returns the offset. */
  checkRecord(offset: number): number {
    const { head, tail, wrapAt } = this.ringIndices();
    const end = wrapAt !== -1 && offset >= head ? wrapAt : tail;
    this.checkRecordWithin(offset, end);
    return offset;
  }

  recordLength(offset: number): number {
    return this.dataWords[offset >>> 2]!;
  }
  recordFlags(offset: number): number {
    return this.dataWords[(offset >>> 2) + 1]!;
  }
  setRecordFlags(offset: number, flags: number): void {
    const index = (offset >>> 2) + 1;
    this.logUndo(AREA_DATA, index, this.dataWords[index]!);
    this.dataWords[index] = flags;
  }
  recordSeq(offset: number): number {
    return this.dataWords[(offset >>> 2) + 2]!;
  }
  recordTotal(offset: number): number {
    return this.dataWords[(offset >>> 2) + 3]!;
  }
  /** A view of the payload of the record at `offset` (valid until the lock is released). */
  payload(offset: number): Uint8Array {
    const start = offset + RECORD_HEADER_BYTES;
    return this.data.subarray(start, start + this.recordLength(offset));
  }

  /** Frees the oldest record (at `offset`, from headRecord). */
  popRecord(offset: number): void {
    const size = recordBytes(this.recordLength(offset));
    const used = this.add(H.USED_BYTES, -size);
    if (used < 0) throw this.corrupt(`used bytes ${used}`);
    let head = offset + size;
    const wrapAt = this.get(H.WRAP_AT);
    if (used === 0) {
      // Empty: restart at 0 so the next records (and growth) find contiguous room.
      this.set(H.HEAD, 0);
      this.set(H.TAIL, 0);
      this.set(H.WRAP_AT, -1);
      return;
    }
    if (wrapAt !== -1 && head === wrapAt) {
      head = 0;
      this.set(H.WRAP_AT, -1);
    }
    this.set(H.HEAD, head);
  }

  /** Calls `visit(offset)` for every record, oldest first (the ring is not changed). */
  forEachRecord(visit: (offset: number) => void): void {
    let remaining = this.get(H.USED_BYTES);
    if (remaining === 0) return;
    const { head, tail, wrapAt } = this.ringIndices();
    let offset = head;
    let end = wrapAt === -1 ? tail : wrapAt;
    let guard = 0;
    while (remaining > 0) {
      if (offset === end && wrapAt !== -1 && end !== tail) {
        offset = 0;
        end = tail;
      }
      if (offset >= end && remaining > 0) throw this.corrupt(`records end at ${offset} but ${remaining} bytes are still counted`);
      this.checkRecordWithin(offset, end);
      const size = recordBytes(this.recordLength(offset));
      visit(offset);
      offset += size;
      remaining -= size;
      if (++guard > this.data.length) throw this.corrupt("record walk does not terminate");
    }
  }

  private checkRecordWithin(offset: number, end: number): void {
    if (offset + RECORD_HEADER_BYTES > end) throw this.corrupt(`record at ${offset} runs past ${end}`);
    const length = this.dataWords[offset >>> 2]!;
    if (length < 0 || offset + recordBytes(length) > end) throw this.corrupt(`record at ${offset} has length ${length}, past ${end}`);
    const total = this.dataWords[(offset >>> 2) + 3]!;
    if (total < length || total > this.get(H.MAX_MESSAGE_BYTES)) throw this.corrupt(`record at ${offset} has total ${total} for length ${length}`);
  }

  /** Drops every record (receivers are gone); keeps SEQ_HEAD so no send counts as taken. */
  clearRing(): void {
    this.set(H.HEAD, 0);
    this.set(H.TAIL, 0);
    this.set(H.WRAP_AT, -1);
    this.set(H.USED_BYTES, 0);
    this.set(H.LENGTH, 0);
    this.set(H.STREAM_RECEIVER, 0);
  }

  /**
   * Grows the data area so that a record of `bytes` fits, at least doubling
   * it, up to MAX_DATA_SIZE. A wrapped ring is unwrapped by moving its
   * [0, TAIL) part right after WRAP_AT, which the doubling makes room for.
   * Returns false when the budget does not allow it.
   */
  grow(bytes: number): boolean {
    const { tail, wrapAt, size } = this.ringIndices();
    const max = this.get(H.MAX_DATA_SIZE);
    const used = this.get(H.USED_BYTES);
    // Room for the record after unwrapping: tail <= 2·size when wrapped, <= size otherwise.
    let wanted = align8(Math.max(size * 2, (wrapAt === -1 ? size : size * 2) + bytes));
    if (wanted > max) wanted = max;
    if (wanted <= size || used + bytes > wanted) return false;
    // The buffer may already be longer than DATA_SIZE: a growth whose critical
    // section was rolled back (its thread died) cannot shrink the buffer back.
    // A SharedArrayBuffer never shrinks, so reuse what is there.
    wanted = Math.min(max, Math.max(wanted, (this.buffer.byteLength - HEADER_BYTES) & ~7));
    if (HEADER_BYTES + wanted > this.buffer.byteLength) this.buffer.grow(HEADER_BYTES + wanted);
    this.remapData();
    this.set(H.DATA_SIZE, wanted);
    if (wrapAt !== -1) {
      // Records are [head, wrapAt) then [0, tail): move [0, tail) to wrapAt.
      if (wrapAt + tail > wanted) return true; // cannot unwrap yet; the new room is after wrapAt anyway
      this.data.copyWithin(wrapAt, 0, tail);
      this.set(H.TAIL, wrapAt + tail);
      this.set(H.WRAP_AT, -1);
    }
    return true;
  }
}

/** Creates and initialises a channel's shared memory. */
export function createChannelMemory(options: {
  id: number;
  capacity: number;
  bufferBytes: number;
  maxBufferBytes: number;
  maxMessageBytes: number;
  name: string;
}): SharedArrayBuffer {
  const initial = align8(options.bufferBytes);
  const max = Math.max(initial, align8(options.maxBufferBytes));
  const buffer = new SharedArrayBuffer(HEADER_BYTES + initial, { maxByteLength: HEADER_BYTES + max });
  const header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
  header[H.MAGIC] = MAGIC;
  header[H.ID] = options.id;
  header[H.CAPACITY] = options.capacity === Infinity ? -1 : options.capacity;
  header[H.WRAP_AT] = -1;
  header[H.DATA_SIZE] = initial;
  header[H.MAX_DATA_SIZE] = max;
  header[H.MAX_MESSAGE_BYTES] = options.maxMessageBytes;
  const name = new TextEncoder().encode(options.name);
  let nameLength = Math.min(name.length, NAME_BYTES);
  // Do not cut a UTF-8 sequence in half.
  while (nameLength > 0 && nameLength < name.length && (name[nameLength]! & 0xc0) === 0x80) nameLength--;
  new Uint8Array(buffer, NAME_OFFSET, NAME_BYTES).set(name.subarray(0, nameLength));
  header[H.NAME_LEN] = nameLength;
  return buffer;
}
