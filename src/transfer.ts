/**
 * How a value crosses from one interpreter to another: serialized by the
 * codec (serialization.ts), with the things that travel by reference kept
 * aside as attachments: channel ends (moved), SharedArrayBuffers (shared).
 *
 * Through a channel, attachments travel as ids in a table in front of the
 * codec bytes (the record carries R_ATTACH):
 *
 * | offset   | size | meaning                                                      |
 * |----------|------|--------------------------------------------------------------|
 * | 0        | 4    | n: number of attachments (little-endian u32)                 |
 * | 4 + 24·i | 1    | kind: 1 send end, 2 recv end, 3 SharedArrayBuffer, 4 shared object |
 * | 5 + 24·i | 1    | shared-object tag (kind 4: which SharedKind), else 0          |
 * | 6 + 24·i | 2    | zero                                                         |
 * | 8 + 24·i | 4    | channel id (ends) or object id (buffers, shared objects)     |
 * | 12 + 24·i| 16   | capability: the channel's or object's 128-bit random token   |
 * | 4 + 24·n | 4    | zero (so that the codec bytes start 8-aligned, see ring.ts)  |
 * | 8 + 24·n | ...  | codec bytes                                                  |
 *
 * The capability is what opens the channel or object in another thread:
 * the supervisor hands out its memory only to a fetch that presents it
 * (registry.ts), so knowing an id opens nothing.
 *
 * A top-level Uint8Array or ArrayBuffer travels as its bytes alone (the
 * record carries R_RAW_BYTES or R_RAW_BUFFER): no codec, no copy on the
 * way in but the one into the ring, one copy out.
 *
 * Through postMessage (exec bindings, call arguments and results), the
 * buffers themselves ride along and ends are assigned to the target party
 * at once.
 *
 * A moved end is counted under TRANSIT from the moment its message is
 * encoded until a receiver decodes it (or the message is refused or
 * discarded, which gives it back or releases it): a handle in a message
 * keeps its channel open.
 */
import { isProxy } from "node:util/types";
import { clearClaims, markClaimed, MAX_RECORDED_CLAIMS } from "./control.js";
import { CorruptDataError, NotShareableError } from "./errors.js";
import { End } from "./handle.js";
import type { OutgoingMessage, Received } from "./channel-ops.js";
import { locked, releaseHandles, wakeWaiters } from "./channel-ops.js";
import { channelById, channelFromBuffer, depositObject, objectById } from "./registry.js";
import { type ChannelMemory, R_ATTACH, R_RAW_BUFFER, R_RAW_BYTES, type Side, type Token, TRANSIT } from "./ring.js";
import { type Attacher, decode, Encoder, type Resolver } from "./serialization.js";

const EMPTY_BYTES = new Uint8Array(0);
const KIND_SEND_END = 1;
const KIND_RECV_END = 2;
const KIND_BUFFER = 3;
const KIND_OBJECT = 4;
const ENTRY_BYTES = 24;
/** Words of a capability token (128 bits). */
const TOKEN_WORDS = 4;

/** Bytes of an attachment table of `count` entries: a multiple of 8 (the codec bytes follow it 8-aligned). */
function tableBytes(count: number): number {
  return 8 + ENTRY_BYTES * count;
}

/**
 * A class whose instances are backed by a SharedArrayBuffer and are shared
 * (not copied, not moved) when they cross: Lock, Semaphore, Event. The
 * instance travels as its buffer; the other side rebuilds an instance over
 * the same buffer with `fromBuffer`.
 */
export interface SharedKind {
  /** 1..255, stable: travels in messages. */
  readonly tag: number;
  /** The buffer behind `value` if it is an instance of this kind, else undefined. */
  bufferOf(value: object): SharedArrayBuffer | undefined;
  /** An instance over `buffer` (which holds an instance of this kind). */
  fromBuffer(buffer: SharedArrayBuffer): object;
}
const sharedKinds = new Map<number, SharedKind>();
/** Makes instances of `kind` shareable (called once by the module defining it). */
export function registerSharedKind(kind: SharedKind): void {
  if (!Number.isInteger(kind.tag) || kind.tag < 1 || kind.tag > 255) throw new RangeError(`shared kind tag ${kind.tag} out of range`);
  sharedKinds.set(kind.tag, kind);
}
function sharedKindOf(value: object): { kind: SharedKind; buffer: SharedArrayBuffer } | undefined {
  for (const kind of sharedKinds.values()) {
    const buffer = kind.bufferOf(value);
    if (buffer) return { kind, buffer };
  }
  return undefined;
}
/** True for objects that cross by reference: open channel ends and shared objects (Lock, ...). */
export function isAttachable(value: object): boolean {
  const end = endsOfHandles.get(value);
  if (end) return end.state === "open";
  return sharedKinds.size > 0 && sharedKindOf(value) !== undefined;
}

function rebuildShared(tag: number, buffer: SharedArrayBuffer): object {
  const kind = sharedKinds.get(tag);
  if (!kind) throw new CorruptDataError(`message carries a shared object of unknown kind ${tag}`);
  return kind.fromBuffer(buffer);
}

/** Makes the public handle object for an End (installed by channel.ts). */
type HandleFactory = (end: End) => object;
let makeHandle: HandleFactory = () => {
  throw new Error("internal error: channel handles are not installed");
};
/** The End behind each public handle object (no property access on user objects). */
const endsOfHandles = new WeakMap<object, End>();

export function installHandleFactory(factory: HandleFactory): void {
  makeHandle = factory;
}
export function bindHandle(handle: object, end: End): void {
  endsOfHandles.set(handle, end);
}
export function endOf(value: unknown): End | undefined {
  return typeof value === "object" && value !== null ? endsOfHandles.get(value) : undefined;
}
export function handleFor(end: End): object {
  return makeHandle(end);
}

interface Entry {
  kind: number;
  id: number;
  tag?: number;
  end?: End;
  buffer?: SharedArrayBuffer;
}

/** An attachment as read back from a table: what it is, and the capability that opens it. */
interface TableEntry {
  kind: number;
  id: number;
  tag: number;
  token: Token;
}

/** Collects the attachments of one value being encoded. */
class Collector implements Attacher {
  readonly entries: Entry[] = [];
  private indexOf: Map<object, number> | undefined; // made on the first attachment

  /** Forgets this message's attachments, for the next message. */
  reset(): void {
    if (this.entries.length > 0) this.entries.length = 0;
    this.indexOf = undefined;
  }

  attach(value: object): number | undefined {
    if (isProxy(value)) return undefined;
    // The common case, asked for every object of every message: arrays and plain objects never travel by reference.
    if (Array.isArray(value)) return undefined;
    const proto = Object.getPrototypeOf(value);
    if (proto === Object.prototype || proto === null) return undefined;
    const known = this.indexOf?.get(value);
    if (known !== undefined) return known;
    let entry: Entry | undefined;
    const end = endsOfHandles.get(value);
    if (end) {
      end.ensureOpen("send");
      entry = { kind: end.side === "send" ? KIND_SEND_END : KIND_RECV_END, id: end.memory.id, end };
    } else if (value instanceof SharedArrayBuffer) {
      entry = { kind: KIND_BUFFER, id: 0, buffer: value };
    } else if (sharedKinds.size > 0) {
      const shared = sharedKindOf(value);
      if (shared) entry = { kind: KIND_OBJECT, id: 0, tag: shared.kind.tag, buffer: shared.buffer };
    }
    if (!entry) return undefined;
    const index = this.entries.push(entry) - 1;
    (this.indexOf ??= new Map()).set(value, index);
    return index;
  }
}

const sharedEncoder = new Encoder();
let encoderBusy = false;
/** The thread's collector, lent to one encode at a time (undefined while lent). */
let spareCollector: Collector | undefined = new Collector();

/**
 * Encodes with the thread's encoder: the bytes are [0, length) of
 * `encoded.bytes`, valid until the next encode. A getter that re-enters
 * (sends from inside an encode) gets a fresh encoder and a copy.
 */
function encodeValue(value: unknown, collector: Collector): number {
  if (encoderBusy) {
    encoded.bytes = new Encoder().encode(value, collector).slice();
    return encoded.bytes.length;
  }
  encoderBusy = true;
  try {
    const length = sharedEncoder.encodeInPlace(value, collector);
    encoded.bytes = sharedEncoder.scratch;
    return length;
  } finally {
    encoderBusy = false;
  }
}
const encoded: { bytes: Uint8Array } = { bytes: EMPTY_BYTES };

const EMPTY = EMPTY_BYTES;
/** The ends of a message that carries none (shared: never written to). */
const NO_ENDS: End[] = [];
/**
 * A raw payload this long or longer that does not start 8-aligned is copied
 * to aligned memory first: copying it into the ring as it is would go byte
 * by byte (see ring.ts), several times slower than the extra copy.
 */
const REALIGN_MIN_BYTES = 1024;

/**
 * Bodies of the thread's encoder scratch up to this size are copied into the
 * ring a 32-bit word at a time: 7 word stores for a 28-byte object instead
 * of 28 byte stores into shared memory (measured 8.5 ns vs 24-45 ns; 14 vs
 * 55 ns at 64 bytes), the largest single cost of sending a small object.
 */
const WORD_COPY_MAX_BYTES = 128;

/** A 32-bit view of the thread encoder's scratch (remade when the scratch is replaced), for word copies. */
let scratchOfWords = sharedEncoder.scratch;
let scratchWords = new Int32Array(scratchOfWords.buffer, 0, scratchOfWords.length >>> 2);
function wordsOfScratch(): Int32Array {
  const scratch = sharedEncoder.scratch;
  if (scratch !== scratchOfWords) {
    scratchOfWords = scratch;
    scratchWords = new Int32Array(scratch.buffer, 0, scratch.length >>> 2);
  }
  return scratchWords;
}

/**
 * A message on its way into a ring: a head (the attachment table, or
 * nothing) and a body, bytes [0, bodyLength) of `body` (the encoder's
 * scratch, or the sender's own array).
 */
export class ChannelMessage implements OutgoingMessage {
  private owned = false;
  constructor(
    private head: Uint8Array,
    private body: Uint8Array,
    private bodyLength: number,
    readonly flags: number,
    readonly ends: End[],
    /** `body` as 32-bit words when it is the encoder's scratch (starts at offset 0, runs past bodyLength), else null. */
    private bodyWords: Int32Array | null = null,
  ) {}

  get length(): number {
    return this.head.length + this.bodyLength;
  }

  copyTo(target: Uint8Array, targetWords: Int32Array, at: number, from: number, count: number): void {
    const headLength = this.head.length;
    const body = this.body;
    const bodyLength = this.bodyLength;
    if (from === 0 && count === headLength + bodyLength) {
      // The whole message (the common case): no subarray views to allocate.
      if (headLength > 0) target.set(this.head, at);
      const bodyAt = at + headLength;
      const words = this.bodyWords;
      const wordCount = (bodyLength + 3) >>> 2;
      if (words !== null && bodyLength <= WORD_COPY_MAX_BYTES && (bodyAt & 3) === 0 && wordCount <= words.length) {
        // The body lands 4-aligned (a payload starts 8-aligned in the ring and
        // the attachment table is a multiple of 8 bytes). The last word may
        // carry up to 3 bytes past the body: they come from the scratch's own
        // tail and land in the record's padding (a record is padded to a
        // multiple of 8), which nobody reads.
        const first = bodyAt >>> 2;
        for (let i = 0; i < wordCount; i++) targetWords[first + i] = words[i]!;
      } else if (bodyLength === body.length) target.set(body, bodyAt);
      else target.set(body.subarray(0, bodyLength), bodyAt);
      return;
    }
    if (from < headLength) {
      const n = Math.min(count, headLength - from);
      target.set(this.head.subarray(from, from + n), at);
      at += n;
      from += n;
      count -= n;
    }
    if (count > 0) target.set(body.subarray(from - headLength, from - headLength + count), at);
  }

  /** Copies borrowed bytes (encoder scratch, the caller's array) before the send waits. */
  detach(): void {
    if (this.owned) return;
    this.owned = true;
    if (this.head.length > 0) this.head = this.head.slice();
    this.body = this.body.slice(0, this.bodyLength);
    this.bodyWords = null;
  }

  /** The message was accepted: its ends now belong to whoever receives it. */
  commit(carrier: ChannelMemory): void {
    for (const end of this.ends) end.commitMove(`into a message on ${carrier.describe()}`);
  }

  /**
   * The send completed but the overflow policy discarded the message
   * (drop-newest): its ends are gone from this thread and closed, as those
   * of a discarded buffered message are.
   */
  discard(carrier: ChannelMemory): void {
    for (const end of this.ends) {
      end.commitMove(`into a message on ${carrier.describe()} that its overflow policy discarded`);
      const memory = end.memory;
      const { wake, discarded } = locked(memory, () => releaseHandles(memory, end.side, TRANSIT, 1));
      wakeWaiters(memory, wake);
      releaseCarriedEnds(discarded);
    }
  }

  /** The message was refused or withdrawn: its ends come back to this thread. */
  undo(): void {
    for (const end of this.ends) end.undoMove();
  }
}

/**
 * Encodes `value` for a channel. Throws NotShareableError (nothing changed)
 * for values that cannot cross; moves the ends it carries to TRANSIT.
 */
export function encodeForChannel(value: unknown): ChannelMessage {
  if (value instanceof Uint8Array && !(value.buffer instanceof SharedArrayBuffer)) {
    const aligned = (value.byteOffset & 7) === 0 || value.length < REALIGN_MIN_BYTES;
    return new ChannelMessage(EMPTY, aligned ? value : value.slice(), value.length, R_RAW_BYTES, NO_ENDS);
  }
  if (value instanceof ArrayBuffer) {
    return new ChannelMessage(EMPTY, new Uint8Array(value), value.byteLength, R_RAW_BUFFER, NO_ENDS);
  }
  const collector = spareCollector ?? new Collector();
  spareCollector = undefined;
  try {
    const length = encodeValue(value, collector);
    const words = encoded.bytes === sharedEncoder.scratch ? wordsOfScratch() : null;
    if (collector.entries.length === 0) return new ChannelMessage(EMPTY, encoded.bytes, length, 0, NO_ENDS, words);
    return withAttachments(collector, encoded.bytes, length, words);
  } finally {
    collector.reset();
    spareCollector = collector;
  }
}

/** The message for codec bytes [0, length) of `bytes` that carry attachments: the table goes in front. */
function withAttachments(collector: Collector, bytes: Uint8Array, length: number, words: Int32Array | null): ChannelMessage {
  const endCount = collector.entries.reduce((n, entry) => n + (entry.end ? 1 : 0), 0);
  if (endCount > MAX_RECORDED_CLAIMS) {
    throw new NotShareableError(
      `a message can carry at most ${MAX_RECORDED_CLAIMS} channel ends, and this one has ${endCount}: send them in several messages (or pass them as call arguments)`,
    );
  }
  const table = new Uint8Array(tableBytes(collector.entries.length));
  const view = new DataView(table.buffer);
  view.setUint32(0, collector.entries.length, true);
  const ends: End[] = [];
  collector.entries.forEach((entry, i) => {
    let token: Token;
    if (entry.buffer) {
      const deposited = depositObject(entry.buffer);
      entry.id = deposited.id;
      token = deposited.token;
    } else token = entry.end!.memory.token();
    view.setUint8(4 + ENTRY_BYTES * i, entry.kind);
    view.setUint8(5 + ENTRY_BYTES * i, entry.tag ?? 0);
    view.setUint32(8 + ENTRY_BYTES * i, entry.id, true);
    for (let w = 0; w < TOKEN_WORDS; w++) view.setInt32(12 + ENTRY_BYTES * i + 4 * w, token[w]!, true);
  });
  try {
    for (const entry of collector.entries) {
      if (entry.end) {
        entry.end.beginMove();
        ends.push(entry.end);
      }
    }
  } catch (err) {
    for (const end of ends) end.undoMove();
    throw err;
  }
  return new ChannelMessage(table, bytes, length, R_ATTACH, ends, words);
}

/** Reads the attachment table at the front of `payload`; returns the entries and where the codec bytes start. */
function readTable(payload: Uint8Array): { entries: TableEntry[]; bodyStart: number } {
  if (payload.length < 4) throw new CorruptDataError("message attachment table is truncated");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const count = view.getUint32(0, true);
  if (count > payload.length) throw new CorruptDataError(`message declares ${count} attachments, more than its ${payload.length} bytes hold`);
  const bodyStart = tableBytes(count);
  if (bodyStart > payload.length) throw new CorruptDataError(`message declares ${count} attachments, more than its ${payload.length} bytes hold`);
  const entries: TableEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 4 + ENTRY_BYTES * i;
    const kind = view.getUint8(at);
    if (kind < KIND_SEND_END || kind > KIND_OBJECT) throw new CorruptDataError(`message attachment ${i} has unknown kind ${kind}`);
    const token: Token = [view.getInt32(at + 8, true), view.getInt32(at + 12, true), view.getInt32(at + 16, true), view.getInt32(at + 20, true)];
    entries.push({ kind, id: view.getUint32(at + 4, true), tag: view.getUint8(at + 1), token });
  }
  return { entries, bodyStart };
}

/** The channel ends listed in a payload's attachment table (empty if none or unreadable). */
export function carriedEnds(payload: Uint8Array): Array<{ id: number; kind: number }> {
  try {
    return readTable(payload).entries.filter((entry) => isEnd(entry.kind));
  } catch {
    return [];
  }
}

/** Releases one end counted under TRANSIT (a carried end whose receiver died before claiming it). */
export function releaseTransitEnd(kind: number, memory: ChannelMemory): { wake: number; discarded: Uint8Array[] } {
  return releaseHandles(memory, sideOfKind(kind), TRANSIT, 1);
}

function isEnd(kind: number): boolean {
  return kind === KIND_SEND_END || kind === KIND_RECV_END;
}

function sideOfKind(kind: number): Side {
  return kind === KIND_SEND_END ? "send" : "recv";
}

/** Decodes what a receive took. Ends it carries become this thread's handles. */
export function decodeFromChannel(received: Received): unknown {
  if (received.flags & R_RAW_BYTES) return received.bytes;
  if (received.flags & R_RAW_BUFFER) return received.bytes.buffer;
  if (!(received.flags & R_ATTACH)) return decode(received.bytes, undefined, received.length);
  const bytes = received.bytes.subarray(0, received.length);
  const { entries, bodyStart } = readTable(bytes);
  const resolved = new Map<number, unknown>();
  const claimed: End[] = [];
  const endIndex = new Map<number, number>(); // table index -> position among the ends (claims record)
  entries.forEach((entry, i) => {
    if (isEnd(entry.kind)) endIndex.set(i, endIndex.size);
  });
  const resolver: Resolver = {
    resolve(index: number): unknown {
      if (resolved.has(index)) return resolved.get(index);
      const entry = entries[index];
      if (!entry) throw new CorruptDataError(`message refers to attachment ${index} of ${entries.length}`);
      let value: unknown;
      if (entry.kind === KIND_BUFFER) value = objectById(entry.id, entry.token);
      else if (entry.kind === KIND_OBJECT) value = rebuildShared(entry.tag, objectById(entry.id, entry.token));
      else {
        const end = End.claimFromTransit(channelById(entry.id, entry.token), sideOfKind(entry.kind));
        markClaimed(endIndex.get(index)!);
        claimed.push(end);
        value = handleFor(end);
      }
      resolved.set(index, value);
      return value;
    },
  };
  // Claim every end even if the codec never asks for one, so none stays in transit.
  for (let i = 0; i < entries.length; i++) if (isEnd(entries[i]!.kind)) resolver.resolve(i);
  clearClaims();
  try {
    return decode(bytes.subarray(bodyStart), resolver);
  } catch (err) {
    for (const end of claimed) end.close();
    throw err;
  }
}

/**
 * Releases the ends carried by messages a channel discarded (its receivers
 * all left): each was counted under TRANSIT on its own channel.
 */
export function releaseCarriedEnds(payloads: Uint8Array[]): void {
  for (const payload of payloads) {
    let entries: TableEntry[];
    try {
      entries = readTable(payload).entries;
    } catch {
      continue; // a damaged table: nothing reliable to release
    }
    for (const entry of entries) {
      if (!isEnd(entry.kind)) continue;
      const memory = channelById(entry.id, entry.token);
      const { wake, discarded } = locked(memory, () => releaseHandles(memory, sideOfKind(entry.kind), TRANSIT, 1));
      wakeWaiters(memory, wake);
      releaseCarriedEnds(discarded);
    }
  }
}

/** A value as posted to another thread: codec bytes plus the shared buffers it refers to. */
export interface PostedValue {
  bytes: Uint8Array;
  attachments: Array<{ kind: number; tag?: number; buffer: SharedArrayBuffer }>;
}

/**
 * Encodes `value` for postMessage to party `targetSlot` (described as
 * `destination` in errors about moved handles). Ends are moved to that
 * party at once.
 */
export function encodeForPost(value: unknown, targetSlot: number, destination: string): PostedValue {
  const collector = new Collector();
  const length = encodeValue(value, collector);
  const bytes = encoded.bytes.slice(0, length);
  for (const entry of collector.entries) entry.end?.ensureOpen("pass");
  const attachments = collector.entries.map((entry) => {
    if (entry.end) {
      entry.end.moveToParty(targetSlot, destination);
      return { kind: entry.kind, buffer: entry.end.memory.buffer };
    }
    return { kind: entry.kind, tag: entry.tag, buffer: entry.buffer! };
  });
  return { bytes, attachments };
}

/** Decodes a value posted by encodeForPost; its ends are already counted as this thread's. */
export function decodeFromPost(posted: PostedValue): unknown {
  const handles = new Map<number, unknown>();
  return decode(posted.bytes, {
    resolve(index: number): unknown {
      if (handles.has(index)) return handles.get(index);
      const attachment = posted.attachments[index];
      if (!attachment) throw new CorruptDataError(`posted value refers to attachment ${index} of ${posted.attachments.length}`);
      const value =
        attachment.kind === KIND_BUFFER
          ? attachment.buffer
          : attachment.kind === KIND_OBJECT
            ? rebuildShared(attachment.tag ?? 0, attachment.buffer)
            : handleFor(new End(channelFromBuffer(attachment.buffer), sideOfKind(attachment.kind)));
      handles.set(index, value);
      return value;
    },
  });
}
