/**
 * A channel's shared memory: a SharedArrayBuffer holding a header and, at
 * first, the ring of variable-size records after it; when the ring grows,
 * a new buffer of the data area alone replaces it (DATA_GEN). This file
 * owns the layout.
 *
 * Why no growable buffer: V8 backs each growable SharedArrayBuffer with a
 * reservation of its maximum size, two memory mappings of the process's
 * 65,530 (Linux vm.max_map_count) that live until every thread's wrapper
 * of it is garbage-collected, and V8 does not count them towards starting
 * a collection. A server making a channel per request ran out of mappings
 * (and aborted) after about 30,000. A fixed-size buffer is ordinary heap
 * memory (calloc), and its bytes do bring on collections.
 *
 * Two locks guard it (mutex.ts): SEND_LOCK, held by a sender, and RECV_LOCK,
 * held by a receiver. A plain send or receive takes only its own side's lock
 * (the fast paths of channel-ops.ts), so one sender and one receiver never
 * wait for each other. Everything else (streams, withdrawals, growth,
 * handles, waiter registration, the supervisor's cleanup) takes both, send
 * lock first. So every header word has one class of writer:
 *
 * - "both": written only with both locks held, hence stable for anyone
 *   holding either lock;
 * - "send side": written only under SEND_LOCK; a receiver may read it (with
 *   Atomics) as a possibly stale lower bound;
 * - "recv side": likewise under RECV_LOCK.
 *
 * Counters that both sides used to share are split into one monotonic
 * counter per side: bytes in the ring = WRITTEN - READ, messages buffered =
 * SEQ_TAIL - REMOVED - WITHDRAWN (all wrapping int32). A stale read of the
 * other side's counter only ever under-states room (for a sender) or
 * messages (for a receiver), so it is safe without the other lock.
 *
 * Each side's words fill their own 64-byte cache line, so a sender and a
 * receiver on two cores do not bounce each other's lines on every message.
 *
 * Header (Int32 words unless noted; byte offset = word × 4):
 *
 * | offset | size  | meaning                                                    | written by                     |
 * |--------|-------|------------------------------------------------------------|--------------------------------|
 * | 0      | 4     | MAGIC 0x43484e32 ("CHN2")                                  | creator                        |
 * | 4      | 4     | channel id                                                 | creator                        |
 * | 8      | 4     | capacity: -1 = Infinity, 0 = rendezvous, n = bounded       | creator; both (setCapacity)    |
 * | 12     | 4     | SEND_HANDLES: open send handles, in transit included       | both (handle owners, supervisor)|
 * | 16     | 4     | RECV_HANDLES: open recv handles, in transit included       | both                           |
 * | 20     | 4     | CLOSED bits: 1 no sender left, 2 no receiver left (sticky) | both (last closer)             |
 * | 24     | 4     | DATA_SIZE: bytes in the data area now                      | both (growth)                  |
 * | 28     | 4     | MAX_DATA_SIZE: the data area's budget (maxBufferBytes)     | creator                        |
 * | 32     | 4     | MAX_MESSAGE_BYTES                                          | creator                        |
 * | 36     | 4     | WITHDRAWN: messages withdrawn by their senders, ever       | both                           |
 * | 40     | 4     | STREAM_SENDER: slot + 1 of the party streaming, or 0       | both (the streaming sender)    |
 * | 44     | 4     | STREAM_RECEIVER: slot + 1 of the party taking a stream     | both (the claiming receiver)   |
 * | 48     | 4     | STREAM_SEQ: seq of the message being streamed              | both (the streaming sender)    |
 * | 52     | 4     | WAITING_SENDERS: send operations parked                    | both (waiting senders)         |
 * | 56     | 4     | WAITING_RECEIVERS: recv operations parked                  | both (waiting receivers)       |
 * | 60     | 4     | NAME_LEN                                                   | creator                        |
 * | 64     | 4     | TAIL: byte offset in the data area where the next record goes | send side                   |
 * | 68     | 4     | WRITTEN: bytes ever put in the ring (records and padding)  | send side                      |
 * | 72     | 4     | SEQ_TAIL: seq the next message gets = messages ever admitted | send side                    |
 * | 80     | 8     | SENT (float64): messages accepted                          | send side                      |
 * | 88     | 4     | SENDERS_SHORT_OF_BYTES: 1 while a waiting sender of a bounded channel found a slot free but not the bytes; cleared when no sender waits | both |
 * | 92     | 4     | OVERFLOW: what a send does with no room: 0 wait, 1 drop-newest, 2 drop-oldest, 3 error | creator |
 * | 96     | 8     | DROPPED (float64): messages discarded by the overflow policy | send side                      |
 * | 124    | 4     | SEND_LOCK: 0 free, else (owner slot + 1) + contended bit   | lockers (mutex.ts)             |
 * | 128    | 4     | HEAD: byte offset of the oldest record (or padding)        | recv side                      |
 * | 132    | 4     | READ: bytes ever freed from the ring                       | recv side                      |
 * | 136    | 4     | SEQ_HEAD: seq of the newest message taken, plus one        | recv side                      |
 * | 140    | 4     | REMOVED: messages ever taken (or dropped after their taker died) | recv side                |
 * | 144    | 8     | RECEIVED (float64): messages taken                         | recv side                      |
 * | 164    | 16    | TOKEN: 128 random bits naming this channel's incarnation  | creator                        |
 * |        |       | (ids are reused once dead); checked where a message names  |                                |
 * |        |       | the channel in another thread (data generations, fetches)  |                                |
 * | 160    | 4     | DATA_GEN: which buffer holds the data area: 0 = this one,  | both (growth); outside every   |
 * |        |       | after the header; g > 0 = the g-th replacement, a buffer   | journal snapshot: never rolled |
 * |        |       | of its own (see grow); only ever increases                 | back                           |
 * | 180    | 4     | OPTIONS: bit 0 = checksum (every message ends with a CRC-32: see the record table) | creator |
 * | 188    | 4     | RECV_LOCK: like SEND_LOCK                                  | lockers (mutex.ts)             |
 * | 192    | 32    | SEND_WAITERS: bitmap, bit s = party s waits to send        | both (waiting senders)         |
 * | 224    | 32    | RECV_WAITERS: bitmap, bit s = party s waits to recv        | both (waiting receivers)       |
 * | 256    | 64    | NAME (UTF-8)                                               | creator                        |
 * | 320    | 1028  | HOLDERS_SEND[257]: send handles held by party s (256 = in transit) | both                   |
 * | 1348   | 1028  | HOLDERS_RECV[257]: recv handles held by party s (256 = in transit) | both                   |
 * | 2376   | 1024  | WAITS_SEND[256]: send operations party s has parked here   | both                           |
 * | 3400   | 1024  | WAITS_RECV[256]: recv operations party s has parked here   | both                           |
 * | 4480   | 4     | SEND_JOURNAL_VALID: 1 (send lock only) or 2 (both) while a section may be half done | the send lock holder |
 * | 4484   | 4     | SEND_JOURNAL_UNDO: number of undo entries                  | the send lock holder           |
 * | 4496   | 124   | SEND_JOURNAL snapshot of words 0..30 (one lock: 16..21)   | the send lock holder           |
 * | 4624   | 768   | SEND_JOURNAL undo entries: 64 × (area, index, old value)   | the send lock holder           |
 * | 5440   | 4     | RECV_JOURNAL_VALID                                         | the recv lock holder           |
 * | 5456   | 24    | RECV_JOURNAL snapshot of words 32..37                     | the recv lock holder           |
 * | 5504   | 32    | PROBING_RECEIVERS: bitmap, bit s = party s spins, not      | party s itself (Atomics.or/and,|
 * |        |       | registered, waiting for a message here (channel.ts runSync)| no lock); supervisor if it died|
 * | 8192   | ...   | DATA area of generation 0: the ring (DATA_SIZE bytes)      | senders write, receivers read  |
 *
 * Record (at an 8-aligned offset of the data area; 16-byte header):
 *
 * | offset | size | meaning                                                            |
 * |--------|------|--------------------------------------------------------------------|
 * | 0      | 4    | payload bytes in this record                                       |
 * | 4      | 4    | flags: FIRST 1, LAST 2, TOMBSTONE 4 (withdrawn), ATTACH 8, PAD 16, |
 * |        |      | RAW_BYTES 32, RAW_BUFFER 64 (the payload is the value's own bytes),|
 * |        |      | CHECKSUM 128 (the message ends with its CRC-32; every record of a  |
 * |        |      | channel with OPTIONS bit 0 has it, and no other record)            |
 * | 8      | 4    | seq of the message                                                 |
 * | 12     | 4    | total payload bytes of the message (over all its records)          |
 * | 16     | len  | payload, then padding to a multiple of 8                           |
 *
 * With the checksum option, a message's payload (the concatenation of its
 * records' payloads, `total` bytes) is the message's bytes followed by 4
 * more: the CRC-32 (crc32.ts), little-endian, of the message's bytes and
 * then of its flags word masked to ATTACH | RAW_BYTES | RAW_BUFFER |
 * CHECKSUM (little-endian), so a flipped flag that would change how the
 * bytes are decoded is caught too. The sender computes it over its own
 * copy before writing; the receiver over its own copy after reading
 * (never over shared memory, which could change between the check and
 * the use), and a mismatch is CorruptDataError (channel-ops.ts). One CRC
 * per message, not per record: a stream's pieces are checked as the
 * message they make, the record header stays 16 bytes, and every walker of
 * the ring is unchanged. The CRC is after the bytes, not before, so a raw
 * payload still starts 8-aligned and the attachment table stays at offset
 * 0 for every reader of it. Ring bookkeeping (lengths, totals, seq) is
 * checked for plausibility, not by the CRC. A CRC detects damage and
 * careless writes, not a forger who recomputes it.
 *
 * A payload starts 8-aligned in the ring, and the pieces of a stream are
 * multiples of 8 bytes (but the last), so each piece also lands 8-aligned
 * in the receiver's copy. That matters: V8 copies to or from shared memory word by word
 * only when both sides have the same alignment mod 8, and byte by byte
 * otherwise (7-8x slower for a 1 MiB message here). Hence the RAW flags: a
 * top-level Uint8Array or ArrayBuffer travels as its bytes alone, with no
 * tag byte in front that would shift them off alignment.
 *
 * A message is one record (FIRST|LAST) or, when larger than the ring can
 * ever hold, a stream of records FIRST, ..., LAST written by one sender
 * (STREAM_SENDER) and taken by one receiver (STREAM_RECEIVER).
 *
 * Ring invariants (established by createChannelMemory, kept by every writer):
 * HEAD and TAIL are multiples of 8 in [0, DATA_SIZE); used = WRITTEN - READ
 * is in [0, DATA_SIZE] and the ring's bytes are [HEAD, HEAD + used) taken
 * circularly, so TAIL = (HEAD + used) mod DATA_SIZE. Records never wrap
 * around the end: a sender that reaches a point where its record does not
 * fit writes a PAD record there (or, with fewer than 16 bytes left, nothing:
 * readers skip such a tail implicitly), counts the skipped bytes as
 * written, and goes on at 0. Records are in seq order. Every value read
 * back from shared memory is checked against these bounds (CorruptDataError).
 *
 * Header words are checked when read, as record lengths are, so that a
 * corrupt one raises CorruptDataError instead of an error that blames
 * something else, a nonsense statistic, a lost message or a hang
 * (ChannelMemory's "checked" readers; each is a load and a compare or two):
 * MAX_DATA_SIZE and MAX_MESSAGE_BYTES must be what their creator wrote
 * (each thread keeps the value it first read, range-checked); CAPACITY >=
 * -1; CLOSED holds only its two flags, a flag is set exactly when its
 * side's handle count is 0, and a sender (receiver) whose handle is open
 * never sees its own side closed; STREAM_SENDER and STREAM_RECEIVER name
 * no party past 256, a stream under way is the last message admitted
 * (STREAM_SEQ + 1 = SEQ_TAIL), and no new message is at the head while a
 * receiver holds a stream; the messages buffered (SEQ_TAIL - REMOVED -
 * WITHDRAWN) are in [0, MAX_DATA_SIZE / 16 + 2]; SEQ_HEAD is not past
 * SEQ_TAIL; a handle count is the sum of its holder table. The fast paths
 * read no extra word but RECV_HANDLES (a sender, on the cache line it
 * reads anyway) and leave anything unusual to the full attempt, which
 * checks. stats() audits the whole header (auditHeader): also the waiting
 * counts against the parties' tables and the waiter bitmaps, and the
 * float64 statistics. What no check can tell from a good value (a
 * plausible count, a bit in a bitmap that only costs a wake-up) stays
 * undetected; test/hardening-header.test.ts lists what is.
 *
 * The journals make every critical section all-or-nothing even if its
 * thread is killed inside it (terminate(), resource limits): each lock's
 * holder snapshots the words it may change before changing any (a section
 * holding both locks snapshots every header word and logs the old value of
 * every other word it changes: holder and waiter tables, record flags) and
 * clears its VALID word just before unlocking. Whoever takes over a lock of
 * a dead owner rolls that lock's journal back, so a half-written record is
 * never published and a half-taken message is back in the ring.
 *
 * A one-lock section is read by the other side before it ends: a receiver
 * acquires WRITTEN, a sender READ, without the other lock. So each one-lock
 * section has a commit point, its last store: WRITTEN for a send, READ for
 * a receive (everything else it changes is written before). A dead owner's
 * one-lock section whose commit point has passed is complete, and is kept;
 * one whose commit point has not passed was seen by nobody, and is undone.
 * (A receive stores SEQ_HEAD just before READ: a rendezvous sender that saw
 * it and returned, while the receiver died between the two stores, had its
 * message taken by a receiver that died with it; the message is delivered
 * again, once, to another receiver.)
 */
import { CorruptDataError } from "./errors.js";

export const HEADER_BYTES = 8192;
/** The largest data area (maxBufferBytes) a channel may have: channel.ts LIMIT_BUFFER_BYTES. */
const MAX_DATA_LIMIT = 2 ** 30;
/** The smallest: createChannelMemory rounds bufferBytes up to this. */
const MIN_DATA_SIZE = 64;
/** Doubling from 64 bytes to the 1 GiB limit takes 24 generations; more means a corrupt DATA_GEN. */
const MAX_DATA_GENERATIONS = 64;

/**
 * How a thread finds a grown data area (installed by registry.ts in user
 * threads, by the supervisor in its own): `publish` makes a new generation
 * findable before DATA_GEN names it; `resolve` returns generation `gen` of
 * `memory`'s data area, or throws (CorruptDataError when it cannot exist;
 * in the supervisor, DataPending while its registration is on the way).
 */
export interface DataBuffers {
  publish(memory: ChannelMemory, gen: number, buffer: SharedArrayBuffer): void;
  resolve(memory: ChannelMemory, gen: number): SharedArrayBuffer;
}
let dataBuffers: DataBuffers = {
  publish() {},
  resolve(memory, gen) {
    throw memory.corrupt(`data generation ${gen} is unknown in this thread`);
  },
};
export function installDataBuffers(hooks: DataBuffers): void {
  dataBuffers = hooks;
}
export const RECORD_HEADER_BYTES = 16;
const MAGIC = 0x43484e32;

export const H = {
  MAGIC: 0,
  ID: 1,
  CAPACITY: 2,
  SEND_HANDLES: 3,
  RECV_HANDLES: 4,
  CLOSED: 5,
  DATA_SIZE: 6,
  MAX_DATA_SIZE: 7,
  MAX_MESSAGE_BYTES: 8,
  WITHDRAWN: 9,
  STREAM_SENDER: 10,
  STREAM_RECEIVER: 11,
  STREAM_SEQ: 12,
  WAITING_SENDERS: 13,
  WAITING_RECEIVERS: 14,
  NAME_LEN: 15,
  TAIL: 16,
  WRITTEN: 17,
  SEQ_TAIL: 18,
  SENDERS_SHORT_OF_BYTES: 22,
  OVERFLOW: 23,
  SEND_LOCK: 31,
  HEAD: 32,
  READ: 33,
  SEQ_HEAD: 34,
  REMOVED: 35,
  DATA_GEN: 40,
  TOKEN: 41,
  OPTIONS: 45,
  RECV_LOCK: 47,
} as const;

const F64_SENT = 80 / 8;
const F64_DROPPED = 96 / 8;
const F64_RECEIVED = 144 / 8;
const SEND_WAITERS_WORD = 192 / 4;
const RECV_WAITERS_WORD = 224 / 4;
const BITMAP_WORDS = 8;
const NAME_OFFSET = 256;
export const NAME_BYTES = 64;
const HOLDERS_SEND_WORD = 320 / 4;
const HOLDERS_RECV_WORD = 1348 / 4;
const WAITS_SEND_WORD = 2376 / 4;
const WAITS_RECV_WORD = 3400 / 4;
const SEND_JOURNAL_VALID_WORD = 4480 / 4;
const SEND_JOURNAL_UNDO_WORD = 4484 / 4;
/** The send journal snapshots words [0, SEND_LOCK): the "both" words and the send side's. */
const SEND_SNAPSHOT_WORD = 4496 / 4;
const SEND_JOURNAL_ENTRIES_WORD = 4624 / 4;
const JOURNAL_MAX_ENTRIES = 64;
/**
 * The words a send-lock-only section may change: TAIL, WRITTEN, SEQ_TAIL,
 * SENT (float64, words 20-21) and DROPPED (words 24-25); words 22-23 are
 * written only under both locks, so restoring them is a no-op.
 */
const SEND_SIDE_FIRST = 16;
const SEND_SIDE_END = 26;
const RECV_JOURNAL_VALID_WORD = 5440 / 4;
/** The recv journal snapshots words [HEAD, RECV_SIDE_END): HEAD, READ, SEQ_HEAD, REMOVED, RECEIVED. */
const RECV_SNAPSHOT_WORD = 5456 / 4;
const RECV_SIDE_END = 38;
const PROBING_RECEIVERS_WORD = 5504 / 4;
/** VALID word values: a section holding one lock (with a commit point), or both. */
const JOURNAL_ONE_LOCK = 1;
const JOURNAL_BOTH_LOCKS = 2;
const AREA_HEADER = 1;
const AREA_DATA = 2;
/** Holder table index that counts ends carried inside messages or in flight. */
export const TRANSIT = 256;

/** A 128-bit capability (four int32 words): a channel's TOKEN, or a shared object's (registry.ts). */
export type Token = readonly [number, number, number, number];

/** Overflow policies as stored in OVERFLOW (see channel.ts for their meaning). */
export const Overflow = { WAIT: 0, DROP_NEWEST: 1, DROP_OLDEST: 2, ERROR: 3 } as const;
export const OVERFLOW_NAMES = ["wait", "drop-newest", "drop-oldest", "error"] as const;
export type OverflowPolicy = (typeof OVERFLOW_NAMES)[number];

export const CLOSED_NO_SENDERS = 1;
export const CLOSED_NO_RECEIVERS = 2;

export const R_FIRST = 1;
export const R_LAST = 2;
export const R_TOMBSTONE = 4;
export const R_ATTACH = 8;
/** Not a message: the bytes from here to the end of the data area are skipped (the sender wrapped). */
export const R_PAD = 16;
/** The payload is a top-level Uint8Array's bytes, nothing else (transfer.ts). */
export const R_RAW_BYTES = 32;
/** The payload is a top-level ArrayBuffer's bytes, nothing else. */
export const R_RAW_BUFFER = 64;
/** The message's payload ends with its CRC-32 (a channel created with `checksum: true`). */
export const R_CHECKSUM = 128;
/** The flags a message carries in every record of it, which the checksum covers. */
export const MESSAGE_FLAGS = R_ATTACH | R_RAW_BYTES | R_RAW_BUFFER | R_CHECKSUM;
/** Bytes of the CRC-32 at the end of a checksummed message's payload. */
export const CHECKSUM_BYTES = 4;
/** OPTIONS bits. */
const OPTION_CHECKSUM = 1;

export type Side = "send" | "recv";
/** Which locks a critical section holds. */
export const enum Locks {
  SEND = 1,
  RECV = 2,
  BOTH = 3,
}

/** Rounds up to the next multiple of 8. */
export function align8(n: number): number {
  return (n + 7) & ~7;
}

/** Bytes one record with `payload` bytes of payload takes in the ring. */
export function recordBytes(payload: number): number {
  return RECORD_HEADER_BYTES + align8(payload);
}

/** One thread's views of a channel's shared memory. */
export class ChannelMemory {
  /** This thread's current spin budget on this channel (µs), adapted by the sync driver. */
  spinMicros = 100;
  /** Roll back each lock's journal (bound once: passed to the lock on every acquisition). */
  readonly rollbackSendBound: () => void = () => void this.rollbackSend();
  readonly rollbackRecvBound: () => void = () => void this.rollbackRecv();
  /** The buffer holding the header (and the data area of generation 0): what travels to other threads. */
  readonly buffer: SharedArrayBuffer;
  readonly header: Int32Array;
  readonly counters: Float64Array;
  /**
   * Views of the data area of generation `dataGen`, switched when another
   * thread grew it (see dataSize and switchData). Valid only under a lock:
   * growth takes both.
   */
  data: Uint8Array;
  dataWords: Int32Array;
  private dataGen = 0;
  /**
   * The data buffers this thread knows of, by generation, from the one
   * DATA_GEN names on (from its own growth, a fetch, or the supervisor's
   * registrations). More than the newest: a grower killed between
   * publishing a generation and naming it in DATA_GEN leaves a newer one
   * that never becomes current, while the current one is still needed.
   */
  private dataByGen = new Map<number, SharedArrayBuffer>();
  readonly id: number;
  readonly name: string;
  /** The overflow policy (Overflow.*), fixed at creation. */
  readonly overflow: number;
  /**
   * MAX_DATA_SIZE and MAX_MESSAGE_BYTES as this thread first read them
   * (checked then): the creator writes them once, so a later read that
   * differs is a corrupt header (see maxDataSize, maxMessageBytes).
   */
  private readonly creatorMaxData: number;
  private readonly creatorMaxMessage: number;
  /**
   * The most messages that can be buffered at once: each has a record of
   * at least 16 bytes in the ring, but for one being streamed in (admitted
   * before its first piece) and one being streamed out (its pieces may all
   * be taken while its sender writes the next). A count outside [0, this]
   * is corrupt.
   */
  private readonly maxBuffered: number;
  /** Created with `checksum: true` (OPTIONS, read once): R_CHECKSUM here, else 0; every record must carry exactly this. */
  readonly checksumFlag: number;
  /** The bytes a record's payload may hold beyond the message itself: CHECKSUM_BYTES with the checksum, else 0. */
  readonly trailerBytes: number;
  /**
   * This thread's last reads of the other side's counters (see the file
   * comment: each only moves forward while anyone can see it, so an old
   * value under-states room or messages, never over-states them). Re-read
   * only when the cached value says "no room" or "empty", so that a sender
   * and a receiver on two cores do not pull each other's cache line for
   * every message. knownWritten is dropped when the data area grows
   * (growth may un-count padding, moving WRITTEN back).
   */
  private knownRead = 0;
  private knownRemoved = 0;
  private knownWritten = 0;
  private knownWrittenSize = -1;
  /** Padding headRecord found before the record it returned, freed with that record by popRecord. */
  private padAt = -1;
  private padBytes = 0;

  constructor(buffer: SharedArrayBuffer) {
    if (buffer.byteLength < HEADER_BYTES) throw new CorruptDataError(`channel memory of ${buffer.byteLength} bytes is smaller than its header`);
    this.buffer = buffer;
    this.header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    this.counters = new Float64Array(buffer, 0, HEADER_BYTES / 8);
    // Generation 0 until a locked section finds DATA_GEN newer (dataSize).
    const dataBytes = (buffer.byteLength - HEADER_BYTES) & ~7;
    this.data = new Uint8Array(buffer, HEADER_BYTES, dataBytes);
    this.dataWords = new Int32Array(buffer, HEADER_BYTES, dataBytes >>> 2);
    if (Atomics.load(this.header, H.MAGIC) !== MAGIC) throw new CorruptDataError("shared memory is not a channel (bad magic word)");
    this.id = Atomics.load(this.header, H.ID);
    const capacity = Atomics.load(this.header, H.CAPACITY);
    if (capacity < -1) throw new CorruptDataError(`channel ${this.id}: capacity ${capacity} out of range`);
    this.overflow = Atomics.load(this.header, H.OVERFLOW);
    if (this.overflow < 0 || this.overflow > Overflow.ERROR) throw new CorruptDataError(`channel ${this.id}: overflow policy ${this.overflow} out of range`);
    const nameLength = Atomics.load(this.header, H.NAME_LEN);
    if (nameLength < 0 || nameLength > NAME_BYTES) throw new CorruptDataError(`channel ${this.id}: name length ${nameLength} out of range`);
    this.name = new TextDecoder().decode(new Uint8Array(buffer, NAME_OFFSET, nameLength).slice());
    this.creatorMaxData = Atomics.load(this.header, H.MAX_DATA_SIZE);
    if (this.creatorMaxData < MIN_DATA_SIZE || this.creatorMaxData > MAX_DATA_LIMIT || (this.creatorMaxData & 7) !== 0) {
      throw new CorruptDataError(`channel ${this.id}: max data size ${this.creatorMaxData} out of range`);
    }
    this.creatorMaxMessage = Atomics.load(this.header, H.MAX_MESSAGE_BYTES);
    if (this.creatorMaxMessage < 1) throw new CorruptDataError(`channel ${this.id}: max message bytes ${this.creatorMaxMessage} out of range`);
    this.maxBuffered = (this.creatorMaxData >>> 4) + 2;
    const options = Atomics.load(this.header, H.OPTIONS);
    if ((options & ~OPTION_CHECKSUM) !== 0) throw new CorruptDataError(`channel ${this.id}: options 0x${(options >>> 0).toString(16)} out of range`);
    this.checksumFlag = options & OPTION_CHECKSUM ? R_CHECKSUM : 0;
    this.trailerBytes = this.checksumFlag !== 0 ? CHECKSUM_BYTES : 0;
  }

  // ---- journals (see the file comment) ----
  /** Starts a critical section holding `locks`: snapshots the words it may change. */
  beginJournal(locks: Locks): void {
    const header = this.header;
    if (locks === Locks.BOTH) {
      header.copyWithin(SEND_SNAPSHOT_WORD, 0, H.SEND_LOCK);
      Atomics.store(header, SEND_JOURNAL_UNDO_WORD, 0);
      Atomics.store(header, SEND_JOURNAL_VALID_WORD, JOURNAL_BOTH_LOCKS);
    } else if (locks === Locks.SEND) {
      // A handful of words: a plain loop is cheaper than a copyWithin call.
      for (let i = SEND_SIDE_FIRST; i < SEND_SIDE_END; i++) header[SEND_SNAPSHOT_WORD + i] = header[i]!;
      Atomics.store(header, SEND_JOURNAL_VALID_WORD, JOURNAL_ONE_LOCK);
    }
    if (locks & Locks.RECV) {
      for (let i = H.HEAD; i < RECV_SIDE_END; i++) header[RECV_SNAPSHOT_WORD + i - H.HEAD] = header[i]!;
      Atomics.store(header, RECV_JOURNAL_VALID_WORD, locks === Locks.BOTH ? JOURNAL_BOTH_LOCKS : JOURNAL_ONE_LOCK);
    }
  }
  /** Ends a critical section: its changes stand. */
  endJournal(locks: Locks): void {
    // Plain stores: the unlock right after (an Atomics exchange) publishes them.
    if (locks & Locks.RECV) this.header[RECV_JOURNAL_VALID_WORD] = 0;
    if (locks & Locks.SEND) this.header[SEND_JOURNAL_VALID_WORD] = 0;
  }
  /**
   * Logs the old value of a word outside the snapshots before it changes.
   * Only sections holding both locks change such words, so the log is the
   * send journal's.
   */
  private logUndo(area: number, index: number, old: number): void {
    const header = this.header;
    if (Atomics.load(header, SEND_JOURNAL_VALID_WORD) !== JOURNAL_BOTH_LOCKS) return; // not in a journaled section (creation)
    const count = Atomics.load(header, SEND_JOURNAL_UNDO_WORD);
    if (count >= JOURNAL_MAX_ENTRIES) throw this.corrupt("journal overflow");
    const at = SEND_JOURNAL_ENTRIES_WORD + count * 3;
    header[at] = area;
    header[at + 1] = index;
    header[at + 2] = old;
    Atomics.store(header, SEND_JOURNAL_UNDO_WORD, count + 1);
  }
  /**
   * Under both locks, between two complete steps of one section: if `entries`
   * more undo entries would overflow the journal, ends the section there
   * (its steps so far stand) and opens a fresh one.
   */
  checkpointForUndo(entries: number): void {
    const header = this.header;
    if (Atomics.load(header, SEND_JOURNAL_VALID_WORD) !== JOURNAL_BOTH_LOCKS) return;
    if (Atomics.load(header, SEND_JOURNAL_UNDO_WORD) + entries <= JOURNAL_MAX_ENTRIES) return;
    this.endJournal(Locks.BOTH);
    this.beginJournal(Locks.BOTH);
  }
  /**
   * Undoes the send-lock part of a critical section its owner died in (call
   * holding the send lock, taken over from the dead owner). True when there was one.
   */
  rollbackSend(): boolean {
    const header = this.header;
    const valid = Atomics.load(header, SEND_JOURNAL_VALID_WORD);
    if (valid === JOURNAL_ONE_LOCK) {
      // Past its commit point (WRITTEN moved), the section is complete; before it, nobody saw it.
      if (header[H.WRITTEN] === header[SEND_SNAPSHOT_WORD + H.WRITTEN]) {
        for (let i = SEND_SIDE_FIRST; i < SEND_SIDE_END; i++) header[i] = header[SEND_SNAPSHOT_WORD + i]!;
      }
      Atomics.store(header, SEND_JOURNAL_VALID_WORD, 0);
      return true;
    }
    if (valid !== JOURNAL_BOTH_LOCKS) return false;
    this.refreshData(); // its undo entries for the data area are for the newest generation
    const count = Math.min(Math.max(Atomics.load(header, SEND_JOURNAL_UNDO_WORD), 0), JOURNAL_MAX_ENTRIES);
    for (let i = count - 1; i >= 0; i--) {
      const at = SEND_JOURNAL_ENTRIES_WORD + i * 3;
      const [area, index, old] = [header[at]!, header[at + 1]!, header[at + 2]!];
      if (area === AREA_HEADER && index >= 0 && index < header.length) Atomics.store(header, index, old);
      else if (area === AREA_DATA && index >= 0 && index < this.dataWords.length) this.dataWords[index] = old;
      else throw this.corrupt(`journal entry ${i} (area ${area}, index ${index})`);
    }
    header.copyWithin(0, SEND_SNAPSHOT_WORD, SEND_SNAPSHOT_WORD + H.SEND_LOCK);
    Atomics.store(header, SEND_JOURNAL_VALID_WORD, 0);
    return true;
  }
  /** Undoes the recv-lock part of a critical section its owner died in (holding the recv lock). */
  rollbackRecv(): boolean {
    const header = this.header;
    const valid = Atomics.load(header, RECV_JOURNAL_VALID_WORD);
    if (valid !== JOURNAL_ONE_LOCK && valid !== JOURNAL_BOTH_LOCKS) return false;
    // A one-lock section past its commit point (READ moved) is complete.
    const committed = valid === JOURNAL_ONE_LOCK && header[H.READ] !== header[RECV_SNAPSHOT_WORD + H.READ - H.HEAD];
    if (!committed) {
      for (let i = H.HEAD; i < RECV_SIDE_END; i++) header[i] = header[RECV_SNAPSHOT_WORD + i - H.HEAD]!;
    }
    Atomics.store(header, RECV_JOURNAL_VALID_WORD, 0);
    return true;
  }

  // Header fields are plain loads and stores: they are written only under the
  // locks (see the file comment), whose acquire/release (Atomics) orders them;
  // readers outside the lock (stats, wake-ups, the deadlock detector) tolerate
  // a stale value by design. The other side's counters are read with `load`.
  get(field: number): number {
    return this.header[field]!;
  }
  set(field: number, value: number): void {
    this.header[field] = value;
  }
  add(field: number, delta: number): number {
    return (this.header[field] = (this.header[field]! + delta) | 0);
  }
  /** An Atomics read: for a word the other side writes without our lock. */
  load(field: number): number {
    return Atomics.load(this.header, field);
  }

  /**
   * Messages buffered (admitted, not taken, not withdrawn). Exact under
   * both locks; see the file comment. Unchecked: outside the locks, reads
   * of the two sides' counters may be torn apart (callers clamp it).
   */
  length(): number {
    return (this.load(H.SEQ_TAIL) - this.load(H.REMOVED) - this.get(H.WITHDRAWN)) | 0;
  }
  /** Under both locks: messages buffered, checked against what the ring can hold. */
  buffered(): number {
    return this.checkBuffered(this.length());
  }
  private checkBuffered(count: number): number {
    if (count < 0 || count > this.maxBuffered) {
      throw this.corrupt(`${count} messages buffered (seq tail ${this.load(H.SEQ_TAIL)}, removed ${this.load(H.REMOVED)}, withdrawn ${this.get(H.WITHDRAWN)}; at most ${this.maxBuffered} fit)`);
    }
    return count;
  }
  /**
   * Under the send lock: is the number of messages buffered below `limit`
   * (a capacity, >= 1)? Decided from the cached count of removed messages
   * (which can only over-state the count), re-read and checked when that
   * says no. The first test is unsigned, so a negative (corrupt) count
   * takes the checked path.
   */
  lengthBelow(limit: number): boolean {
    const admitted = this.get(H.SEQ_TAIL) - this.get(H.WITHDRAWN);
    if (((admitted - this.knownRemoved) | 0) >>> 0 < limit) return true;
    this.knownRemoved = this.load(H.REMOVED);
    return this.checkBuffered((admitted - this.knownRemoved) | 0) < limit;
  }

  // ---- header words read with a check (CorruptDataError when impossible) ----
  // Each is a load and a compare or two: cheap enough for the fast paths.

  /** MAX_DATA_SIZE, the ring's budget: the value its creator wrote. */
  maxDataSize(): number {
    const max = this.header[H.MAX_DATA_SIZE]!;
    if (max !== this.creatorMaxData) throw this.corrupt(`max data size ${max}, where its creator wrote ${this.creatorMaxData}`);
    return max;
  }
  /** MAX_MESSAGE_BYTES: the value its creator wrote. */
  maxMessageBytes(): number {
    const max = this.header[H.MAX_MESSAGE_BYTES]!;
    if (max !== this.creatorMaxMessage) throw this.corrupt(`max message bytes ${max}, where its creator wrote ${this.creatorMaxMessage}`);
    return max;
  }
  /** The capacity (-1 Infinity, 0 rendezvous, n bounded), for deciding admission: under either lock. */
  checkedCapacity(): number {
    const capacity = this.header[H.CAPACITY]!;
    if (capacity < -1) throw this.corrupt(`capacity ${capacity}`);
    return capacity;
  }
  /** CLOSED: 0 or the two flags. */
  closedBits(): number {
    const closed = this.header[H.CLOSED]!;
    if ((closed & ~(CLOSED_NO_SENDERS | CLOSED_NO_RECEIVERS)) !== 0) throw this.corrupt(`closed bits 0x${(closed >>> 0).toString(16)}`);
    return closed;
  }
  /** STREAM_SENDER (0, or a party slot + 1). */
  streamSender(): number {
    const slot = this.header[H.STREAM_SENDER]!;
    if (slot < 0 || slot > TRANSIT) throw this.corrupt(`stream sender ${slot}`);
    return slot;
  }
  /** STREAM_RECEIVER (0, or a party slot + 1). */
  streamReceiver(): number {
    const slot = this.header[H.STREAM_RECEIVER]!;
    if (slot < 0 || slot > TRANSIT) throw this.corrupt(`stream receiver ${slot}`);
    return slot;
  }
  /**
   * Under both locks, for a sender (whose handle is open) that found the
   * channel closed or not: the closed bits, checked against the handle
   * counts. Closed to senders while this sender's handle is open, closed
   * to receivers while receive handles are counted, or open with none
   * counted, are all corrupt (handles are counted until released, and the
   * bit is set in the section that releases the last one).
   */
  closedForSender(): number {
    const closed = this.closedBits();
    if (closed & CLOSED_NO_SENDERS) {
      const open = this.get(H.SEND_HANDLES);
      throw this.corrupt(`closed to senders with ${open} send handle${open === 1 ? "" : "s"} open, this one included`);
    }
    this.checkClosed(closed, "recv");
    return closed;
  }
  /** Like closedForSender, for a receiver (whose handle is open). */
  closedForReceiver(): number {
    const closed = this.closedBits();
    if (closed & CLOSED_NO_RECEIVERS) {
      const open = this.get(H.RECV_HANDLES);
      throw this.corrupt(`closed to receivers with ${open} receive handle${open === 1 ? "" : "s"} open, this one included`);
    }
    this.checkClosed(closed, "send");
    return closed;
  }
  /** Under both locks: `side`'s closed bit in `closed` (from closedBits) agrees with its handle count. */
  checkClosed(closed: number, side: Side): void {
    const handles = this.get(side === "send" ? H.SEND_HANDLES : H.RECV_HANDLES);
    const bit = side === "send" ? CLOSED_NO_SENDERS : CLOSED_NO_RECEIVERS;
    const noun = side === "send" ? "send" : "receive";
    const party = side === "send" ? "senders" : "receivers";
    if (closed & bit) {
      if (handles !== 0) throw this.corrupt(`closed to ${party} with ${handles} ${noun} handle${handles === 1 ? "" : "s"} open`);
    } else if (handles <= 0) {
      throw this.corrupt(`no ${noun} handle is open, yet the channel is not closed to ${party} (${noun} handles ${handles})`);
    }
  }
  /**
   * Under both locks, when the message streaming in (`seq`, STREAM_SEQ) is
   * withdrawn: whether the receiver STREAM_RECEIVER names is taking that
   * message. It may instead be taking an older one, which its sender
   * finished streaming: once the last piece is in, STREAM_SENDER clears
   * and the next stream may be admitted while a receiver still takes the
   * old one's pieces. Clearing STREAM_RECEIVER then would make that
   * receiver drop a message its sender was told was sent.
   *
   * A receiver mid-stream has taken everything before its message and
   * takes that message's pieces in order, so the ring's first record is
   * its message's next piece; or the ring is empty, and then the rest of
   * its message is not written yet, which only the message still
   * streaming in can be (none is admitted behind a stream before its last
   * piece).
   */
  streamTakerIsOn(seq: number): boolean {
    const at = this.headRecord();
    return at < 0 || this.recordSeq(at) === seq;
  }
  /**
   * Under both locks: a stream is under way (STREAM_SENDER names party
   * `streamer` - 1). Its message is the last one admitted: nobody admits
   * another until it is written, so STREAM_SEQ + 1 = SEQ_TAIL.
   */
  checkStreamUnderWay(streamer: number): void {
    const seq = this.get(H.STREAM_SEQ);
    if (((seq + 1) | 0) !== this.get(H.SEQ_TAIL)) throw this.corrupt(`stream sender ${streamer}, but stream seq ${seq} is not the last admitted (seq tail ${this.get(H.SEQ_TAIL)})`);
  }
  /** SEQ_HEAD, checked: no message after the last one admitted can have been taken. */
  checkSeqHead(seqHead: number): number {
    const tail = this.load(H.SEQ_TAIL); // read after SEQ_HEAD: it only grows, so a fresher value only loosens this
    if (((seqHead - tail) | 0) > 0) throw this.corrupt(`seq head ${seqHead} is past seq tail ${tail}`);
    return seqHead;
  }

  /**
   * Under both locks: checks every header word whose bad value can be told
   * from a good one (stats() runs it): the checked words above, the handle
   * counts against the holder tables, the waiting counts against the
   * parties' tables and the waiter bitmaps, the statistics, the ring's
   * indices. Plain reads (every word it reads is written under both locks,
   * or is this side's own): about 1,100 of them, a microsecond or two.
   */
  auditHeader(): void {
    this.maxDataSize();
    this.maxMessageBytes();
    this.checkedCapacity();
    const closed = this.closedBits();
    this.streamSender();
    this.streamReceiver();
    this.checkHandleCount("send");
    this.checkHandleCount("recv");
    this.checkClosed(closed, "send");
    this.checkClosed(closed, "recv");
    this.checkWaiting("send");
    this.checkWaiting("recv");
    const short = this.get(H.SENDERS_SHORT_OF_BYTES);
    if (short !== 0 && short !== 1) throw this.corrupt(`senders short of bytes ${short}`);
    this.checkCount("sent", this.sent);
    this.checkCount("received", this.received);
    this.checkCount("dropped", this.dropped);
    this.checkSeqHead(this.get(H.SEQ_HEAD));
    this.buffered();
    const size = this.dataSize();
    const used = this.checkUsed(this.usedBytes(), size);
    const head = this.head(size);
    const tail = this.tail(size);
    if (tail !== (head + used) % size) throw this.corrupt(`tail ${tail} is not head ${head} + used ${used}`);
  }
  /** A float64 statistic: a count, so a whole number, not negative. */
  private checkCount(name: string, value: number): void {
    if (!Number.isInteger(value) || value < 0) throw this.corrupt(`${name} ${value}`);
  }
  /** Under both locks: WAITING_* is the sum of the parties' parked operations, and a party's waiter bit is set exactly when it has some. */
  private checkWaiting(side: Side): void {
    const header = this.header;
    const table = side === "send" ? WAITS_SEND_WORD : WAITS_RECV_WORD;
    const bitmap = side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD;
    const label = side === "send" ? "waiting senders" : "waiting receivers";
    let parked = 0;
    for (let w = 0; w < BITMAP_WORDS; w++) {
      let bits = 0;
      for (let b = 0; b < 32; b++) {
        const count = header[table + w * 32 + b]!;
        if (count < 0) throw this.corrupt(`${label}: party ${w * 32 + b} has ${count}`);
        if (count > 0) bits |= 1 << b;
        parked += count;
      }
      if (bits !== header[bitmap + w]) throw this.corrupt(`the ${side} waiter bitmap word ${w} is 0x${(header[bitmap + w]! >>> 0).toString(16)}, where the parties' parked operations make it 0x${(bits >>> 0).toString(16)}`);
    }
    const waiting = this.get(side === "send" ? H.WAITING_SENDERS : H.WAITING_RECEIVERS);
    if (waiting !== parked) throw this.corrupt(`${label} ${waiting}, where the parties' tables count ${parked}`);
  }
  /** The sum of `count` per-party words from `word`, each checked non-negative (under both locks: plain reads). */
  private sumOfTable(word: number, count: number, what: string): number {
    const header = this.header;
    let sum = 0;
    for (let i = 0; i < count; i++) {
      const value = header[word + i]!;
      if (value < 0) throw this.corrupt(`${what}: party ${i} has ${value}`);
      sum += value;
    }
    return sum;
  }
  /** Under both locks, after a release: the side's handle count is the sum of its holders (see handle.ts). */
  checkHandleCount(side: Side): number {
    const total = this.get(side === "send" ? H.SEND_HANDLES : H.RECV_HANDLES);
    const held = this.sumOfTable(side === "send" ? HOLDERS_SEND_WORD : HOLDERS_RECV_WORD, TRANSIT + 1, `${side} handles`);
    if (total !== held) throw this.corrupt(`${side} handles ${total}, where the table of holders counts ${held}`);
    return total;
  }
  /** Bytes of records and padding in the ring. Exact under both locks. */
  usedBytes(): number {
    return (this.load(H.WRITTEN) - this.load(H.READ)) | 0;
  }

  /**
   * A number that changes whenever a message is added or taken, bytes are
   * freed or a side closes: what a spinning waiter watches (without a
   * lock) before it attempts again. Read with Atomics so the loop re-reads.
   */
  progressStamp(): number {
    const h = this.header;
    return (
      (Atomics.load(h, H.READ) * 0x9e3779b1) ^
      Atomics.load(h, H.WRITTEN) ^
      (Atomics.load(h, H.SEQ_HEAD) * 0x85ebca6b) ^
      (Atomics.load(h, H.WITHDRAWN) * 0xc2b2ae35) ^
      (Atomics.load(h, H.CLOSED) << 29) ^
      (Atomics.load(h, H.STREAM_RECEIVER) << 21) ^
      (Atomics.load(h, H.WAITING_RECEIVERS) << 13) ^
      (Atomics.load(h, H.CAPACITY) * 0x27d4eb2f) // setCapacity: a waiter re-checks under the new rule
    );
  }

  /**
   * True once both sides are closed (CLOSED has both bits): no handle of the
   * channel is left in any thread, in a message or in flight (ends in transit
   * count as handles), so nobody can ever refer to its id again. Sticky: the
   * bits are only ever set, under both locks. Read without a lock; a torn
   * read of a corrupt word may say true, and a corrupt channel is then
   * forgotten by a cache, which only costs a fetch.
   */
  isDead(): boolean {
    return (Atomics.load(this.header, H.CLOSED) & (CLOSED_NO_SENDERS | CLOSED_NO_RECEIVERS)) === (CLOSED_NO_SENDERS | CLOSED_NO_RECEIVERS);
  }

  /** This channel's capability (TOKEN). */
  token(): Token {
    const h = this.header;
    return [h[H.TOKEN]!, h[H.TOKEN + 1]!, h[H.TOKEN + 2]!, h[H.TOKEN + 3]!];
  }

  /** Does `token` open this channel? */
  hasToken(token: Token): boolean {
    const h = this.header;
    return h[H.TOKEN] === token[0] && h[H.TOKEN + 1] === token[1] && h[H.TOKEN + 2] === token[2] && h[H.TOKEN + 3] === token[3];
  }

  /** `channel 5 "replies"` — how messages name this channel. */
  describe(): string {
    return this.name ? `channel ${this.id} "${this.name}"` : `channel ${this.id}`;
  }

  corrupt(what: string): CorruptDataError {
    return new CorruptDataError(`${this.describe()}: shared state is corrupt (${what}); the channel cannot be used`);
  }

  // ---- statistics (float64; SENT on the send side, RECEIVED on the recv side) ----
  /**
   * The capacity now: -1 for Infinity, 0 rendezvous, n bounded. It changes
   * only under both locks (setCapacity), so it is exact under either lock;
   * outside them a stale value is tolerated (stats, wake-ups, descriptions).
   * A corrupt word below -1 reads as Infinity here, for the readers that
   * only decide whom to wake; whatever decides admission reads
   * checkedCapacity, and stats() fails on it.
   */
  get capacity(): number {
    const capacity = this.header[H.CAPACITY]!;
    return capacity < -1 ? -1 : capacity;
  }
  get dropped(): number {
    return this.counters[F64_DROPPED]!;
  }
  set dropped(value: number) {
    this.counters[F64_DROPPED] = value;
  }

  /**
   * Under both locks: discards the oldest message that no receiver has
   * started to take (one being streamed out is skipped, as is one still
   * being streamed in), for the drop-oldest policy. Its records become
   * tombstones (so the buffered count falls at once and the order of what
   * remains is kept), and tombstones at the head are freed (so its bytes
   * are free if it was the oldest record). Returns the payload of the
   * dropped message if it carried channel ends (the caller releases them
   * after unlocking), true if it dropped one without, false if there was
   * nothing it may drop.
   */
  dropOldest(): Uint8Array | boolean {
    const streamedOut = this.get(H.STREAM_RECEIVER) !== 0 || this.get(H.STREAM_SENDER) !== 0 ? this.get(H.STREAM_SEQ) : undefined;
    let victim = -1;
    let victimSeq = 0;
    this.forEachRecord((offset) => {
      if (victim >= 0) return;
      const flags = this.recordFlags(offset);
      if (flags & R_TOMBSTONE || !(flags & R_FIRST)) return;
      const seq = this.recordSeq(offset);
      if (streamedOut !== undefined && seq === streamedOut) return;
      victim = offset;
      victimSeq = seq;
    });
    if (victim < 0) return false;
    // Each drop logs an undo entry (its tombstone), and a send may drop many
    // to make room: past what the journal holds, the drops so far are made
    // permanent first (a consistent state: whole drops, nothing else begun).
    this.checkpointForUndo(1);
    const flags = this.recordFlags(victim);
    const carried = flags & R_ATTACH ? this.payload(victim).slice() : true;
    this.forEachRecord((offset) => {
      if (this.recordSeq(offset) === victimSeq && !(this.recordFlags(offset) & R_TOMBSTONE)) {
        this.setRecordFlags(offset, this.recordFlags(offset) | R_TOMBSTONE);
      }
    });
    this.add(H.WITHDRAWN, 1);
    this.dropped += 1;
    this.freeTombstonesAtHead();
    return carried;
  }

  /** Under both locks: frees withdrawn records at the head of the ring (their bytes go back to senders). */
  freeTombstonesAtHead(): void {
    for (;;) {
      const at = this.headRecord();
      if (at < 0 || !(this.recordFlags(at) & R_TOMBSTONE)) return;
      this.popRecord(at);
    }
  }

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

  // ---- waiters (both locks) ----
  /**
   * Counts `delta` operations of party `slot` as parked on `side` (WAITING_*
   * and the party's own count), and keeps its bit in the waiter bitmap set
   * exactly while that count is positive. Under both locks.
   */
  addWaits(side: Side, slot: number, delta: number): void {
    const word = (side === "send" ? WAITS_SEND_WORD : WAITS_RECV_WORD) + slot;
    const bitmapWord = (side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD) + (slot >>> 5);
    this.logUndo(AREA_HEADER, word, Atomics.load(this.header, word));
    this.logUndo(AREA_HEADER, bitmapWord, Atomics.load(this.header, bitmapWord));
    const count = Atomics.add(this.header, word, delta) + delta;
    if (count < 0) throw this.corrupt(`party ${slot} would have ${count} parked ${side} operations`);
    const waiting = Atomics.add(this.header, side === "send" ? H.WAITING_SENDERS : H.WAITING_RECEIVERS, delta) + delta;
    // No sender waits any more, so none is short of bytes (see freeSlots).
    if (side === "send" && waiting === 0) this.set(H.SENDERS_SHORT_OF_BYTES, 0);
    const base = side === "send" ? SEND_WAITERS_WORD : RECV_WAITERS_WORD;
    if (count === 0) Atomics.and(this.header, base + (slot >>> 5), ~(1 << (slot & 31)));
    else if (count === delta) Atomics.or(this.header, base + (slot >>> 5), 1 << (slot & 31));
  }
  /** Operations of party `slot` parked on `side`. */
  waits(side: Side, slot: number): number {
    return Atomics.load(this.header, (side === "send" ? WAITS_SEND_WORD : WAITS_RECV_WORD) + slot);
  }
  // ---- probing receivers (no lock: each party writes its own bit) ----
  /**
   * Marks party `slot` as spinning for a message on this channel without
   * being registered (set) or not (clear). Such a party makes one more
   * attempt after clearing its bit, so a message it will see needs no
   * wake-up (see messagesNoProberTakes). Returns whether the bit was set.
   */
  setProbing(slot: number, on: boolean): boolean {
    const word = PROBING_RECEIVERS_WORD + (slot >>> 5);
    const bit = 1 << (slot & 31);
    const before = on ? Atomics.or(this.header, word, bit) : Atomics.and(this.header, word, ~bit);
    return (before & bit) !== 0;
  }
  /**
   * How many messages buffered now no probing receiver (spinning,
   * unregistered) will take: the number of registered receivers a sender
   * must wake (wakeWaiters). Reads the message count BEFORE the probing
   * bits: a prober clears its bit before the attempt that takes a message,
   * so a bit seen set belongs to a prober whose take is still to come, and
   * the message it will take is still in the count. Stale reads of the
   * other side's counters only over-state the count (more wake-ups, never
   * fewer).
   *
   * A bit counts only for a live party (`isLive`) that is not registered
   * as a waiting receiver here: a registered receiver sleeps, or is about
   * to. A bit that says otherwise (corrupt memory, or a party that also has
   * another receive registered here) then costs a wake-up too many, never
   * leaves a sleeping receiver without the one it needs.
   */
  messagesNoProberTakes(isLive: (slot: number) => boolean): number {
    const buffered = this.length();
    let probers = 0;
    for (let w = 0; w < BITMAP_WORDS; w++) {
      let bits = Atomics.load(this.header, PROBING_RECEIVERS_WORD + w);
      if (bits === 0) continue;
      bits &= ~Atomics.load(this.header, RECV_WAITERS_WORD + w);
      for (; bits !== 0; bits &= bits - 1) {
        if (isLive(w * 32 + 31 - Math.clz32(bits & -bits))) probers++;
      }
    }
    return Math.max(0, buffered - probers);
  }
  /**
   * Free slots of a bounded channel (capacity - buffered): the number of
   * registered senders a receiver that freed one must wake (wakeWaiters).
   * Infinity when every sender must be woken: the channel is not bounded
   * (its senders wait for bytes, or for their own message to be taken), a
   * message is being streamed in (its sender waits for bytes), or a waiting
   * sender found a slot but not the bytes for its message
   * (SENDERS_SHORT_OF_BYTES: counting slots could then wake a sender whose
   * message does not fit and leave asleep one whose message would). Stale
   * reads of the send side's count only under-state what is buffered: a
   * wake-up too many, never one too few.
   */
  freeSlots(): number {
    const capacity = this.capacity;
    if (capacity <= 0 || this.get(H.STREAM_SENDER) !== 0 || this.get(H.SENDERS_SHORT_OF_BYTES) !== 0) return Infinity;
    return Math.max(0, capacity - this.length());
  }

  /** Rotates which registered parties a partial wake-up picks first (this thread's view). */
  wakeRotation = 0;

  /** Appends the slots of parties waiting on `side` to `out` (any thread, any lock). */
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

  // ---- holders (both locks) ----
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
  /** Re-creates the data views over the whole buffer (after this or another thread grew it). */
  /** Makes `buffer` (generation `gen`) this thread's data area. */
  private mapData(gen: number, buffer: SharedArrayBuffer): void {
    const offset = gen === 0 ? HEADER_BYTES : 0;
    const bytes = (buffer.byteLength - offset) & ~7;
    this.data = new Uint8Array(buffer, offset, bytes);
    this.dataWords = new Int32Array(buffer, offset, bytes >>> 2);
    this.dataGen = gen;
    this.offerData(gen, buffer);
  }

  /** Remembers `buffer` as data generation `gen` of this channel (the latest offer of a generation wins). */
  offerData(gen: number, buffer: SharedArrayBuffer): void {
    if (gen <= 0) return;
    // A generation offered again replaces the earlier one: that was published
    // by a grower killed before naming it (its section rolled back), and the
    // generation was made anew by the next growth.
    this.dataByGen.set(gen, buffer);
    // Generations before the current one are never needed again.
    const current = Atomics.load(this.header, H.DATA_GEN);
    for (const known of this.dataByGen.keys()) if (known < current) this.dataByGen.delete(known);
  }

  /** The data buffer of generation `gen` if this thread already knows it. */
  knownData(gen: number): SharedArrayBuffer | undefined {
    return this.dataByGen.get(gen);
  }

  /**
   * Switches this thread's views to the data generation DATA_GEN names, if
   * another thread grew the ring (under either lock, or before recovering a
   * dead owner's lock: growth takes both, so it cannot change meanwhile).
   * Throws CorruptDataError for a generation that cannot exist.
   */
  refreshData(): void {
    const gen = Atomics.load(this.header, H.DATA_GEN);
    if (gen === this.dataGen) return;
    if (gen < this.dataGen || gen > MAX_DATA_GENERATIONS) throw this.corrupt(`data generation ${gen} (this thread has ${this.dataGen})`);
    this.mapData(gen, this.knownData(gen) ?? dataBuffers.resolve(this, gen));
  }

  /** The data area's size, checked (switches to a grown data area first). Under either lock. */
  dataSize(): number {
    if (this.header[H.DATA_GEN] !== this.dataGen) this.refreshData();
    const size = this.get(H.DATA_SIZE);
    if (size < RECORD_HEADER_BYTES || size > this.data.length || (size & 7) !== 0) throw this.corrupt(`data size ${size}`);
    return size;
  }

  /** Checks a used-byte count against the data size. */
  private checkUsed(used: number, size: number): number {
    if (used < 0 || used > size || (used & 7) !== 0) throw this.corrupt(`used bytes ${used} (data size ${size})`);
    return used;
  }

  /** TAIL, checked. Under the send lock. */
  private tail(size: number): number {
    const tail = this.get(H.TAIL);
    if (tail < 0 || tail >= size || (tail & 7) !== 0) throw this.corrupt(`tail ${tail}`);
    return tail;
  }

  /** HEAD, checked. Under the recv lock. */
  private head(size: number): number {
    const head = this.get(H.HEAD);
    if (head < 0 || head >= size || (head & 7) !== 0) throw this.corrupt(`head ${head}`);
    return head;
  }

  /**
   * Under the send lock: where a record of `bytes` bytes can go now without
   * growing, or -1. Room is judged from READ as last seen (a lower bound on
   * what receivers have freed). Writes nothing.
   */
  findRoom(bytes: number): number {
    const size = this.dataSize();
    const tail = this.tail(size);
    const atEnd = size - tail;
    const needed = bytes <= atEnd ? bytes : atEnd + bytes; // wrapping pads the end
    const written = this.get(H.WRITTEN);
    let used = (written - this.knownRead) | 0;
    if (used < 0 || used > size - needed) {
      this.knownRead = this.load(H.READ);
      used = this.checkUsed((written - this.knownRead) | 0, size);
      if (used > size - needed) return -1;
    }
    return bytes <= atEnd ? tail : 0;
  }

  /**
   * Finds room for a record of `bytes` bytes; with `mayGrow` (both locks
   * held) also repositions an empty ring at 0 or grows the buffer (up to
   * MAX_DATA_SIZE) when that helps. -1 when there is no room now. Without
   * `mayGrow`, under the send lock.
   */
  reserve(bytes: number, mayGrow: boolean): number {
    const at = this.findRoom(bytes);
    if (at >= 0 || !mayGrow) return at;
    if (this.usedBytes() === 0 && this.get(H.TAIL) !== 0) {
      // Empty but positioned mid-ring, where a record of nearly the ring's
      // size would fit neither before the end nor after wrapping: restart at 0.
      this.set(H.HEAD, 0);
      this.set(H.TAIL, 0);
      const at0 = this.findRoom(bytes);
      if (at0 >= 0) return at0;
    }
    if (this.grow(bytes)) return this.findRoom(bytes);
    return -1;
  }

  /** Bytes of payload a record could have if written now (without growing). Under the send lock. */
  largestRoom(): number {
    const size = this.dataSize();
    const tail = this.tail(size);
    this.knownRead = this.load(H.READ);
    const free = size - this.checkUsed((this.get(H.WRITTEN) - this.knownRead) | 0, size);
    const atEnd = size - tail;
    return Math.max(Math.min(atEnd, free), free - atEnd) - RECORD_HEADER_BYTES;
  }

  /**
   * Under the send lock: writes the header of a record at `offset` (from
   * reserve; its payload is already in place), padding the end first if the
   * record wraps, and moves TAIL. Returns the WRITTEN value that publishes
   * it: pass it to publishWritten, the section's commit point.
   */
  writeRecord(offset: number, payloadLength: number, flags: number, seq: number, total: number): number {
    const size = this.dataSize();
    const tail = this.tail(size);
    let written = this.get(H.WRITTEN);
    if (offset !== tail) {
      if (offset !== 0) throw this.corrupt(`record offset ${offset} is neither tail ${tail} nor a wrap`);
      const skipped = size - tail;
      if (skipped >= RECORD_HEADER_BYTES) this.writeRecordHeader(tail, skipped - RECORD_HEADER_BYTES, R_PAD, 0, 0);
      written = (written + skipped) | 0;
    }
    this.writeRecordHeader(offset, payloadLength, flags, seq, total);
    const end = offset + recordBytes(payloadLength);
    this.set(H.TAIL, end === size ? 0 : end);
    return (written + recordBytes(payloadLength)) | 0;
  }

  /** Publishes records written up to `written` (from writeRecord): the store a receiver acquires before reading them. */
  publishWritten(written: number): void {
    Atomics.store(this.header, H.WRITTEN, written);
  }

  private writeRecordHeader(offset: number, payloadLength: number, flags: number, seq: number, total: number): void {
    const word = offset >>> 2;
    this.dataWords[word] = payloadLength;
    this.dataWords[word + 1] = flags;
    this.dataWords[word + 2] = seq;
    this.dataWords[word + 3] = total;
  }

  /**
   * Under the recv lock: offset of the oldest record, or -1 when the ring
   * is empty (as far as WRITTEN shows: the cached value, re-read when that
   * says empty). Looks past padding at the end of the data area without
   * freeing it (popRecord frees it with the record, in one store).
   */
  headRecord(): number {
    const size = this.dataSize();
    const read = this.get(H.READ);
    if (size !== this.knownWrittenSize) {
      this.knownWrittenSize = size;
      this.knownWritten = read;
    }
    let used = (this.knownWritten - read) | 0;
    if (used <= 0) {
      this.knownWritten = this.load(H.WRITTEN);
      used = this.checkUsed((this.knownWritten - read) | 0, size);
      if (used === 0) return -1;
    } else {
      this.checkUsed(used, size);
    }
    const head = this.head(size);
    const atEnd = size - head;
    this.padAt = -1;
    if (atEnd >= RECORD_HEADER_BYTES && !(this.dataWords[(head >>> 2) + 1]! & R_PAD)) return this.checkRecord(head, Math.min(used, atEnd));
    if (atEnd >= used) throw this.corrupt(`padding of ${atEnd} bytes at ${head} with ${used} bytes used`);
    this.padAt = head;
    this.padBytes = atEnd;
    if (this.dataWords[1]! & R_PAD) throw this.corrupt("padding right after padding");
    return this.checkRecord(0, Math.min(used - atEnd, size));
  }

  /** Checks that a record at `offset` lies within the `within` bytes from there that hold records. */
  private checkRecord(offset: number, within: number): number {
    if (within < RECORD_HEADER_BYTES) throw this.corrupt(`record at ${offset} runs past the used bytes`);
    const length = this.dataWords[offset >>> 2]!;
    if (length < 0 || recordBytes(length) > within) throw this.corrupt(`record at ${offset} has length ${length}, past the ${within} bytes in use there`);
    const total = this.dataWords[(offset >>> 2) + 3]!;
    if (total < length || total > this.maxMessageBytes() + this.trailerBytes) throw this.corrupt(`record at ${offset} has total ${total} for length ${length}`);
    return offset;
  }

  recordLength(offset: number): number {
    return this.dataWords[offset >>> 2]!;
  }
  recordFlags(offset: number): number {
    return this.dataWords[(offset >>> 2) + 1]!;
  }
  /** Changes a record's flags (both locks: withdrawals). */
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

  /**
   * Under the recv lock: frees the oldest record (at `offset`, from
   * headRecord), and the padding before it if any. The READ store is a
   * receive's commit point (see the file comment): call it last.
   */
  popRecord(offset: number): void {
    const size = this.dataSize();
    const record = recordBytes(this.recordLength(offset));
    let bytes = record;
    if (this.padAt >= 0 && offset === 0 && this.get(H.HEAD) === this.padAt) bytes += this.padBytes;
    else if (offset !== this.get(H.HEAD)) throw this.corrupt(`record at ${offset} popped while head is ${this.get(H.HEAD)}`);
    this.padAt = -1;
    const next = offset + record;
    this.set(H.HEAD, next >= size ? 0 : next);
    Atomics.store(this.header, H.READ, (this.get(H.READ) + bytes) | 0);
  }

  /** Under both locks: calls `visit(offset)` for every record, oldest first (the ring is not changed). */
  forEachRecord(visit: (offset: number) => void): void {
    const size = this.dataSize();
    let remaining = this.checkUsed(this.usedBytes(), size);
    let offset = this.head(size);
    let guard = 0;
    while (remaining > 0) {
      const atEnd = size - offset;
      if (atEnd < RECORD_HEADER_BYTES || this.dataWords[(offset >>> 2) + 1]! & R_PAD) {
        if (atEnd > remaining) throw this.corrupt(`padding of ${atEnd} bytes at ${offset} with ${remaining} bytes left`);
        remaining -= atEnd;
        offset = 0;
        continue;
      }
      this.checkRecord(offset, Math.min(remaining, atEnd));
      const bytes = recordBytes(this.recordLength(offset));
      visit(offset);
      offset += bytes;
      if (offset === size) offset = 0;
      remaining -= bytes;
      if (++guard > this.data.length) throw this.corrupt("record walk does not terminate");
    }
  }

  /** Under both locks: drops every record (receivers are gone); keeps SEQ_HEAD so no send counts as taken. */
  clearRing(): void {
    this.set(H.HEAD, this.get(H.TAIL));
    Atomics.store(this.header, H.READ, this.get(H.WRITTEN));
    this.set(H.REMOVED, (this.get(H.SEQ_TAIL) - this.get(H.WITHDRAWN)) | 0);
    this.set(H.STREAM_RECEIVER, 0);
  }

  /**
   * Under both locks: grows the data area so that a record of `bytes` fits,
   * at least doubling it, up to MAX_DATA_SIZE. A wrapped ring is unwrapped
   * by moving its [0, TAIL) part to where its padding began, which the
   * doubling makes room for. Returns false when the budget does not allow
   * it (or, near the budget, a wrapped ring cannot be unwrapped yet).
   */
  grow(bytes: number): boolean {
    const size = this.dataSize();
    const max = this.maxDataSize();
    const used = this.checkUsed(this.usedBytes(), size);
    let wanted = align8(Math.max(size * 2, size + bytes));
    if (wanted > max) wanted = max;
    if (wanted <= size || used + bytes > wanted) return false;
    const head = this.head(size);
    const tail = this.tail(size);
    const wrapped = head + used > size;
    const recordsEnd = wrapped ? this.endOfRecordsBeforeWrap(head, size) : 0;
    if (tail !== (head + used) % size) throw this.corrupt(`tail ${tail} is not head ${head} + used ${used}`);
    if (wrapped && recordsEnd + tail + bytes > wanted) return false;
    // The data area may already be longer than DATA_SIZE: a growth whose
    // critical section was rolled back (its thread died) left a newer,
    // larger generation in place; use what is there.
    wanted = Math.min(max, Math.max(wanted, this.data.length));
    if (wanted > this.data.length) this.replaceData(wanted, size);
    this.set(H.DATA_SIZE, wanted);
    if (used === 0) {
      this.set(H.HEAD, 0);
      this.set(H.TAIL, 0);
    } else if (!wrapped) {
      this.set(H.TAIL, head + used); // the records may have ended exactly at the old end (TAIL was 0)
    } else {
      // Records are [head, recordsEnd), padding, then [0, tail): move [0, tail) to recordsEnd.
      // The move overwrites the padding record's header, which a rollback of
      // this section (DATA_SIZE, HEAD and TAIL back to the wrapped ring) needs
      // again: its words are journaled like any other record word.
      if (size - recordsEnd >= RECORD_HEADER_BYTES) {
        const word = recordsEnd >>> 2;
        for (let i = 0; i < RECORD_HEADER_BYTES >>> 2; i++) this.logUndo(AREA_DATA, word + i, this.dataWords[word + i]!);
      }
      this.data.copyWithin(recordsEnd, 0, tail);
      this.set(H.TAIL, recordsEnd + tail);
      Atomics.store(this.header, H.WRITTEN, (this.get(H.READ) + (recordsEnd + tail - head)) | 0);
    }
    return true;
  }

  /**
   * Under both locks: moves the data area to a new buffer of `bytes` bytes,
   * copying the first `size` (the whole ring). The DATA_GEN store is the
   * switch, after the copy and after the buffer is published (registered
   * with the supervisor, where other threads fetch it): a thread that dies
   * before it leaves the old generation untouched; one that dies after it
   * leaves a full copy, and its section's rollback then restores DATA_SIZE,
   * HEAD and TAIL over it (DATA_GEN is outside the journal's snapshot).
   */
  private replaceData(bytes: number, size: number): void {
    const gen = this.dataGen + 1;
    if (gen > MAX_DATA_GENERATIONS) throw this.corrupt(`data generation ${gen}`);
    const buffer = new SharedArrayBuffer(bytes);
    new Uint8Array(buffer, 0, size).set(this.data.subarray(0, size));
    dataBuffers.publish(this, gen, buffer);
    Atomics.store(this.header, H.DATA_GEN, gen);
    this.mapData(gen, buffer);
  }

  /** Where the records that start at `head` end before the ring wraps (the padding's start). */
  private endOfRecordsBeforeWrap(head: number, size: number): number {
    let offset = head;
    let guard = 0;
    while (offset < size && size - offset >= RECORD_HEADER_BYTES && !(this.dataWords[(offset >>> 2) + 1]! & R_PAD)) {
      this.checkRecord(offset, size - offset);
      offset += recordBytes(this.recordLength(offset));
      if (++guard > this.data.length) throw this.corrupt("record walk does not terminate");
    }
    return offset;
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
  overflow: number;
  checksum?: boolean;
}): SharedArrayBuffer {
  const initial = Math.max(align8(options.bufferBytes), 64);
  const max = Math.max(initial, align8(options.maxBufferBytes));
  const buffer = new SharedArrayBuffer(HEADER_BYTES + initial); // fixed size: see the file comment
  const header = new Int32Array(buffer, 0, HEADER_BYTES / 4);
  header[H.MAGIC] = MAGIC;
  header[H.ID] = options.id;
  crypto.getRandomValues(header.subarray(H.TOKEN, H.TOKEN + 4));
  header[H.CAPACITY] = options.capacity === Infinity ? -1 : options.capacity;
  header[H.OVERFLOW] = options.overflow;
  header[H.OPTIONS] = options.checksum ? OPTION_CHECKSUM : 0;
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
