/**
 * The message codec: our own binary format for structured-cloneable values.
 *
 * `v8.serialize` costs ~4 µs per small object when called from JS (see
 * research/anchors.md, "Serialization unit costs"), more than a whole
 * postMessage; this codec writes common values straight into a reusable
 * scratch buffer instead. Decoding is a trust boundary: the bytes may come
 * from another interpreter or from damaged shared memory, so `decode` checks
 * every length against the bytes that remain, never sets a prototype, never
 * runs code found in the message, and fails only with `CorruptDataError`.
 *
 * Wire format. A message is one value. Each value starts with a tag byte.
 * Fixed-size numbers are little-endian. `varuint` is unsigned LEB128 of at
 * most 5 bytes (< 2^32). `string` means any of the string forms (0x08-0x0a,
 * 0x40-0x7f). `item` means any value. Values marked `*` are objects: each gets
 * the next id (0, 1, 2, ...) in the order the encoder meets them (a container
 * before its contents), and `Ref` names an earlier id, so shared objects and
 * cycles keep their identity within one message.
 *
 * | tag       | name            | layout after the tag                                              |
 * |-----------|-----------------|-------------------------------------------------------------------|
 * | 0x00      | Undefined       | -                                                                 |
 * | 0x01      | Null            | -                                                                 |
 * | 0x02      | False           | -                                                                 |
 * | 0x03      | True            | -                                                                 |
 * | 0x04      | Int32           | i32 (integers outside 0..127, not -0)                             |
 * | 0x05      | Float64         | f64 (everything else, incl. -0 and NaN)                           |
 * | 0x06      | BigIntPos       | varuint n, n bytes magnitude big-endian                           |
 * | 0x07      | BigIntNeg       | as BigIntPos; the value is minus the magnitude                    |
 * | 0x08      | String8         | u8 n, n bytes UTF-8                                               |
 * | 0x09      | String32        | u32 n, n bytes UTF-8                                              |
 * | 0x0a      | String16        | varuint n, n UTF-16 code units as u16 (strings w/ lone surrogates)|
 * | 0x0b      | Array *         | varuint length, then items and Holes runs covering the length     |
 * | 0x0c      | Holes           | varuint n >= 1: n missing elements (inside an Array); inside an   |
 * |           |                 | Object, n = 1 in place of a (key, item) entry: an absent property |
 * |           |                 | (a getter deleted it while the object was being written)          |
 * | 0x0d      | Object *        | varuint count, count x (string key, item)                         |
 * | 0x0e      | Map *           | varuint count, count x (item key, item value)                     |
 * | 0x0f      | Set *           | varuint count, count x item                                       |
 * | 0x10      | Date *          | f64 time value (NaN for an invalid date)                          |
 * | 0x11      | RegExp *        | string source, string flags                                       |
 * | 0x12      | FalseObject *   | - (new Boolean(false))                                            |
 * | 0x13      | TrueObject *    | - (new Boolean(true))                                             |
 * | 0x14      | NumberObject *  | f64                                                               |
 * | 0x15      | StringObject *  | string                                                            |
 * | 0x16      | BigIntObject *  | BigIntPos or BigIntNeg value                                      |
 * | 0x17      | ArrayBuffer *   | varuint n, n bytes (copied)                                       |
 * | 0x18      | View *          | u8 kind, buffer (ArrayBuffer, Attachment or Ref),                 |
 * |           |                 | varuint byteOffset, varuint length (elements; bytes for DataView) |
 * | 0x19      | Error *         | u8 prototype, u8 fields, one item per field bit set               |
 * | 0x1a      | Ref             | varuint id of an earlier object                                   |
 * | 0x1b      | Attachment *    | varuint index (the Attacher's; the Resolver gives the object)     |
 * | 0x20      | TopBytes        | raw bytes to the end: a top-level Uint8Array (first byte only)    |
 * | 0x21      | TopArrayBuffer  | raw bytes to the end: a top-level ArrayBuffer (first byte only)   |
 * | 0x22      | TopString       | UTF-8 to the end: a top-level well-formed string (first byte only)|
 * | 0x40-0x7f | StringInline    | (tag - 0x40) bytes UTF-8: strings of up to 63 bytes               |
 * | 0x80-0xff | SmallInt        | - : the integer tag - 0x80 (0..127)                               |
 *
 * View kinds: 0 Int8Array, 1 Uint8Array, 2 Uint8ClampedArray, 3 Int16Array,
 * 4 Uint16Array, 5 Int32Array, 6 Uint32Array, 7 Float32Array, 8 Float64Array,
 * 9 BigInt64Array, 10 BigUint64Array, 11 DataView. Error prototypes: 0 Error,
 * 1 EvalError, 2 RangeError, 3 ReferenceError, 4 SyntaxError, 5 TypeError,
 * 6 URIError. Error field bits, in item order: 1 name (only when it differs
 * from the prototype's), 2 message, 4 stack, 8 cause, 16 code (a string).
 *
 * Paths in `NotShareableError` read like JS: `value`, `value.a`,
 * `value["not an identifier"]`, `value.list[2]`; a Map key is
 * `value.m.keys()[i]`, a Map value `value.m.get("key")` (JSON for strings,
 * `1`, `2n`, `true`, `null`, `undefined` for other primitive keys) or
 * `value.m.values()[i]` (object keys); a Set element `value.s.values()[i]`;
 * an Error field `value.err.cause`; a view's buffer `value.view.buffer`.
 *
 * Where this differs from structured clone: non-index properties of arrays
 * are dropped; an Error keeps a non-standard `name` and a string `code` as own
 * properties (structured clone drops both); AggregateError arrives as an Error
 * named "AggregateError" without `errors`; a Node Buffer's own bytes are copied
 * (not the whole pooled ArrayBuffer under it), so it arrives as a Uint8Array
 * at offset 0 over its own buffer, and so does a top-level Uint8Array (the
 * TopBytes form: structured clone copies the whole buffer under a view);
 * resizable buffers and length-tracking views arrive fixed-size; Blob, KeyObject and
 * CryptoKey are refused rather than copied; an object whose prototype is
 * Object.prototype or null is taken as a plain object even if it is a built-in
 * whose prototype was replaced, and an `arguments` object is copied as a
 * plain object (structured clone refuses it). As structured clone does, a
 * detached buffer (or a view over one), a view out of bounds of its resizable
 * buffer, and a Proxy (without running a trap) are refused, and a property a
 * getter deleted before its turn is left out; a view past the end of a
 * resizable buffer that a getter grew after this message copied it is
 * refused (structured clone copies what fits). Decoded plain objects
 * (null-prototype ones too) have Object.prototype; decoded arrays are
 * allocated at their length, as JSON.parse does.
 *
 * Nesting depth is limited only by memory: both directions walk values with
 * an explicit stack instead of recursion, so 100k nested arrays neither
 * overflow the call stack nor need a cap.
 */
import { types } from "node:util";
import { Buffer, Blob } from "node:buffer";
import { BroadcastChannel, MessagePort, Worker } from "node:worker_threads";
import { CorruptDataError, MessageTooLargeError, NotShareableError } from "./errors.js";

// ---------------------------------------------------------------------------
// Public interface

/** Decides, for each object met while encoding, whether it travels by reference. */
export interface Attacher {
  /**
   * Called for every SharedArrayBuffer, and for every other non-null object
   * BEFORE any other check (so a channel end or Lock class instance can be
   * claimed). Return an attachment index (>= 0) to encode a reference to it,
   * or undefined to let the codec handle the object normally (functions are
   * refused without asking). `path` builds
   * the path string (e.g. "value.a[2]") lazily; call it only during attach.
   * A SharedArrayBuffer for which attach returns undefined (or when no
   * attacher is given) fails with NotShareableError.
   *
   * Called once per distinct object (a repeat is a back-reference). Encoding
   * can still fail after attach returned, so attach must not commit anything
   * (such as moving a channel end) until encode has returned.
   */
  attach(value: object, path: () => string): number | undefined;
}

/** Gives back, while decoding, the objects an Attacher claimed. */
export interface Resolver {
  /** Returns the object for attachment `index` (a SharedArrayBuffer when the codec needs a buffer). */
  resolve(index: number): unknown;
}

/** Tag byte of a top-level non-shared Uint8Array (or Buffer): `[TAG_TOP_BYTES][raw bytes...]`. */
export const TAG_TOP_BYTES: number = 0x20;
/** Tag byte of a top-level ArrayBuffer: `[TAG_TOP_ARRAYBUFFER][raw bytes...]`. */
export const TAG_TOP_ARRAYBUFFER: number = 0x21;
/** Tag byte of a top-level well-formed string: `[TAG_TOP_STRING][UTF-8 bytes...]`. */
export const TAG_TOP_STRING: number = 0x22;

/** Largest message the encoder will build (its scratch buffer stops growing here). */
export const MAX_ENCODED_BYTES = 2 ** 31;

// ---------------------------------------------------------------------------
// Constants

const enum Tag {
  Undefined = 0x00,
  Null = 0x01,
  False = 0x02,
  True = 0x03,
  Int32 = 0x04,
  Float64 = 0x05,
  BigIntPos = 0x06,
  BigIntNeg = 0x07,
  String8 = 0x08,
  String32 = 0x09,
  String16 = 0x0a,
  Array = 0x0b,
  Holes = 0x0c,
  Object = 0x0d,
  Map = 0x0e,
  Set = 0x0f,
  Date = 0x10,
  RegExp = 0x11,
  FalseObject = 0x12,
  TrueObject = 0x13,
  NumberObject = 0x14,
  StringObject = 0x15,
  BigIntObject = 0x16,
  ArrayBuffer = 0x17,
  View = 0x18,
  Error = 0x19,
  Ref = 0x1a,
  Attachment = 0x1b,
  TopBytes = 0x20,
  TopArrayBuffer = 0x21,
  TopString = 0x22,
  StringInline = 0x40,
  SmallInt = 0x80,
}

/** What an entry of the explicit stack (encoder or decoder) is filling. */
const enum Frame {
  Array,
  Object,
  Map,
  Set,
  Error,
}

const enum ErrorField {
  Name = 1,
  Message = 2,
  Stack = 4,
  Cause = 8,
  Code = 16,
  All = 31,
}

const ERROR_FIELD_NAMES = ["name", "message", "stack", "cause", "code"] as const;
const ERROR_PROTOTYPES = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError] as const;

type ViewConstructor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => ArrayBufferView;
const VIEW_CONSTRUCTORS: readonly ViewConstructor[] = [
  Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array,
  Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView,
];
const DATA_VIEW_KIND = 11;
const UINT8_KIND = 1;
/** View kind by the TypedArray's brand name (its Symbol.toStringTag). */
const VIEW_KIND_BY_NAME: ReadonlyMap<string, number> = new Map(VIEW_CONSTRUCTORS.slice(0, DATA_VIEW_KIND).map((C, i) => [C.name, i]));

/** Strings of up to this many UTF-16 units are encoded by hand (faster than encodeInto for short ones). */
const SHORT_STRING_UNITS = 64;
/** Above this many units, a long string's UTF-8 size is measured exactly instead of assuming 3 bytes per unit. */
const MEASURE_STRING_UNITS = 1 << 16;
/** Objects a message may hold before the encoder's back-reference lookup switches from a list to a Map. */
const LINEAR_SEEN_LIMIT = 16;
const INITIAL_SCRATCH_BYTES = 256;
/** A scratch buffer above this size is dropped when the previous message used under an eighth of it. */
const RETAINED_SCRATCH_BYTES = 1 << 20;
/** Stack frames and back-reference slots kept between messages (a deeper or bigger message's extra ones are dropped). */
const RETAINED_SLOTS = 4096;
/** How many more missing elements than present ones an array (or object) may have before it is built sparse. */
const SPARSE_SLACK = 64;

// Built-ins captured at load, so user code that replaces a method or defines an
// own property on a value (e.g. `u8.buffer`) cannot change what is encoded.
const { getPrototypeOf, defineProperty, keys: objectKeys } = Object;
const hasOwn = Object.hasOwn;
const ObjectPrototype = Object.prototype;
const ArrayBufferPrototype = ArrayBuffer.prototype;
const {
  isProxy, isArrayBuffer, isSharedArrayBuffer, isAnyArrayBuffer, isDate, isRegExp, isMap, isSet,
  isNativeError, isBoxedPrimitive, isNumberObject, isStringObject, isBooleanObject, isBigIntObject,
  isPromise, isWeakMap, isWeakSet, isGeneratorObject, isMapIterator, isSetIterator,
  isModuleNamespaceObject, isExternal, isKeyObject, isCryptoKey,
} = types;
const TypedArrayPrototype = getPrototypeOf(Uint8Array.prototype) as object;
const getter = (proto: object, key: PropertyKey): ((this: unknown) => any) =>
  Object.getOwnPropertyDescriptor(proto, key)!.get!;
const typedArrayName = getter(TypedArrayPrototype, Symbol.toStringTag) as (this: unknown) => string | undefined;
const typedArrayBuffer = getter(TypedArrayPrototype, "buffer") as (this: unknown) => ArrayBufferLike;
const typedArrayByteOffset = getter(TypedArrayPrototype, "byteOffset") as (this: unknown) => number;
const typedArrayLength = getter(TypedArrayPrototype, "length") as (this: unknown) => number;
const dataViewBuffer = getter(DataView.prototype, "buffer") as (this: unknown) => ArrayBufferLike;
const dataViewByteOffset = getter(DataView.prototype, "byteOffset") as (this: unknown) => number;
const dataViewByteLength = getter(DataView.prototype, "byteLength") as (this: unknown) => number;
const arrayBufferByteLength = getter(ArrayBuffer.prototype, "byteLength") as (this: unknown) => number;
const arrayBufferResizable = getter(ArrayBuffer.prototype, "resizable") as (this: unknown) => boolean;
const arrayBufferSlice = ArrayBuffer.prototype.slice;
/** Throws TypeError for a view whose buffer is detached or that is out of its (resizable) buffer's bounds; runs no user code. */
const typedArrayValidate = (TypedArrayPrototype as { keys(): unknown }).keys as (this: unknown) => unknown;
const sharedArrayBufferByteLength = getter(SharedArrayBuffer.prototype, "byteLength") as (this: unknown) => number;
const regExpSource = getter(RegExp.prototype, "source") as (this: unknown) => string;
const regExpFlags = getter(RegExp.prototype, "flags") as (this: unknown) => string;
const dateGetTime = Date.prototype.getTime;
const numberValueOf = Number.prototype.valueOf;
const stringValueOf = String.prototype.valueOf;
const booleanValueOf = Boolean.prototype.valueOf;
const bigIntValueOf = BigInt.prototype.valueOf;
const mapForEach = Map.prototype.forEach;
const setForEach = Set.prototype.forEach;
const fromCharCode = String.fromCharCode;
const BufferPrototype = Buffer.prototype;
/** A Node Buffer (any object whose prototype chain holds Buffer.prototype; `v` is not a Proxy). */
const isNodeBuffer = (v: object): boolean => BufferPrototype.isPrototypeOf(v);
// What the decoder calls, captured so that replacing a global or a method later cannot run code during a decode.
const DateConstructor = Date;
const ArrayBufferConstructor = ArrayBuffer;
const Uint8ArrayConstructor = Uint8Array;
const RegExpConstructor = RegExp;
const MapConstructor = Map;
const SetConstructor = Set;
const box = Object as (value: boolean | number | string | bigint) => object;
const uncurryThis = Function.prototype.bind.bind(Function.prototype.call) as <A extends unknown[], R>(fn: (...args: A) => R) => (self: unknown, ...args: A) => R;
const mapSet = uncurryThis(Map.prototype.set as (key: unknown, value: unknown) => Map<unknown, unknown>);
const setAdd = uncurryThis(Set.prototype.add as (value: unknown) => Set<unknown>);
/** Prototypes of built-in iterators that util.types has no check for. */
const ITERATOR_PROTOTYPES: ReadonlySet<unknown> = new Set([
  getPrototypeOf([][Symbol.iterator]()),
  getPrototypeOf(""[Symbol.iterator]()),
  getPrototypeOf(/x/[Symbol.matchAll]("")),
]);

const textEncoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const isWellFormed: (s: string) => boolean =
  typeof String.prototype.isWellFormed === "function" ? (s) => s.isWellFormed() : (s) => !LONE_SURROGATE.test(s);
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;
const DETACHED_ADVICE = "its memory was transferred away (a postMessage transfer, ArrayBuffer.prototype.transfer), so there is nothing to copy; send the buffer it was transferred to";
const isView = ArrayBuffer.isView;

/**
 * True for a detached ArrayBuffer (Node 20 has no `detached` getter). Call
 * it only when the byte length reads 0: the probe allocates a view. The
 * TypedArray constructor checks for detachment before anything a user
 * could hook (unlike ArrayBuffer.prototype.slice, which looks up a species).
 */
function isDetached(buffer: ArrayBufferLike): boolean {
  try {
    new Uint8ArrayConstructor(buffer);
    return false;
  } catch {
    return true;
  }
}

// ---------------------------------------------------------------------------
// Encoder

/** One level of the encoder's explicit stack: a container whose contents are being written. */
class EncodeFrame {
  kind = Frame.Array;
  /** The container (array or object) whose entries are read. */
  obj: unknown = undefined;
  /** Object keys, or the snapshot of a Map (key, value, ...), Set or Error's fields. */
  items: readonly unknown[] | null = null;
  /** Next entry to write; the one being written is idx - 1. */
  idx = 0;
  len = 0;
  /** Arrays: position in `items` (the present indices); Errors: the field bits. */
  aux = 0;
}

/**
 * Encodes values into a reusable scratch buffer. One Encoder per thread (or
 * per channel end) is enough; encode() is synchronous.
 */
export class Encoder {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;
  private lastLength = 0;
  private busy = false;
  private attacher: Attacher | undefined = undefined;
  /** Objects met in this message, by id: a short list searched linearly, then a Map. */
  private readonly seenList: (object | undefined)[] = [];
  private seenMap: Map<object, number> | null = null;
  private spareMap: Map<object, number> | null = null;
  private seenCount = 0;
  private readonly frames: EncodeFrame[] = [];
  private sp = 0;
  private maxSp = 0;
  /** True while writing a view's buffer (the path then ends in ".buffer"). */
  private inViewBuffer = false;
  /**
   * The length each resizable ArrayBuffer had when this message copied it
   * (made on the first one): a getter may resize it before a later view of
   * it is written, and that view must still fit the copy.
   */
  private resizableLengths: Map<object, number> | null = null;
  /** encodeInPlace's `rawTopBuffer`: a top-level ArrayBuffer is handed back in rawTop instead of being copied. */
  private rawTopWanted = false;
  /**
   * After encodeInPlace(value, attacher, true) whose value is a top-level
   * ArrayBuffer: a view of all its bytes (nothing was written to the
   * scratch, and the length returned is 0); else undefined.
   */
  rawTop: Uint8Array | undefined = undefined;
  private readonly pathOf = (): string => this.currentPath();

  /** Creates an encoder whose scratch buffer starts at `initialBytes` and doubles as needed. */
  constructor(initialBytes = INITIAL_SCRATCH_BYTES) {
    this.buf = new Uint8Array(Math.max(16, initialBytes));
    this.view = new DataView(this.buf.buffer);
  }

  /**
   * Encodes `value` into this encoder's reusable scratch buffer and returns a
   * view of the bytes, valid only until the next encode() call.
   *
   * Getters of the value are invoked (as by structured clone); `attacher` is
   * asked about every object first (see {@link Attacher}). A nested call (from
   * a getter or the attacher) encodes into a fresh buffer.
   *
   * @throws NotShareableError (with `.path` like "value.handlers[2]", and a
   *   message naming the path and the type and saying what to do) for
   *   functions, symbols, Proxies, WeakMap/WeakSet/WeakRef/FinalizationRegistry,
   *   Promises, iterators and generators, MessagePort,
   *   BroadcastChannel, Worker, Blob, KeyObject, CryptoKey, a
   *   SharedArrayBuffer the attacher does not claim, a detached ArrayBuffer
   *   (or a view over one), a view out of bounds of its resizable buffer,
   *   and a view past the end of a resizable buffer that a getter grew after
   *   the message had copied it; nothing is written anywhere but this
   *   encoder's scratch buffer.
   * @throws MessageTooLargeError when the encoding would exceed 2 GiB.
   * @throws TypeError when `attach` returns something other than undefined or
   *   an integer in 0..2^32-1; whatever a getter or `attach` throws.
   */
  encode(value: unknown, attacher?: Attacher): Uint8Array {
    if (this.busy) return new Encoder().encode(value, attacher);
    const length = this.encodeInPlace(value, attacher);
    return new Uint8Array(this.buf.buffer, 0, length);
  }

  /**
   * Like encode(), but returns the length: the bytes are [0, length) of
   * {@link scratch}, valid until the next encode. For callers that copy
   * them on at once and would only allocate a view to do so. Must not be
   * called from inside an encode (a getter, the attacher): throws then.
   */
  encodeInPlace(value: unknown, attacher?: Attacher, rawTopBuffer = false): number {
    if (this.busy) throw new Error("internal error: encodeInPlace re-entered; use encode()");
    this.busy = true;
    this.attacher = attacher;
    this.rawTopWanted = rawTopBuffer;
    this.rawTop = undefined;
    this.pos = 0;
    try {
      this.shrinkScratch();
      this.writeTop(value);
      this.lastLength = this.pos;
      return this.pos;
    } finally {
      this.finish();
    }
  }

  /** The scratch buffer the last encodeInPlace() wrote to (replaced when it grows). */
  get scratch(): Uint8Array {
    return this.buf;
  }

  /** Drops a scratch buffer over 1 MiB, e.g. after a one-off big message (a view encode() returned stays valid). */
  trim(): void {
    if (!this.busy && this.buf.length > RETAINED_SCRATCH_BYTES) this.replaceScratch(INITIAL_SCRATCH_BYTES);
  }

  /** Drops an oversized scratch buffer when the last message used under an eighth of it. */
  private shrinkScratch(): void {
    if (this.buf.length > RETAINED_SCRATCH_BYTES && this.lastLength < this.buf.length >>> 3) this.replaceScratch(INITIAL_SCRATCH_BYTES);
  }

  /** Swaps in a new scratch buffer of `size` bytes, keeping what was written so far. */
  private replaceScratch(size: number): void {
    let next: Uint8Array;
    try {
      next = new Uint8Array(size);
    } catch (err) {
      throw new MessageTooLargeError(`Cannot encode ${this.currentPath()}: could not allocate ${size} bytes for the message. Send large data in parts, or share it through a SharedArrayBuffer.`, { cause: err });
    }
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** Forgets every reference to the message's objects, ready for the next encode(). */
  private finish(): void {
    if (this.maxSp > RETAINED_SLOTS) this.frames.length = RETAINED_SLOTS;
    for (let f = 0; f < Math.min(this.maxSp, RETAINED_SLOTS); f++) {
      const frame = this.frames[f]!;
      frame.obj = undefined;
      frame.items = null;
    }
    this.sp = 0;
    this.maxSp = 0;
    const linear = Math.min(this.seenCount, LINEAR_SEEN_LIMIT);
    for (let i = 0; i < linear; i++) this.seenList[i] = undefined;
    if (this.seenMap !== null) {
      this.seenMap.clear();
      this.seenMap = null;
    }
    this.seenCount = 0;
    this.attacher = undefined;
    this.inViewBuffer = false;
    this.resizableLengths = null;
    this.busy = false;
  }

  // -- top level ------------------------------------------------------------

  private writeTop(value: unknown): void {
    if (typeof value === "string") return this.writeTopString(value);
    if (typeof value === "object" && value !== null) this.writeTopObject(value);
    else this.writeItem(value);
    this.drain();
  }

  /** A well-formed top-level string is TopString + UTF-8, without a length. */
  private writeTopString(s: string): void {
    const n = s.length;
    if (n <= SHORT_STRING_UNITS) {
      this.ensure(1 + 3 * n);
      const end = writeUtf8Short(this.buf, 1, s, n);
      if (end < 0) return this.writeUtf16(s);
      this.buf[0] = Tag.TopString;
      this.pos = end;
      return;
    }
    if (!isWellFormed(s)) return this.writeUtf16(s);
    this.ensure(1 + utf8Capacity(s));
    this.buf[0] = Tag.TopString;
    this.pos = 1 + textEncoder.encodeInto(s, this.buf.subarray(1)).written;
  }

  /** A top-level non-shared Uint8Array or ArrayBuffer is its tag + the raw bytes. */
  private writeTopObject(v: object): void {
    if (this.claim(v)) return;
    if (isProxy(v)) throw this.proxyNotShareable();
    if (isView(v)) {
      if (typedArrayName.call(v) === "Uint8Array") {
        const buffer = typedArrayBuffer.call(v);
        if (!isSharedArrayBuffer(buffer)) {
          if (typedArrayLength.call(v) === 0) this.checkView(v, buffer);
          return this.writeRaw(Tag.TopBytes, v as Uint8Array);
        }
      }
    } else if (getPrototypeOf(v) === ArrayBufferPrototype && isArrayBuffer(v)) {
      const n = arrayBufferByteLength.call(v);
      if (n === 0 && isDetached(v)) throw this.detachedNotShareable();
      const bytes = n === 0 ? new Uint8Array(0) : new Uint8Array(v, 0, n);
      if (this.rawTopWanted) {
        this.rawTop = bytes;
        return;
      }
      return this.writeRaw(Tag.TopArrayBuffer, bytes);
    }
    this.writeNotProxy(v);
  }

  private writeRaw(tag: Tag, bytes: Uint8Array): void {
    const n = typedArrayLength.call(bytes);
    this.ensure(1 + n);
    this.buf[0] = tag;
    this.buf.set(bytes, 1);
    this.pos = 1 + n;
  }

  // -- the explicit stack ---------------------------------------------------

  /** Writes the contents of every open container, depth first, without recursion. */
  private drain(): void {
    while (this.sp > 0) {
      const frame = this.frames[this.sp - 1]!;
      if (frame.kind === Frame.Array) this.continueArray(frame);
      else if (frame.kind === Frame.Object) this.continueObject(frame);
      else this.continueList(frame);
    }
  }

  private push(kind: Frame, obj: unknown, items: readonly unknown[] | null, len: number, aux = 0): void {
    const f = this.sp++;
    const frame = this.frames[f] ?? (this.frames[f] = new EncodeFrame());
    frame.kind = kind;
    frame.obj = obj;
    frame.items = items;
    frame.idx = 0;
    frame.len = len;
    frame.aux = aux;
    if (this.sp > this.maxSp) this.maxSp = this.sp;
  }

  /** Writes elements until one opens a container (returns to drain it) or the array ends. */
  private continueArray(frame: EncodeFrame): void {
    const arr = frame.obj as unknown[];
    const depth = this.sp;
    while (frame.idx < frame.len) {
      const i = frame.idx;
      const v = arr[i];
      if (v === undefined && !hasOwn(arr, i)) {
        this.writeHoles(frame, arr, i);
        continue;
      }
      frame.idx = i + 1;
      this.writeItem(v);
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  /** Writes one Holes run from the missing index `i` to the next present element (or the end). */
  private writeHoles(frame: EncodeFrame, arr: unknown[], i: number): void {
    const present = (frame.items ??= ownIndices(arr)) as readonly number[];
    let p = frame.aux;
    while (p < present.length && present[p]! <= i) p++;
    frame.aux = p;
    const next = p < present.length && present[p]! < frame.len ? present[p]! : frame.len;
    this.writeTagVaruint(Tag.Holes, next - i);
    frame.idx = next;
  }

  /**
   * Writes properties until one opens a container. The keys were listed
   * when the object was met; as in structured clone, a key that is no
   * longer an own property when its turn comes (a getter deleted it) is
   * left out: an absent entry (Holes 1) takes its place in the count.
   *
   * Asking whether each key is still own costs ~30 ns a key, a fifth of a
   * small object's encode, so a plain object (frame.aux 0) asks only when
   * the value read could have come from Object.prototype instead: undefined,
   * a function (its methods), or the prototype itself (key "__proto__"). An
   * object with another prototype (aux 1), whose chain may hold anything,
   * asks first, as structured clone does (so no inherited getter runs).
   * Inexact only in a realm whose Object.prototype has data properties.
   */
  private continueObject(frame: EncodeFrame): void {
    const obj = frame.obj as Record<string, unknown>;
    const keys = frame.items as readonly string[];
    const checkFirst = frame.aux !== 0;
    const depth = this.sp;
    while (frame.idx < frame.len) {
      const key = keys[frame.idx++]!;
      let value: unknown;
      if (checkFirst) {
        if (!hasOwn(obj, key)) {
          this.writeTagVaruint(Tag.Holes, 1);
          continue;
        }
        value = obj[key];
      } else {
        value = obj[key];
        if ((value === undefined || typeof value === "function" || key === "__proto__") && !hasOwn(obj, key)) {
          this.writeTagVaruint(Tag.Holes, 1);
          continue;
        }
      }
      this.writeString(key);
      this.writeItem(value);
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  /** Map, Set and Error frames write a snapshot list of items. */
  private continueList(frame: EncodeFrame): void {
    const items = frame.items!;
    const depth = this.sp;
    while (frame.idx < frame.len) {
      this.writeItem(items[frame.idx++]);
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  // -- values ---------------------------------------------------------------

  private writeItem(v: unknown): void {
    switch (typeof v) {
      case "number":
        return this.writeNumber(v);
      case "string":
        return this.writeString(v);
      case "object":
        return v === null ? this.writeByte(Tag.Null) : this.writeObject(v);
      case "boolean":
        return this.writeByte(v ? Tag.True : Tag.False);
      case "undefined":
        return this.writeByte(Tag.Undefined);
      case "bigint":
        return this.writeBigInt(v);
      case "function":
        throw this.notShareable(describeFunction(v), "functions cannot be copied; send plain data, or put the code in a module and run it there with call()");
      case "symbol":
        throw this.notShareable("a symbol", "symbols are unique to one interpreter; send a string instead");
    }
  }

  private writeNumber(n: number): void {
    const i = n | 0;
    if (i === n && (i !== 0 || 1 / n > 0)) {
      if (i >>> 7 === 0) return this.writeByte(Tag.SmallInt | i);
      this.ensure(5);
      this.buf[this.pos] = Tag.Int32;
      this.view.setInt32(this.pos + 1, i, true);
      this.pos += 5;
      return;
    }
    this.writeByte(Tag.Float64);
    this.writeFloat64(n);
  }

  private writeFloat64(n: number): void {
    this.ensure(8);
    this.view.setFloat64(this.pos, n, true);
    this.pos += 8;
  }

  /** Short strings: UTF-8 by hand with a 1-byte header; long ones: encodeInto; lone surrogates: UTF-16. */
  private writeString(s: string): void {
    const n = s.length;
    if (n > SHORT_STRING_UNITS) return this.writeLongString(s);
    this.ensure(2 + 3 * n);
    const start = this.pos;
    const end = writeUtf8Short(this.buf, start + 1, s, n);
    if (end < 0) return this.writeUtf16(s);
    const length = end - start - 1;
    if (length < 64) {
      this.buf[start] = Tag.StringInline | length;
      this.pos = end;
    } else {
      this.buf.copyWithin(start + 2, start + 1, end);
      this.buf[start] = Tag.String8;
      this.buf[start + 1] = length;
      this.pos = end + 1;
    }
  }

  private writeLongString(s: string): void {
    if (!isWellFormed(s)) return this.writeUtf16(s);
    this.ensure(5 + utf8Capacity(s));
    const start = this.pos;
    const written = textEncoder.encodeInto(s, this.buf.subarray(start + 5)).written;
    this.buf[start] = Tag.String32;
    this.view.setUint32(start + 1, written, true);
    this.pos = start + 5 + written;
  }

  /** Strings that are not well-formed UTF-16 keep every code unit exactly. */
  private writeUtf16(s: string): void {
    const n = s.length;
    this.ensure(6 + 2 * n);
    this.writeTagVaruint(Tag.String16, n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      buf[p++] = c & 0xff;
      buf[p++] = c >>> 8;
    }
    this.pos = p;
  }

  private writeBigInt(v: bigint): void {
    const negative = v < 0n;
    const magnitude = negative ? -v : v;
    const tag = negative ? Tag.BigIntNeg : Tag.BigIntPos;
    if (magnitude <= 0x1f_ffff_ffff_ffffn) return this.writeSmallBigInt(tag, Number(magnitude));
    let hex = magnitude.toString(16);
    if (hex.length & 1) hex = "0" + hex;
    const bytes = Buffer.from(hex, "hex");
    this.ensure(6 + bytes.length);
    this.writeTagVaruint(tag, bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }

  /** A magnitude below 2^53, written big-endian in as few bytes as it needs. */
  private writeSmallBigInt(tag: Tag, magnitude: number): void {
    let n = 0;
    for (let t = magnitude; t > 0; t = Math.floor(t / 256)) n++;
    this.ensure(2 + n);
    this.buf[this.pos++] = tag;
    this.buf[this.pos++] = n;
    for (let i = n - 1; i >= 0; i--) {
      this.buf[this.pos + i] = magnitude % 256;
      magnitude = Math.floor(magnitude / 256);
    }
    this.pos += n;
  }

  // -- objects --------------------------------------------------------------

  /** An object already in this message becomes a Ref; the attacher may claim it; else it is copied. */
  private writeObject(v: object): void {
    const id = this.idOf(v);
    if (id >= 0) return this.writeTagVaruint(Tag.Ref, id);
    if (this.claim(v)) return;
    this.writeUnclaimed(v);
  }

  /** Asks the attacher about `v`; writes an Attachment and returns true when it claims it. */
  private claim(v: object): boolean {
    if (this.attacher === undefined) return false;
    const index = this.attacher.attach(v, this.pathOf);
    if (index === undefined) return false;
    if (!Number.isInteger(index) || index < 0 || index > 0xffff_ffff) {
      throw new TypeError(`Attacher.attach returned ${String(index)} for ${this.currentPath()}; expected undefined or an integer from 0 to 2^32-1`);
    }
    this.remember(v);
    this.writeTagVaruint(Tag.Attachment, index);
    return true;
  }

  private writeUnclaimed(v: object): void {
    if (isProxy(v)) throw this.proxyNotShareable();
    this.writeNotProxy(v);
  }

  private writeNotProxy(v: object): void {
    if (Array.isArray(v)) return this.beginArray(v);
    const proto = getPrototypeOf(v);
    if (proto === ObjectPrototype || proto === null) return this.beginObject(v, false);
    this.writeBuiltIn(v);
  }

  /** Objects with another prototype: built-ins by their internal brand, else class instances (copied as plain objects). */
  private writeBuiltIn(v: object): void {
    if (isView(v)) return this.writeView(v);
    if (isArrayBuffer(v)) return this.writeArrayBuffer(v);
    if (isSharedArrayBuffer(v)) throw this.sharedBufferNotClaimed();
    if (isDate(v)) return this.writeDate(v);
    if (isRegExp(v)) return this.writeRegExp(v);
    if (isMap(v)) return this.beginMap(v);
    if (isSet(v)) return this.beginSet(v);
    if (isNativeError(v)) return this.beginError(v as Error);
    if (isBoxedPrimitive(v)) return this.writeBoxed(v);
    const refusal = uncloneable(v);
    if (refusal !== undefined) throw this.notShareable(refusal[0], refusal[1]);
    this.beginObject(v, true);
  }

  private beginArray(arr: unknown[]): void {
    this.remember(arr);
    const len = arr.length;
    this.writeTagVaruint(Tag.Array, len);
    if (len > 0) this.push(Frame.Array, arr, null, len);
  }

  /** Plain objects and class instances: own enumerable string keys (symbol keys are skipped). */
  private beginObject(obj: object, hasOtherPrototype: boolean): void {
    this.remember(obj);
    const keys = objectKeys(obj);
    this.writeTagVaruint(Tag.Object, keys.length);
    if (keys.length > 0) this.push(Frame.Object, obj, keys, keys.length, hasOtherPrototype ? 1 : 0);
  }

  private beginMap(map: Map<unknown, unknown>): void {
    this.remember(map);
    const flat: unknown[] = [];
    mapForEach.call(map, (value: unknown, key: unknown) => flat.push(key, value));
    this.writeTagVaruint(Tag.Map, flat.length >>> 1);
    if (flat.length > 0) this.push(Frame.Map, map, flat, flat.length);
  }

  private beginSet(set: Set<unknown>): void {
    this.remember(set);
    const items: unknown[] = [];
    setForEach.call(set, (value: unknown) => items.push(value));
    this.writeTagVaruint(Tag.Set, items.length);
    if (items.length > 0) this.push(Frame.Set, set, items, items.length);
  }

  /** Errors: prototype kind, then name (if unusual), own message, stack, own cause, code (if a string). */
  private beginError(err: Error): void {
    this.remember(err);
    const kind = errorKindOf(err);
    const fields: unknown[] = [];
    let bits = 0;
    const add = (bit: ErrorField, value: unknown, present: boolean): void => {
      if (!present) return;
      bits |= bit;
      fields.push(value);
    };
    const name = err.name;
    add(ErrorField.Name, name, typeof name === "string" && name !== ERROR_PROTOTYPES[kind].name);
    const message = hasOwn(err, "message") ? err.message : undefined;
    add(ErrorField.Message, message, typeof message === "string");
    const stack = err.stack;
    add(ErrorField.Stack, stack, typeof stack === "string");
    add(ErrorField.Cause, hasOwn(err, "cause") ? err.cause : undefined, hasOwn(err, "cause"));
    const code = (err as { code?: unknown }).code;
    add(ErrorField.Code, code, typeof code === "string");
    this.ensure(3);
    this.buf[this.pos++] = Tag.Error;
    this.buf[this.pos++] = kind;
    this.buf[this.pos++] = bits;
    if (fields.length > 0) this.push(Frame.Error, err, fields, fields.length, bits);
  }

  private writeDate(date: object): void {
    this.remember(date);
    this.writeByte(Tag.Date);
    this.writeFloat64(dateGetTime.call(date));
  }

  private writeRegExp(re: object): void {
    this.remember(re);
    this.writeByte(Tag.RegExp);
    this.writeString(regExpSource.call(re));
    this.writeString(regExpFlags.call(re));
  }

  private writeBoxed(v: object): void {
    if (isNumberObject(v)) {
      this.remember(v);
      this.writeByte(Tag.NumberObject);
      return this.writeFloat64(numberValueOf.call(v));
    }
    if (isStringObject(v)) {
      this.remember(v);
      this.writeByte(Tag.StringObject);
      return this.writeString(stringValueOf.call(v));
    }
    if (isBooleanObject(v)) {
      this.remember(v);
      return this.writeByte(booleanValueOf.call(v) ? Tag.TrueObject : Tag.FalseObject);
    }
    if (isBigIntObject(v)) {
      this.remember(v);
      this.writeByte(Tag.BigIntObject);
      return this.writeBigInt(bigIntValueOf.call(v));
    }
    throw this.notShareable("a Symbol object", "symbols are unique to one interpreter; send a string instead");
  }

  private writeArrayBuffer(buffer: ArrayBuffer): void {
    const n = arrayBufferByteLength.call(buffer);
    if (n === 0 && isDetached(buffer)) throw this.detachedNotShareable();
    if (arrayBufferResizable.call(buffer)) (this.resizableLengths ??= new Map()).set(buffer, n);
    this.remember(buffer);
    this.ensure(6 + n);
    this.writeTagVaruint(Tag.ArrayBuffer, n);
    if (n > 0) this.buf.set(new Uint8Array(buffer, 0, n), this.pos);
    this.pos += n;
  }

  /** TypedArrays and DataViews: kind, their buffer (copied, shared or a Ref), offset and length. */
  private writeView(v: ArrayBufferView): void {
    const name = typedArrayName.call(v);
    let kind: number | undefined = DATA_VIEW_KIND;
    let buffer: ArrayBufferLike, offset: number, length: number, byteLength: number;
    if (name === undefined) {
      buffer = dataViewBuffer.call(v);
      this.checkView(v, buffer); // a DataView's getters throw when it is out of bounds
      offset = dataViewByteOffset.call(v);
      length = byteLength = dataViewByteLength.call(v);
    } else {
      kind = VIEW_KIND_BY_NAME.get(name);
      if (kind === undefined) throw this.notShareable(`a ${name}`, "this codec does not know that view type; copy it into a supported TypedArray");
      buffer = typedArrayBuffer.call(v);
      offset = typedArrayByteOffset.call(v);
      length = typedArrayLength.call(v);
      if (length === 0) this.checkView(v, buffer); // detached and out-of-bounds views read as empty
      byteLength = length * (VIEW_CONSTRUCTORS[kind] as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    }
    const copiedLength = this.resizableLengths?.get(buffer);
    if (copiedLength !== undefined && offset + byteLength > copiedLength) {
      throw this.notShareable(
        `a view (bytes ${offset} to ${offset + byteLength}) past the ${copiedLength} bytes its resizable ArrayBuffer had when this message copied it`,
        "the buffer was resized while the message was being encoded (by a getter); resize it before sending, not while",
      );
    }
    this.remember(v);
    this.ensure(2);
    this.buf[this.pos++] = Tag.View;
    this.buf[this.pos++] = kind;
    if (kind === UINT8_KIND && isNodeBuffer(v) && !isSharedArrayBuffer(buffer)) {
      this.writeBufferBytes(buffer, offset, length);
      offset = 0;
    } else {
      this.writeViewBuffer(buffer);
    }
    this.ensure(10);
    this.writeVaruint(offset);
    this.writeVaruint(length);
  }

  /**
   * A Node Buffer usually sits in a shared 8 KiB pool, so only its own bytes
   * are copied (into an ArrayBuffer of their size) rather than the whole pool.
   */
  private writeBufferBytes(buffer: ArrayBufferLike, offset: number, length: number): void {
    this.remember({});
    this.ensure(6 + length);
    this.writeTagVaruint(Tag.ArrayBuffer, length);
    if (length > 0) this.buf.set(new Uint8Array(buffer, offset, length), this.pos);
    this.pos += length;
  }

  private writeViewBuffer(buffer: ArrayBufferLike): void {
    this.inViewBuffer = true;
    const id = this.idOf(buffer);
    if (id >= 0) this.writeTagVaruint(Tag.Ref, id);
    else if (!this.claim(buffer)) {
      if (isSharedArrayBuffer(buffer)) throw this.sharedBufferNotClaimed();
      this.writeArrayBuffer(buffer as ArrayBuffer);
    }
    this.inViewBuffer = false;
  }

  /**
   * Refuses a view over a detached buffer, or one out of bounds of its
   * resizable buffer (it shrank below the view), as structured clone does;
   * their getters read as empty (TypedArrays) or throw (DataViews).
   */
  private checkView(v: object, buffer: ArrayBufferLike): void {
    if (isSharedArrayBuffer(buffer)) return; // never detached, never shrinks
    if (arrayBufferByteLength.call(buffer) === 0 && isDetached(buffer)) {
      throw this.notShareable("a view over a detached ArrayBuffer", DETACHED_ADVICE);
    }
    try {
      if (typedArrayName.call(v) === undefined) dataViewByteLength.call(v);
      else typedArrayValidate.call(v);
    } catch {
      throw this.notShareable("a view out of bounds of its resizable ArrayBuffer", "the buffer was resized below the view; send a view that fits it, or resize the buffer first");
    }
  }

  // -- back-references ------------------------------------------------------

  /** The id of `v` if this message already holds it, else -1. */
  private idOf(v: object): number {
    if (this.seenMap !== null) return this.seenMap.get(v) ?? -1;
    const list = this.seenList;
    for (let i = 0; i < this.seenCount; i++) if (list[i] === v) return i;
    return -1;
  }

  /** Gives `v` the next id (the decoder numbers objects in the same order). */
  private remember(v: object): void {
    const id = this.seenCount++;
    if (this.seenMap !== null) {
      this.seenMap.set(v, id);
      return;
    }
    this.seenList[id] = v;
    if (id + 1 === LINEAR_SEEN_LIMIT) this.switchToSeenMap();
  }

  private switchToSeenMap(): void {
    const map = (this.spareMap ??= new Map());
    for (let i = 0; i < this.seenCount; i++) map.set(this.seenList[i]!, i);
    this.seenMap = map;
  }

  // -- bytes ----------------------------------------------------------------

  private writeByte(b: number): void {
    if (this.pos >= this.buf.length) this.grow(1);
    this.buf[this.pos++] = b;
  }

  private writeTagVaruint(tag: Tag, n: number): void {
    this.ensure(6);
    this.buf[this.pos++] = tag;
    this.writeVaruint(n);
  }

  /** LEB128; the caller has ensured 5 bytes of room. */
  private writeVaruint(n: number): void {
    const buf = this.buf;
    let p = this.pos;
    while (n >= 0x80) {
      buf[p++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    buf[p++] = n;
    this.pos = p;
  }

  private ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.grow(n);
  }

  /** Doubles the scratch buffer until `n` more bytes fit, up to MAX_ENCODED_BYTES. */
  private grow(n: number): void {
    const required = this.pos + n;
    if (required > MAX_ENCODED_BYTES) {
      throw new MessageTooLargeError(`Cannot encode ${this.currentPath()}: the message would take more than 2 GiB (${MAX_ENCODED_BYTES} bytes). Send large data in parts, or share it through a SharedArrayBuffer.`);
    }
    let size = this.buf.length * 2;
    while (size < required) size *= 2;
    this.replaceScratch(Math.min(size, MAX_ENCODED_BYTES));
  }

  // -- errors and paths -----------------------------------------------------

  private notShareable(what: string, advice: string): NotShareableError {
    const path = this.currentPath();
    return new NotShareableError(`${path} is ${what}, which cannot be sent to another interpreter: ${advice}.`, path);
  }

  private detachedNotShareable(): NotShareableError {
    return this.notShareable("a detached ArrayBuffer", DETACHED_ADVICE);
  }

  private proxyNotShareable(): NotShareableError {
    return this.notShareable("a Proxy", "its traps cannot run in another interpreter; send the target object or a plain copy of it");
  }

  private sharedBufferNotClaimed(): NotShareableError {
    return this.notShareable("a SharedArrayBuffer", "shared memory can only be passed where the receiver can map it (a channel send or an interpreter call), not through this encoder");
  }

  /** Where the value being written sits, e.g. `value.handlers[2]`. */
  private currentPath(): string {
    let path = "value";
    for (let f = 0; f < this.sp; f++) path += frameSegment(this.frames[f]!);
    return this.inViewBuffer ? path + ".buffer" : path;
  }
}

/** The path segment of the entry a frame is writing (its idx - 1). */
function frameSegment(frame: EncodeFrame): string {
  const i = frame.idx - 1;
  switch (frame.kind) {
    case Frame.Array:
      return `[${i}]`;
    case Frame.Object:
      return propertySegment(frame.items![i] as string);
    case Frame.Map:
      return mapEntrySegment(frame.items!, i);
    case Frame.Set:
      return `.values()[${i}]`;
    default:
      return "." + errorFieldName(frame.aux, i);
  }
}

function propertySegment(key: string): string {
  return IDENTIFIER.test(key) ? "." + key : `[${JSON.stringify(key)}]`;
}

/** `.keys()[n]` for a key; `.get(<key>)` for a value under a primitive key, else `.values()[n]`. */
function mapEntrySegment(flat: readonly unknown[], i: number): string {
  const entry = i >>> 1;
  if ((i & 1) === 0) return `.keys()[${entry}]`;
  const key = flat[i - 1];
  switch (typeof key) {
    case "string":
      return `.get(${JSON.stringify(key)})`;
    case "bigint":
      return `.get(${key}n)`;
    case "number":
    case "boolean":
    case "undefined":
      return `.get(${String(key)})`;
    default:
      return key === null ? ".get(null)" : `.values()[${entry}]`;
  }
}

/** The name of the `i`-th field present in `bits`. */
function errorFieldName(bits: number, i: number): string {
  for (let bit = 0; bit < ERROR_FIELD_NAMES.length; bit++) {
    if (bits & (1 << bit) && i-- === 0) return ERROR_FIELD_NAMES[bit]!;
  }
  return "?";
}

function describeFunction(fn: unknown): string {
  if (isProxy(fn)) return "a Proxy of a function";
  const name = Object.getOwnPropertyDescriptor(fn, "name")?.value;
  return typeof name === "string" && name !== "" ? `a function (${name})` : "a function";
}

/** Why `v`, an object with a non-plain prototype, cannot be copied: [what it is, what to do]; undefined when it can. */
function uncloneable(v: object): readonly [string, string] | undefined {
  if (isPromise(v)) return ["a Promise", "await it and send the result"];
  const weak = isWeakMap(v) ? "a WeakMap" : isWeakSet(v) ? "a WeakSet" : v instanceof WeakRef ? "a WeakRef" : v instanceof FinalizationRegistry ? "a FinalizationRegistry" : undefined;
  if (weak !== undefined) return [weak, "weakly held contents cannot be copied; send a Map, a Set or plain data"];
  if (isGeneratorObject(v) || isMapIterator(v) || isSetIterator(v) || ITERATOR_PROTOTYPES.has(getPrototypeOf(v))) {
    return ["an iterator or generator", "collect its values first (e.g. with Array.from) and send the array"];
  }
  if (isModuleNamespaceObject(v)) return ["a module namespace object", "send the exports you need as plain data"];
  const bound = v instanceof MessagePort ? "a MessagePort" : v instanceof BroadcastChannel ? "a BroadcastChannel" : v instanceof Worker ? "a Worker" : undefined;
  if (bound !== undefined) return [bound, "it belongs to this thread; talk across interpreters through channels"];
  if (v instanceof Blob) return ["a Blob", "this codec cannot copy it; send `await blob.arrayBuffer()` instead"];
  if (isKeyObject(v) || isCryptoKey(v)) return ["a crypto key", "this codec cannot copy it; send its exported form (key.export()) instead"];
  if (isExternal(v)) return ["a native external value", "it points into native memory; send plain data"];
  return undefined;
}

function errorKindOf(err: Error): number {
  for (let kind = ERROR_PROTOTYPES.length - 1; kind > 0; kind--) if (err instanceof ERROR_PROTOTYPES[kind]!) return kind;
  return 0;
}

/** The present indices of a holey array, ascending (Object.keys lists index keys first, in order). */
function ownIndices(arr: unknown[]): number[] {
  const indices: number[] = [];
  for (const key of objectKeys(arr)) {
    const index = arrayIndexOf(key);
    if (index < 0) break;
    indices.push(index);
  }
  return indices;
}

/** `key` as an array index (0..2^32-2) if it is one in canonical form, else -1. */
function arrayIndexOf(key: string): number {
  const c = key.charCodeAt(0);
  if (c < 48 || c > 57 || key.length > 10) return -1;
  const n = Number(key);
  return n < 0xffff_ffff && String(n) === key ? n : -1;
}

/** Room enough for the UTF-8 form of a well-formed string: 3 bytes per unit, or measured when long. */
function utf8Capacity(s: string): number {
  return s.length > MEASURE_STRING_UNITS ? Buffer.byteLength(s, "utf8") : 3 * s.length;
}

/**
 * Writes `s` (n <= SHORT_STRING_UNITS units) as UTF-8 at `at`, with room for
 * 3 bytes per unit. Returns the end offset, or -1 on a lone surrogate.
 */
function writeUtf8Short(buf: Uint8Array, at: number, s: string, n: number): number {
  let p = at;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      buf[p++] = c;
    } else if (c < 0x800) {
      buf[p++] = 0xc0 | (c >> 6);
      buf[p++] = 0x80 | (c & 0x3f);
    } else if (c < 0xd800 || c > 0xdfff) {
      buf[p++] = 0xe0 | (c >> 12);
      buf[p++] = 0x80 | ((c >> 6) & 0x3f);
      buf[p++] = 0x80 | (c & 0x3f);
    } else {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c > 0xdbff || d < 0xdc00 || d > 0xdfff) return -1;
      i++;
      const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      buf[p++] = 0xf0 | (cp >> 18);
      buf[p++] = 0x80 | ((cp >> 12) & 0x3f);
      buf[p++] = 0x80 | ((cp >> 6) & 0x3f);
      buf[p++] = 0x80 | (cp & 0x3f);
    }
  }
  return p;
}

// ---------------------------------------------------------------------------
// Decoder

const NO_BYTES = new Uint8Array(0);

/** One level of the decoder's explicit stack: a container still being filled. */
class DecodeFrame {
  kind = Frame.Array;
  obj: any = undefined;
  /** Entries read so far (array: elements and holes; Map: keys and values). */
  idx = 0;
  len = 0;
  /** Array: holes so far; Object: index keys so far; Error: field bits still to come. */
  aux = 0;
  /** A Map key waiting for its value. */
  key: unknown = undefined;
  /** An array made at its full length (see Reader.beginArray). */
  preallocated = false;
  /** Elements were moved to a dictionary (see makeSparse). */
  sparse = false;
}

/** Reads one message; reused between messages (a nested decode() gets its own). */
class Reader {
  private bytes: Uint8Array = NO_BYTES;
  private pos = 0;
  private end = 0;
  private resolver: Resolver | undefined = undefined;
  /** True while the resolver runs: what it throws is passed on unchanged. */
  inResolver = false;
  private readonly refs: unknown[] = [];
  private refCount = 0;
  /** Array elements that may still be preallocated in this message (see beginArray). */
  private slotBudget = 0;
  private readonly frames: DecodeFrame[] = [];
  private sp = 0;
  private maxSp = 0;

  /** Reads the message in bytes [0, length). */
  readMessage(bytes: Uint8Array, length: number, resolver: Resolver | undefined): unknown {
    this.bytes = bytes;
    this.pos = 0;
    this.end = length;
    this.slotBudget = length;
    this.resolver = resolver;
    const root = this.readItem();
    this.fill();
    if (this.pos !== this.end) throw this.corrupt(`${this.end - this.pos} unexpected bytes after the value`);
    return root;
  }

  /** Forgets the message and its objects. */
  reset(): void {
    if (this.refCount > RETAINED_SLOTS) this.refs.length = 0;
    else for (let i = 0; i < this.refCount; i++) this.refs[i] = undefined;
    this.refCount = 0;
    if (this.maxSp > RETAINED_SLOTS) this.frames.length = RETAINED_SLOTS;
    for (let f = 0; f < Math.min(this.maxSp, RETAINED_SLOTS); f++) {
      const frame = this.frames[f]!;
      frame.obj = undefined;
      frame.key = undefined;
    }
    this.sp = 0;
    this.maxSp = 0;
    this.bytes = NO_BYTES;
    this.resolver = undefined;
    this.inResolver = false;
  }

  // -- the explicit stack ---------------------------------------------------

  /** Fills every open container, depth first, without recursion. */
  private fill(): void {
    while (this.sp > 0) {
      const frame = this.frames[this.sp - 1]!;
      switch (frame.kind) {
        case Frame.Array:
          this.fillArray(frame);
          break;
        case Frame.Object:
          this.fillObject(frame);
          break;
        case Frame.Map:
          this.fillMap(frame);
          break;
        case Frame.Set:
          this.fillSet(frame);
          break;
        default:
          this.fillError(frame);
      }
    }
  }

  private push(kind: Frame, obj: unknown, len: number, aux = 0): void {
    const f = this.sp++;
    const frame = this.frames[f] ?? (this.frames[f] = new DecodeFrame());
    frame.kind = kind;
    frame.obj = obj;
    frame.idx = 0;
    frame.len = len;
    frame.aux = aux;
    frame.key = undefined;
    frame.preallocated = false;
    frame.sparse = false;
    if (this.sp > this.maxSp) this.maxSp = this.sp;
  }

  /** Reads elements until one opens a container (returns to fill it) or the array is complete. */
  private fillArray(frame: DecodeFrame): void {
    const arr = frame.obj as unknown[];
    const depth = this.sp;
    while (frame.idx < frame.len) {
      if (this.peekTag() === Tag.Holes) {
        this.readHoles(frame, arr);
        continue;
      }
      const i = frame.idx++;
      arr[i] = this.readItem();
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  /**
   * Skips a run of missing elements. A preallocated array has them already;
   * one that was not (its length exceeded the input) grows its length, and
   * moves to dictionary storage first when it is mostly holes.
   */
  private readHoles(frame: DecodeFrame, arr: unknown[]): void {
    this.pos++;
    const n = this.readVaruint();
    if (n === 0 || n > frame.len - frame.idx) throw this.corrupt(`a run of ${n} holes does not fit in an array of length ${frame.len} at index ${frame.idx}`);
    const preallocated = frame.preallocated;
    if (!preallocated && !frame.sparse && frame.aux + n > frame.idx - frame.aux + SPARSE_SLACK) {
      makeSparse(arr, frame.idx);
      frame.sparse = true;
    }
    frame.aux += n;
    frame.idx += n;
    if (!preallocated) arr.length = frame.idx;
  }

  private fillObject(frame: DecodeFrame): void {
    const obj = frame.obj as Record<string, unknown>;
    const depth = this.sp;
    while (frame.idx < frame.len) {
      const key = this.readKey();
      if (key === null) {
        this.skipAbsent(frame);
        continue;
      }
      frame.idx++;
      const value = this.readItem();
      if (key === "__proto__") defineData(obj, key, value, true);
      else {
        if (!frame.sparse && key.charCodeAt(0) <= 57) this.noteIndexKey(frame, obj, key);
        obj[key] = value;
      }
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  /**
   * An absent property (Holes 1) in place of an entry: it counts, nothing
   * is set. Always one per entry, two bytes, so readCount's bound holds.
   */
  private skipAbsent(frame: DecodeFrame): void {
    const n = this.readVaruint();
    if (n !== 1) throw this.corrupt(`a run of ${n} absent properties in an object (each absent property is one entry)`);
    frame.idx++;
  }

  /** Keeps an object with a few far-apart index keys from allocating element storage up to the largest. */
  private noteIndexKey(frame: DecodeFrame, obj: object, key: string): void {
    const index = arrayIndexOf(key);
    if (index < 0) return;
    if (index > 2 * frame.aux++ + SPARSE_SLACK) {
      makeSparse(obj, index);
      frame.sparse = true;
    }
  }

  private fillMap(frame: DecodeFrame): void {
    const map = frame.obj as Map<unknown, unknown>;
    const depth = this.sp;
    while (frame.idx < frame.len) {
      const isKey = (frame.idx++ & 1) === 0;
      const item = this.readItem();
      if (isKey) frame.key = item;
      else {
        mapSet(map, frame.key, item);
        frame.key = undefined;
      }
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  private fillSet(frame: DecodeFrame): void {
    const set = frame.obj as Set<unknown>;
    const depth = this.sp;
    while (frame.idx < frame.len) {
      frame.idx++;
      setAdd(set, this.readItem());
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  private fillError(frame: DecodeFrame): void {
    const depth = this.sp;
    while (frame.idx < frame.len) {
      frame.idx++;
      const bit = frame.aux & -frame.aux;
      frame.aux ^= bit;
      const value = this.readItem();
      if (bit !== ErrorField.Cause && typeof value !== "string") throw this.corrupt(`an Error's ${ERROR_FIELD_NAMES[Math.log2(bit)]} is not a string`);
      defineData(frame.obj, ERROR_FIELD_NAMES[Math.log2(bit)]!, value, bit === ErrorField.Code);
      if (this.sp !== depth) return;
    }
    this.sp--;
  }

  // -- values ---------------------------------------------------------------

  private readItem(): unknown {
    const tag = this.readTag();
    if (tag >= Tag.SmallInt) return tag - Tag.SmallInt;
    if (tag >= Tag.StringInline) return this.readUtf8(tag - Tag.StringInline);
    switch (tag) {
      case Tag.Undefined:
        return undefined;
      case Tag.Null:
        return null;
      case Tag.False:
        return false;
      case Tag.True:
        return true;
      case Tag.Int32:
        return this.readInt32();
      case Tag.Float64:
        return this.readFloat64();
      case Tag.BigIntPos:
      case Tag.BigIntNeg:
        return this.readBigInt(tag);
      case Tag.String8:
      case Tag.String32:
      case Tag.String16:
        return this.readStringBody(tag);
      case Tag.Array:
        return this.beginArray();
      case Tag.Object:
        return this.beginObject();
      case Tag.Map:
        return this.beginMap();
      case Tag.Set:
        return this.beginSet();
      case Tag.Date:
        return this.register(new DateConstructor(this.readFloat64()));
      case Tag.RegExp:
        return this.readRegExp();
      case Tag.FalseObject:
      case Tag.TrueObject:
        return this.register(box(tag === Tag.TrueObject));
      case Tag.NumberObject:
        return this.register(box(this.readFloat64()));
      case Tag.StringObject:
        return this.register(box(this.readString()));
      case Tag.BigIntObject:
        return this.readBigIntObject();
      case Tag.ArrayBuffer:
        return this.register(this.readArrayBuffer());
      case Tag.View:
        return this.readView();
      case Tag.Error:
        return this.beginError();
      case Tag.Ref:
        return this.readRef();
      case Tag.Attachment:
        return this.register(this.resolve(this.readVaruint()));
      default:
        this.pos--;
        throw this.corrupt(`unknown tag 0x${tag.toString(16).padStart(2, "0")}`);
    }
  }

  /**
   * Arrays are allocated at their full length (as JSON.parse does) while the
   * message's total stays within its byte length (each element of a dense
   * array takes at least a byte); past that (only holes can make it valid)
   * an array starts empty and grows, so a few bytes cannot allocate much.
   */
  private beginArray(): unknown[] {
    const len = this.readVaruint();
    if (len === 0) return this.register([]);
    const preallocate = len <= this.slotBudget;
    if (preallocate) this.slotBudget -= len;
    const arr = this.register(preallocate ? new Array<unknown>(len) : []);
    this.push(Frame.Array, arr, len);
    this.frames[this.sp - 1]!.preallocated = preallocate;
    return arr;
  }

  private beginObject(): object {
    const count = this.readCount(2, "properties");
    const obj = this.register({});
    if (count > 0) this.push(Frame.Object, obj, count);
    return obj;
  }

  private beginMap(): Map<unknown, unknown> {
    const count = this.readCount(2, "Map entries");
    const map = this.register(new MapConstructor());
    if (count > 0) this.push(Frame.Map, map, 2 * count);
    return map;
  }

  private beginSet(): Set<unknown> {
    const count = this.readCount(1, "Set elements");
    const set = this.register(new SetConstructor());
    if (count > 0) this.push(Frame.Set, set, count);
    return set;
  }

  /** A built-in error of the given prototype; its fields follow as items. */
  private beginError(): Error {
    const kind = this.readByte();
    const bits = this.readByte();
    if (kind >= ERROR_PROTOTYPES.length) throw this.corrupt(`unknown Error prototype ${kind}`);
    if (bits > ErrorField.All) throw this.corrupt(`unknown Error fields 0x${bits.toString(16)}`);
    const err = this.register(newBareError(ERROR_PROTOTYPES[kind]!));
    if (!(bits & ErrorField.Stack)) delete (err as { stack?: string }).stack;
    if (bits !== 0) this.push(Frame.Error, err, popCount(bits), bits);
    return err;
  }

  private readRegExp(): RegExp {
    const id = this.reserve();
    const source = this.readString();
    const flags = this.readString();
    let re: RegExp;
    try {
      re = new RegExpConstructor(source, flags);
    } catch {
      throw this.corrupt(`invalid RegExp /${source.slice(0, 40)}/${flags.slice(0, 10)}`);
    }
    this.refs[id] = re;
    return re;
  }

  private readBigIntObject(): object {
    const id = this.reserve();
    const tag = this.readTag();
    if (tag !== Tag.BigIntPos && tag !== Tag.BigIntNeg) throw this.corrupt("a BigInt object does not hold a bigint");
    return (this.refs[id] = box(this.readBigInt(tag)));
  }

  private readArrayBuffer(): ArrayBuffer {
    const n = this.readLength();
    const buffer = new ArrayBufferConstructor(n);
    new Uint8ArrayConstructor(buffer).set(this.bytes.subarray(this.pos, this.pos + n));
    this.pos += n;
    return buffer;
  }

  /** A TypedArray or DataView over a copied, shared or earlier buffer. */
  private readView(): ArrayBufferView {
    const kind = this.readByte();
    if (kind > DATA_VIEW_KIND) throw this.corrupt(`unknown view kind ${kind}`);
    const id = this.reserve();
    const tag = this.peekTag();
    if (tag !== Tag.ArrayBuffer && tag !== Tag.Attachment && tag !== Tag.Ref) throw this.corrupt("a view's buffer is not a buffer");
    const buffer = this.readItem();
    const offset = this.readVaruint();
    const length = this.readVaruint();
    const view = this.makeView(kind, buffer, offset, length);
    this.refs[id] = view;
    return view;
  }

  private makeView(kind: number, buffer: unknown, offset: number, length: number): ArrayBufferView {
    if (!isAnyArrayBuffer(buffer)) throw this.corrupt("a view's buffer is not an ArrayBuffer or SharedArrayBuffer");
    const byteLength = (isSharedArrayBuffer(buffer) ? sharedArrayBufferByteLength : arrayBufferByteLength).call(buffer);
    const Ctor = VIEW_CONSTRUCTORS[kind]!;
    const unit = kind === DATA_VIEW_KIND ? 1 : (Ctor as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
    if (offset % unit !== 0 || offset + length * unit > byteLength) {
      throw this.corrupt(`a view (offset ${offset}, length ${length}) does not fit its ${byteLength}-byte buffer`);
    }
    return new Ctor(buffer, offset, length);
  }

  private readRef(): unknown {
    const id = this.readVaruint();
    if (id >= this.refCount) throw this.corrupt(`a reference to object #${id}, but only ${this.refCount} came before`);
    return this.refs[id];
  }

  private resolve(index: number): unknown {
    if (this.resolver === undefined) throw this.corrupt(`a reference to shared object #${index}, but no resolver was given`);
    this.inResolver = true;
    const value = this.resolver.resolve(index);
    this.inResolver = false;
    return value;
  }

  private register<T>(obj: T): T {
    this.refs[this.refCount++] = obj;
    return obj;
  }

  /** Takes an id for an object made after its contents are read (views, RegExps, BigInt objects). */
  private reserve(): number {
    this.refs[this.refCount] = undefined;
    return this.refCount++;
  }

  // -- strings --------------------------------------------------------------

  /**
   * An object key: like readString, but short keys come from the cache as
   * internalized strings (faster to store). null for a Holes tag (absent
   * properties: see skipAbsent, which reads the count that follows).
   */
  private readKey(): string | null {
    const tag = this.readTag();
    const n = tag - Tag.StringInline;
    if (n >= 0 && n <= STRING_CACHE_MAX_BYTES && n <= this.end - this.pos) {
      const key = decodeShortUtf8(this.bytes, this.pos, n, true);
      if (key !== undefined) {
        this.pos += n;
        return key;
      }
    }
    if (tag === Tag.Holes) return null;
    this.pos--;
    return this.readString();
  }

  /** A string item (object keys, RegExp parts): any string form, nothing else. */
  private readString(): string {
    const tag = this.readTag();
    if (tag >= Tag.StringInline && tag < Tag.SmallInt) return this.readUtf8(tag - Tag.StringInline);
    if (tag === Tag.String8 || tag === Tag.String32 || tag === Tag.String16) return this.readStringBody(tag);
    this.pos--;
    throw this.corrupt(`expected a string, found tag 0x${tag.toString(16).padStart(2, "0")}`);
  }

  private readStringBody(tag: Tag): string {
    if (tag === Tag.String8) return this.readUtf8(this.readByte());
    if (tag === Tag.String32) return this.readUtf8(this.readUint32());
    const units = this.readVaruint();
    if (units > (this.end - this.pos) / 2) throw this.truncated(`a string of ${units} UTF-16 units`);
    const s = decodeUtf16(this.bytes, this.pos, units);
    this.pos += 2 * units;
    return s;
  }

  private readUtf8(n: number): string {
    if (n > this.end - this.pos) throw this.truncated(`a string of ${n} bytes`);
    const s = decodeUtf8(this.bytes, this.pos, n);
    if (s === undefined) throw this.corrupt("a string is not valid UTF-8");
    this.pos += n;
    return s;
  }

  // -- numbers --------------------------------------------------------------

  private readBigInt(tag: Tag): bigint {
    const n = this.readLength();
    const bytes = this.bytes;
    const p = this.pos;
    let magnitude: bigint;
    if (n <= 6) {
      let x = 0;
      for (let i = 0; i < n; i++) x = x * 256 + bytes[p + i]!;
      magnitude = BigInt(x);
    } else {
      try {
        magnitude = BigInt("0x" + Buffer.from(bytes.buffer, bytes.byteOffset + p, n).toString("hex"));
      } catch {
        throw this.corrupt(`a bigint of ${n} bytes is too large`);
      }
    }
    this.pos = p + n;
    return tag === Tag.BigIntNeg ? -magnitude : magnitude;
  }

  private readInt32(): number {
    if (this.end - this.pos < 4) throw this.truncated("an int32");
    const b = this.bytes;
    const p = this.pos;
    this.pos = p + 4;
    return b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24);
  }

  private readUint32(): number {
    return this.readInt32() >>> 0;
  }

  private readFloat64(): number {
    if (this.end - this.pos < 8) throw this.truncated("a float64");
    const b = this.bytes;
    const p = this.pos;
    if (LITTLE_ENDIAN) for (let i = 0; i < 8; i++) F64_BYTES[i] = b[p + i]!;
    else for (let i = 0; i < 8; i++) F64_BYTES[7 - i] = b[p + i]!;
    this.pos = p + 8;
    return F64[0]!;
  }

  // -- bytes ----------------------------------------------------------------

  private readTag(): number {
    if (this.pos >= this.end) throw this.truncated("a value");
    return this.bytes[this.pos++]!;
  }

  private peekTag(): number {
    if (this.pos >= this.end) throw this.truncated("a value");
    return this.bytes[this.pos]!;
  }

  private readByte(): number {
    if (this.pos >= this.end) throw this.truncated("a byte");
    return this.bytes[this.pos++]!;
  }

  /** LEB128 of at most 5 bytes, below 2^32. */
  private readVaruint(): number {
    const b = this.bytes;
    let p = this.pos;
    if (p >= this.end) throw this.truncated("a length");
    let x = b[p++]!;
    if (x < 0x80) {
      this.pos = p;
      return x;
    }
    x &= 0x7f;
    for (let shift = 7; ; shift += 7) {
      if (p >= this.end) throw this.truncated("a length");
      const c = b[p++]!;
      if (shift === 28) {
        if (c > 0x0f) throw this.corrupt("a length is 2^32 or more");
        x += c * 2 ** 28;
        break;
      }
      x |= (c & 0x7f) << shift;
      if (c < 0x80) break;
    }
    this.pos = p;
    return x;
  }

  /** A byte count that must fit in what remains. */
  private readLength(): number {
    const n = this.readVaruint();
    if (n > this.end - this.pos) throw this.truncated(`${n} bytes`);
    return n;
  }

  /** An entry count; each entry takes at least `minBytes`, so a count larger than the rest allows is corrupt. */
  private readCount(minBytes: number, what: string): number {
    const n = this.readVaruint();
    if (n * minBytes > this.end - this.pos) throw this.truncated(`${n} ${what}`);
    return n;
  }

  private corrupt(what: string): CorruptDataError {
    return new CorruptDataError(`Cannot decode message: ${what} (at byte ${this.pos} of ${this.end}). The message is damaged or was not written by this codec.`);
  }

  private truncated(what: string): CorruptDataError {
    return this.corrupt(`it ends before ${what}`);
  }
}

const F64 = new Float64Array(1);
const F64_BYTES = new Uint8Array(F64.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let spareReader: Reader | null = null;

/**
 * Decodes bytes produced by {@link Encoder.encode} (or written by the channel
 * code in one of the top-level raw forms: TAG_TOP_BYTES gives a fresh
 * Uint8Array copy, TAG_TOP_ARRAYBUFFER a fresh ArrayBuffer, TAG_TOP_STRING a
 * string). `bytes` may be a view of shared memory; it is read, not copied.
 * Never sets a prototype (a "__proto__" key becomes an own data property),
 * never calls user code or getters/setters, never evals; decoded plain objects
 * have Object.prototype, errors the built-in prototype of their kind.
 * Attachments are looked up with `resolver.resolve(index)`. (The constructors
 * and Map/Set methods it uses are captured when this module loads; properties
 * are assigned, so a setter someone installs on Object.prototype or
 * Array.prototype in this realm would run.)
 *
 * @throws CorruptDataError for malformed, truncated or trailing-garbage input,
 *   or an attachment without a resolver; never RangeError or a stack overflow
 *   (nesting depth is limited only by the input length), and no allocation
 *   beyond what the input length allows.
 * @throws TypeError when `bytes` is not a Uint8Array; RangeError when
 *   `length` is not an integer in [0, bytes.length]; whatever `resolve` throws.
 */
export function decode(bytes: Uint8Array, resolver?: Resolver, length: number = bytes?.length): unknown {
  if (!(bytes instanceof Uint8Array)) throw new TypeError(`decode expects a Uint8Array, got ${bytes === null ? "null" : typeof bytes}`);
  // `length` lets a caller decode the front of a reused buffer without making a view of it for every message.
  if (!Number.isInteger(length) || length < 0 || length > bytes.length) throw new RangeError(`decode: length ${length} is not within the ${bytes.length} bytes given`);
  const n = length;
  if (n === 0) throw new CorruptDataError("Cannot decode message: it is empty. The message is damaged or was not written by this codec.");
  switch (bytes[0]) {
    case Tag.TopBytes:
      return copyBytes(bytes, 1, n);
    case Tag.TopArrayBuffer:
      return copyBytes(bytes, 1, n).buffer;
    case Tag.TopString:
      return decodeTopString(bytes, n);
  }
  if (n === 1 && bytes[0]! >= Tag.SmallInt) return bytes[0]! - Tag.SmallInt;
  const reader = spareReader ?? new Reader();
  spareReader = null;
  try {
    return reader.readMessage(bytes, n, resolver);
  } catch (err) {
    throw asDecodeError(err, reader.inResolver);
  } finally {
    reader.reset();
    spareReader = reader;
  }
}

function decodeTopString(bytes: Uint8Array, length: number): string {
  const s = decodeUtf8(bytes, 1, length - 1);
  if (s === undefined) throw new CorruptDataError("Cannot decode message: its top-level string is not valid UTF-8. The message is damaged or was not written by this codec.");
  return s;
}

/** Checks throw CorruptDataError themselves; anything else a built-in threw still means bad input. */
function asDecodeError(err: unknown, fromResolver: boolean): unknown {
  if (err instanceof CorruptDataError || fromResolver) return err;
  const error = new CorruptDataError(`Cannot decode message: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}. The message is damaged or was not written by this codec.`, { cause: err });
  return error;
}

function copyBytes(bytes: Uint8Array, from: number, to: number): Uint8Array {
  const copy = new Uint8Array(to - from);
  copy.set(bytes.subarray(from, to));
  return copy;
}

/** Makes `new Ctor()` without capturing a stack trace (the decoded one replaces it). */
function newBareError(Ctor: ErrorConstructor): Error {
  const limit = Error.stackTraceLimit;
  Reflect.set(Error, "stackTraceLimit", 0);
  try {
    return new Ctor();
  } finally {
    Reflect.set(Error, "stackTraceLimit", limit);
  }
}

function defineData(obj: object, key: string, value: unknown, enumerable: boolean): void {
  defineProperty(obj, key, { value, writable: true, enumerable, configurable: true });
}

/**
 * Moves `obj`'s elements to a dictionary: defining an element with
 * non-default attributes does that in V8, and deleting it keeps it. Then an
 * element far from the others costs one entry, not storage for every index
 * below it (else a few bytes of input could allocate kilobytes).
 */
function makeSparse(obj: object, index: number): void {
  defineProperty(obj, index, { value: undefined, writable: false, enumerable: false, configurable: true });
  delete (obj as Record<number, unknown>)[index];
}

function popCount(bits: number): number {
  let n = 0;
  for (; bits !== 0; bits &= bits - 1) n++;
  return n;
}

// ---------------------------------------------------------------------------
// Strings

/** Short strings seen recently, by their UTF-8 bytes: object keys repeat from message to message. */
const STRING_CACHE_SLOTS = 4096;
const STRING_CACHE_MAX_BYTES = 16;
const cachedStrings: (string | undefined)[] = new Array<string | undefined>(STRING_CACHE_SLOTS).fill(undefined);
const cachedLengths = new Uint8Array(STRING_CACHE_SLOTS);
const cachedInternalized = new Uint8Array(STRING_CACHE_SLOTS);
const cachedBytes = new Uint8Array(STRING_CACHE_SLOTS * STRING_CACHE_MAX_BYTES);

/** UTF-8 bytes [p, p + n) as a string, or undefined when they are not valid UTF-8. */
function decodeUtf8(bytes: Uint8Array, p: number, n: number): string | undefined {
  if (n <= STRING_CACHE_MAX_BYTES) return decodeShortUtf8(bytes, p, n, false);
  if (n <= 64) {
    const ascii = decodeAscii(bytes, p, n);
    if (ascii !== undefined) return ascii;
  }
  return decodeUtf8Strict(bytes, p, n);
}

/**
 * A string of at most STRING_CACHE_MAX_BYTES bytes, from the cache when the
 * same bytes were decoded recently. `asKey` returns it internalized (V8 stores
 * a property faster under an internalized key); the cache then keeps that form.
 */
function decodeShortUtf8(bytes: Uint8Array, p: number, n: number, asKey: boolean): string | undefined {
  let h = n;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ bytes[p + i]!, 0x01000193);
  const slot = (h ^ (h >>> 15)) & (STRING_CACHE_SLOTS - 1);
  let s = cachedStrings[slot];
  if (s === undefined || cachedLengths[slot] !== n || !sameBytes(bytes, p, n, slot * STRING_CACHE_MAX_BYTES)) {
    s = decodeAscii(bytes, p, n) ?? decodeUtf8Strict(bytes, p, n);
    if (s === undefined) return undefined;
    cachedStrings[slot] = s;
    cachedLengths[slot] = n;
    cachedInternalized[slot] = 0;
    for (let i = 0; i < n; i++) cachedBytes[slot * STRING_CACHE_MAX_BYTES + i] = bytes[p + i]!;
  }
  if (asKey && cachedInternalized[slot] === 0) {
    s = cachedStrings[slot] = internalize(s);
    cachedInternalized[slot] = 1;
  }
  return s;
}

/** The internalized copy of `s` (V8 keeps property names internalized, and Object.keys returns them). */
function internalize(s: string): string {
  const holder: Record<string, number> = {};
  holder[s] = 0;
  return objectKeys(holder)[0] ?? s;
}

function sameBytes(bytes: Uint8Array, p: number, n: number, at: number): boolean {
  for (let i = 0; i < n; i++) if (bytes[p + i] !== cachedBytes[at + i]) return false;
  return true;
}

function decodeAscii(bytes: Uint8Array, p: number, n: number): string | undefined {
  for (let i = 0; i < n; i++) if (bytes[p + i]! >= 0x80) return undefined;
  return fromCharCode.apply(null, bytes.subarray(p, p + n) as unknown as number[]);
}

function decodeUtf8Strict(bytes: Uint8Array, p: number, n: number): string | undefined {
  try {
    return utf8Decoder.decode(bytes.subarray(p, p + n));
  } catch {
    return undefined;
  }
}

function decodeUtf16(bytes: Uint8Array, p: number, units: number): string {
  const CHUNK = 4096;
  let s = "";
  for (let i = 0; i < units; i += CHUNK) {
    const m = Math.min(CHUNK, units - i);
    const chunk = new Array<number>(m);
    for (let j = 0; j < m; j++, p += 2) chunk[j] = bytes[p]! | (bytes[p + 1]! << 8);
    s += fromCharCode.apply(null, chunk);
  }
  return s;
}

// ---------------------------------------------------------------------------
// Raw top-level bytes (the channel's fast path, transfer.ts)

const rawProbe = new Encoder(16);

/**
 * The bytes of a top-level non-shared Uint8Array (a Buffer too), which
 * travels as its bytes alone (transfer.ts: no codec, no copy but into the
 * ring): the value itself; undefined for anything else. Brand checks only,
 * so no user code runs (a Proxy is no view; the encoder refuses it without
 * running a trap), and the array's own `length` or `constructor` properties
 * are never read. A top-level ArrayBuffer is found by the encoder instead
 * (Encoder.rawTop), after the checks it makes anyway: asking here would
 * cost every other message a brand check.
 *
 * @throws NotShareableError (path "value") for a Uint8Array over a detached
 *   buffer, or out of bounds of a resizable one, as encode() does.
 */
export function topLevelRawBytes(value: object): Uint8Array | undefined {
  if (!isView(value) || typedArrayName.call(value) !== "Uint8Array" || isSharedBuffer(typedArrayBuffer.call(value))) return undefined;
  // Empty, detached or out of bounds: let the encoder decide (it refuses the last two).
  if (typedArrayLength.call(value) === 0) rawProbe.encode(value);
  return value as Uint8Array;
}

/**
 * A view's buffer is shared: the ArrayBuffer byteLength getter refuses a
 * SharedArrayBuffer (cheaper than util.types.isSharedArrayBuffer, a call
 * into C++, on the path of every raw message; the throw is for the rare
 * shared one).
 */
function isSharedBuffer(buffer: ArrayBufferLike): boolean {
  try {
    arrayBufferByteLength.call(buffer);
    return false;
  } catch {
    return true;
  }
}

/** Bytes [from, to) of a Uint8Array, as a new view (no method or property of the array is looked up: no user code). */
export function bytesRange(bytes: Uint8Array, from: number, to: number): Uint8Array {
  return new Uint8ArrayConstructor(typedArrayBuffer.call(bytes), typedArrayByteOffset.call(bytes) + from, to - from);
}

/** A copy of bytes [from, to) of a Uint8Array (no species lookup, unlike slice: no user code). */
export function copyOfBytes(bytes: Uint8Array, from: number, to: number): Uint8Array {
  const copy = new Uint8ArrayConstructor(to - from);
  copy.set(from === 0 && to === typedArrayLength.call(bytes) ? bytes : bytesRange(bytes, from, to));
  return copy;
}

/** A Uint8Array's length and byte offset, read with the built-in getters (an own property cannot change them). */
export function bytesLength(bytes: Uint8Array): number {
  return typedArrayLength.call(bytes);
}
export function bytesOffset(bytes: Uint8Array): number {
  return typedArrayByteOffset.call(bytes);
}

// ---------------------------------------------------------------------------
// isCloneable

const probe = new Encoder();

/**
 * True when `value` could be encoded (with `attachable(obj)` telling which
 * objects an attacher would claim; SharedArrayBuffers count as shareable).
 * It encodes the value into a private scratch buffer, so it costs about as
 * much as an encode and invokes the same getters. Never throws.
 */
export function isCloneable(value: unknown, attachable?: (obj: object) => boolean): boolean {
  const t = typeof value;
  if (t !== "object" && t !== "function" && t !== "symbol") return true;
  const attacher: Attacher = {
    attach: (obj) => (isSharedArrayBuffer(obj) || (attachable !== undefined && attachable(obj)) ? 0 : undefined),
  };
  try {
    probe.encode(value, attacher);
    return true;
  } catch {
    return false;
  } finally {
    probe.trim();
  }
}
