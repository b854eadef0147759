/**
 * The message codec: round trips of every supported type, identity and
 * cycles, the top-level raw forms, NotShareableError paths, shared buffers
 * through an attacher, decoding as a trust boundary (prototype pollution,
 * corrupt and hostile input, deep nesting), a property test and a fuzz test.
 */
import { isDeepStrictEqual, inspect, types } from "node:util";
import { MessageChannel } from "node:worker_threads";
import { Blob } from "node:buffer";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import fc from "fast-check";
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import {
  Encoder, decode, isCloneable, TAG_TOP_BYTES, TAG_TOP_ARRAYBUFFER, TAG_TOP_STRING,
  type Attacher, type Resolver,
} from "../src/serialization.js";
import { CorruptDataError, NotShareableError } from "../src/errors.js";

const test = suite("serialization");
const enc = new Encoder();

function roundTrip<T>(value: T, attacher?: Attacher, resolver?: Resolver): T {
  return decode(enc.encode(value, attacher), resolver) as T;
}

function assertSame(actual: unknown, expected: unknown, what = ""): void {
  assert.ok(isDeepStrictEqual(actual, expected), `${what} decoded ${inspect(actual, { depth: 4 })}, expected ${inspect(expected, { depth: 4 })}`);
}

function assertRoundTrips(value: unknown, what = inspect(value, { depth: 2 }).slice(0, 80)): void {
  assertSame(roundTrip(value), value, what);
}

function bytes(...parts: (number | number[] | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) typeof p === "number" ? out.push(p) : out.push(...p);
  return Uint8Array.from(out);
}

/** Tag bytes, read off the encoder's own output (see the format table in src/serialization.ts). */
const T = {
  array: enc.encode([])[0]!,
  object: enc.encode({})[0]!,
  map: enc.encode(new Map())[0]!,
  ref: ((x) => enc.encode([x, x])[4]!)({}),
  holes: enc.encode([, 1])[2]!,
  arrayBuffer: enc.encode({ b: new ArrayBuffer(0) })[4]!,
  view: enc.encode({ v: new Uint8Array(0) })[4]!,
  regexp: enc.encode(/x/)[0]!,
  error: enc.encode(new Error())[0]!,
  string32: enc.encode(["x".repeat(100)])[2]!,
  float64: enc.encode(1.5)[0]!,
};
const UNDEFINED = enc.encode(undefined)[0]!;

/** Hands out SharedArrayBuffers (and any object marked shareable) by index, as a channel would. */
class Shelf implements Attacher, Resolver {
  readonly objects: object[] = [];
  readonly paths: string[] = [];
  constructor(private readonly claims: (v: object) => boolean = (v) => v instanceof SharedArrayBuffer) {}
  attach(value: object, path: () => string): number | undefined {
    if (!this.claims(value)) return undefined;
    this.paths.push(path());
    this.objects.push(value);
    return this.objects.length - 1;
  }
  resolve(index: number): unknown {
    return this.objects[index];
  }
}

// -- round trips ------------------------------------------------------------

test("primitives round-trip, keeping -0 and NaN", () => {
  const values = [
    undefined, null, true, false, 0, 1, 127, 128, 255, -1, -128, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 32,
    1.5, -2.25, Number.MAX_VALUE, Number.MIN_VALUE, Number.EPSILON, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER,
    Infinity, -Infinity,
  ];
  for (const v of values) assert.ok(Object.is(roundTrip(v), v), `number ${v}`);
  assert.ok(Object.is(roundTrip(-0), -0), "-0");
  assert.ok(Number.isNaN(roundTrip(NaN)), "NaN");
  assert.ok(Object.is(roundTrip([-0])[0], -0), "nested -0");
  assert.ok(Number.isNaN(roundTrip({ n: NaN }).n), "nested NaN");
});

test("a top-level number is short: 1 byte for 0..127, 5 for int32, 9 for a double", () => {
  assert.is(enc.encode(7).length, 1);
  assert.is(enc.encode(127).length, 1);
  assert.is(enc.encode(128).length, 5);
  assert.is(enc.encode(-5).length, 5);
  assert.is(enc.encode(0.5).length, 9);
  assert.is(enc.encode(-0).length, 9);
});

test("bigints of any size and sign round-trip", () => {
  const values = [0n, 1n, -1n, 255n, 256n, 2n ** 48n - 1n, 2n ** 48n, 2n ** 53n - 1n, 2n ** 53n, -(2n ** 53n), 2n ** 64n - 1n, -(2n ** 64n), 2n ** 1000n + 12345n, -(3n ** 2000n)];
  for (const v of values) assert.is(roundTrip(v), v, `bigint ${v}`);
  const encoded = enc.encode({ big: 2n ** 100n, s: "x".repeat(80), f: 0.25 });
  const atOffset = new Uint8Array(new ArrayBuffer(encoded.length + 13), 13);
  atOffset.set(encoded);
  assertSame(decode(atOffset), { big: 2n ** 100n, s: "x".repeat(80), f: 0.25 }, "decoded from a view at an offset");
});

test("strings: ASCII, non-ASCII, emoji, BOM, boundaries of the short forms", () => {
  const samples = [
    "", "a", "abc", "héllo wörld", "日本語のテキスト", "🎉", "a🎉b", "👩‍👩‍👧‍👦 family", "\u0000nul\u0000", "\uFEFFbom first", "x\uFEFF",
    "\u07FF\u0800\uFFFF", "\u{10FFFF}", "é".repeat(31), "é".repeat(32), "a".repeat(63), "a".repeat(64), "a".repeat(65),
    "€".repeat(21), "€".repeat(22), "€".repeat(64), "€".repeat(65), "🎉".repeat(32), "🎉".repeat(33),
    "long ".repeat(1000), "ünïcödé ".repeat(500), "x".repeat(70_000),
  ];
  for (const s of samples) {
    assert.is(roundTrip(s), s, `top-level ${JSON.stringify(s.slice(0, 20))} (${s.length})`);
    assert.is(roundTrip([s])[0], s, `nested ${JSON.stringify(s.slice(0, 20))} (${s.length})`);
    assert.is(Object.keys(roundTrip({ [s]: 1 }))[0], s, `key ${JSON.stringify(s.slice(0, 20))}`);
  }
});

test("strings with lone surrogates round-trip exactly, top-level, nested and as keys", () => {
  const samples = ["\uD800", "\uDC00", "a\uD800", "\uDBFFz", "\uDC00\uD800", "ok🎉\uD83D", "\uDE00🎉", "x".repeat(100) + "\uD800", "\uDFFF".repeat(70), "é\uD800é".repeat(30)];
  for (const s of samples) {
    assert.not.ok(s.isWellFormed(), "sample is not well-formed");
    assert.is(roundTrip(s), s, `top-level ${JSON.stringify(s.slice(0, 12))}`);
    assert.is(roundTrip({ s }).s, s, `nested ${JSON.stringify(s.slice(0, 12))}`);
    assert.is(Object.keys(roundTrip({ [s]: 1 }))[0], s, `key ${JSON.stringify(s.slice(0, 12))}`);
  }
});

test("nested objects and arrays round-trip; decoded objects have Object.prototype and data properties only", () => {
  const value = { a: { b: { c: [1, "two", { three: 3 }, [[[]]]] } }, "not an identifier": true, 0: "zero", 42: "answer", "": "empty key", constructor: "c", prototype: "p" };
  const back = roundTrip(value);
  assertSame(back, value);
  assert.is(Object.getPrototypeOf(back), Object.prototype);
  assert.is(Object.getPrototypeOf(back.a.b.c), Array.prototype);
  for (const key of Object.keys(back)) {
    const d = Object.getOwnPropertyDescriptor(back, key)!;
    assert.ok("value" in d && d.writable && d.enumerable && d.configurable, `plain data property ${key}`);
  }
});

test("getters run on the sending side; the copy has plain data properties", () => {
  let calls = 0;
  const value = { get computed() { calls++; return { n: 5 }; }, plain: 1 };
  const back = roundTrip(value);
  assert.is(calls, 1);
  assertSame(back, { computed: { n: 5 }, plain: 1 });
  const d = Object.getOwnPropertyDescriptor(back, "computed")!;
  assert.ok("value" in d && d.get === undefined, "no getter on the copy");
});

test("class instances arrive as plain objects; symbol keys and non-enumerable properties are skipped", () => {
  class Point {
    #secret = 1;
    constructor(public x: number, public y: number) {}
    norm(): number { return Math.hypot(this.x, this.y) + this.#secret; }
  }
  const p = new Point(3, 4);
  Object.defineProperty(p, "hidden", { value: 1, enumerable: false });
  (p as unknown as Record<symbol, number>)[Symbol("s")] = 2;
  const back = roundTrip({ p });
  assert.is(Object.getPrototypeOf(back.p), Object.prototype);
  assertSame(back.p, { x: 3, y: 4 });
  const args = roundTrip((function (..._: unknown[]) { return arguments; })(1, "b"));
  assert.equal(args, { 0: 1, 1: "b" }, "an arguments object is copied as a plain object");
  const nullProto = Object.assign(Object.create(null), { a: 1 });
  const backNull = roundTrip(nullProto);
  assert.is(Object.getPrototypeOf(backNull), Object.prototype, "null-prototype objects arrive with Object.prototype");
  assert.equal({ ...backNull }, { a: 1 });
});

test("Date (valid and invalid) and RegExp (source and flags; lastIndex is not kept)", () => {
  const d = roundTrip(new Date(1_700_000_000_123));
  assert.ok(d instanceof Date && d.getTime() === 1_700_000_000_123);
  assert.ok(Number.isNaN(roundTrip(new Date(NaN)).getTime()));
  for (const re of [/a+b*/g, /x/dgimsuy, new RegExp("[\\p{L}--[a-z]]", "v"), /\//, new RegExp(""), /é🎉/u]) {
    const back = roundTrip(re);
    assert.ok(back instanceof RegExp && back.source === re.source && back.flags === re.flags, String(re));
  }
  const sticky = /a/g;
  sticky.lastIndex = 3;
  assert.is(roundTrip(sticky).lastIndex, 0);
});

test("Map and Set round-trip with object keys, order and identity inside", () => {
  const key = { k: 1 };
  const m = new Map<unknown, unknown>([[1, "one"], ["two", 2], [key, [key]], [NaN, "nan"], [null, undefined]]);
  const s = new Set<unknown>([1, "a", key, m]);
  const back = roundTrip({ m, s });
  assertSame(back, { m, s });
  const [bm, bs] = [back.m, back.s];
  assert.equal([...bm.keys()].slice(0, 2), [1, "two"]);
  const backKey = [...bm.keys()][2] as object;
  assert.is((bm.get(backKey) as object[])[0], backKey, "the Map value refers to the Map key");
  assert.ok(bs.has(backKey) && bs.has(bm), "the Set holds the same key object and the Map");
});

test("boxed primitives round-trip", () => {
  for (const v of [Object(true), Object(false), Object(1.5), Object(-0), Object("str"), Object("🎉\uD800"), Object(12n), Object(-(2n ** 70n))]) {
    const back = roundTrip(v);
    assert.ok(types.isBoxedPrimitive(back), "boxed");
    assertSame(back, v, String(v));
  }
});

test("ArrayBuffer, every TypedArray kind and DataView, with offsets and lengths preserved", () => {
  const ab = new ArrayBuffer(64);
  new Uint8Array(ab).forEach((_, i, a) => (a[i] = i * 7));
  const views: ArrayBufferView[] = [
    new Int8Array(ab, 1, 5), new Uint8Array(ab, 3, 7), new Uint8ClampedArray(ab, 2, 3), new Int16Array(ab, 2, 4),
    new Uint16Array(ab, 4, 2), new Int32Array(ab, 8, 3), new Uint32Array(ab, 4, 1), new Float32Array(ab, 12, 2),
    new Float64Array(ab, 16, 2), new BigInt64Array(ab, 8, 2), new BigUint64Array(ab, 24, 3), new DataView(ab, 5, 11),
  ];
  for (const v of views) {
    const back = roundTrip({ v }).v as ArrayBufferView;
    assert.is(Object.getPrototypeOf(back), Object.getPrototypeOf(v), v.constructor.name);
    assert.is(back.byteOffset, v.byteOffset, `${v.constructor.name} byteOffset`);
    assert.is(back.byteLength, v.byteLength, `${v.constructor.name} byteLength`);
    assert.is(back.buffer.byteLength, 64, "the whole buffer is copied");
    assertSame(back, v, v.constructor.name);
  }
  const plain = roundTrip({ ab }).ab;
  assert.ok(plain instanceof ArrayBuffer && plain !== ab);
  assertSame(new Uint8Array(plain), new Uint8Array(ab));
  assertSame(roundTrip([new Float64Array([NaN, -0, 1e300])])[0], new Float64Array([NaN, -0, 1e300]));
  const detached = new ArrayBuffer(8);
  const overDetached = new Uint16Array(detached, 2, 3);
  structuredClone(detached, { transfer: [detached] });
  // As structured clone: a detached buffer, or a view over one, is refused (test/hardening-codec.test.ts).
  assert.throws(() => roundTrip(detached), NotShareableError, /value is a detached ArrayBuffer/);
  assert.throws(() => roundTrip({ overDetached }), NotShareableError, /value\.overDetached is a view over a detached ArrayBuffer/);
  assert.throws(() => roundTrip({ detached }), NotShareableError, /value\.detached is a detached ArrayBuffer/);
});

test("two views on one ArrayBuffer share one decoded buffer; the buffer itself keeps identity", () => {
  const ab = new ArrayBuffer(16);
  const a = new Uint8Array(ab, 0, 8);
  const b = new Uint32Array(ab, 8, 2);
  const back = roundTrip({ a, b, ab, again: a });
  assert.is(back.a.buffer, back.b.buffer);
  assert.is(back.ab, back.a.buffer);
  assert.is(back.again, back.a);
  back.b[0] = 0x01020304;
  assert.is(new Uint8Array(back.ab)[8], 4, "writes through one view show in the other");
});

test("a Node Buffer arrives as a Uint8Array (top-level and nested), copying only its own bytes", () => {
  const buf = Buffer.from("hello buffer");
  const top = roundTrip(buf);
  assert.is(Object.getPrototypeOf(top), Uint8Array.prototype);
  assertSame(top, new Uint8Array(buf));
  const nested = roundTrip({ buf, same: buf });
  assert.is(Object.getPrototypeOf(nested.buf), Uint8Array.prototype);
  assertSame(nested.buf, new Uint8Array(buf));
  assert.is(nested.same, nested.buf);
  assert.ok(enc.encode({ buf }).length < 40, "not the whole 8 KiB pool");
});

test("Errors keep their built-in prototype, name, message, stack, cause and code", () => {
  const kinds = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError];
  for (const Kind of kinds) {
    const e = new Kind("boom", { cause: { why: [1, 2] } });
    const back = roundTrip(e);
    assert.is(Object.getPrototypeOf(back), Kind.prototype, Kind.name);
    assert.ok(types.isNativeError(back), "a real error object");
    assert.is(back.message, "boom");
    assert.is(back.name, Kind.name);
    assert.is(back.stack, e.stack);
    assertSame(back.cause, { why: [1, 2] });
    assert.not.ok(Object.keys(back).includes("message"), "message stays non-enumerable");
  }
  class MyError extends TypeError { override name = "MyError"; code = "E_MINE"; }
  const mine = roundTrip(new MyError("mine"));
  assert.is(Object.getPrototypeOf(mine), TypeError.prototype, "nearest built-in prototype");
  assert.is(mine.name, "MyError");
  assert.is((mine as unknown as { code: string }).code, "E_MINE");
  const agg = roundTrip(new AggregateError([new Error("inner")], "many"));
  assert.is(Object.getPrototypeOf(agg), Error.prototype);
  assert.is(agg.name, "AggregateError");
  assert.is(agg.message, "many");
  const bare = new Error();
  delete (bare as { stack?: string }).stack;
  const bareBack = roundTrip(bare);
  assert.is(bareBack.stack, undefined);
  assert.not.ok(Object.hasOwn(bareBack, "message"), "no message when none was set");
  const looped = new Error("loop");
  looped.cause = looped;
  const loopedBack = roundTrip(looped);
  assert.is(loopedBack.cause, loopedBack);
});

test("cycles and shared identity survive", () => {
  const a: Record<string, unknown> = { name: "a" };
  a.self = a;
  const back = roundTrip(a);
  assert.is(back.self, back);
  const x = { x: 1 };
  const pair = roundTrip([x, x, [x]]);
  assert.is(pair[0], pair[1]);
  assert.is((pair[2] as unknown[])[0], pair[0]);
  const ring: unknown[] = [];
  ring.push({ ring }, new Map([[ring, ring]]), new Set([ring]));
  const r = roundTrip(ring);
  assert.is((r[0] as { ring: unknown }).ring, r);
  assert.is((r[1] as Map<unknown, unknown>).get(r), r);
  assert.ok((r[2] as Set<unknown>).has(r));
});

test("sparse arrays keep their holes, even a[1e9] = 1; non-index array properties are dropped", () => {
  const samples: unknown[][] = [[, 1], [1, , 3], [1, 2, ,], new Array(5), [, , , "x", , , "y", , ,], [undefined, , undefined]];
  for (const s of samples) assertSame(roundTrip(s), s, inspect(s));
  const huge: number[] = [];
  huge[1e9] = 1;
  huge[5] = 5;
  const bytesOut = enc.encode(huge);
  assert.ok(bytesOut.length < 30, `compact: ${bytesOut.length} bytes`);
  const back = roundTrip(huge);
  assert.is(back.length, 1e9 + 1);
  assert.equal(Object.keys(back), ["5", "1000000000"]);
  const withProps = Object.assign([1, 2], { extra: "dropped" });
  assertSame(roundTrip(withProps), [1, 2]);
});

test("100k nested arrays and objects encode and decode without a stack overflow", () => {
  const DEPTH = 100_000;
  let nested: unknown = "bottom";
  for (let i = 0; i < DEPTH; i++) nested = i % 2 ? [nested] : { next: nested };
  let v = roundTrip(nested);
  let depth = 0;
  while (typeof v === "object") {
    v = Array.isArray(v) ? v[0] : (v as { next: unknown }).next;
    depth++;
  }
  assert.is(depth, DEPTH);
  assert.is(v, "bottom");
  // Hand-written: 300k nested one-element arrays, then a truncated version.
  const LEVELS = 300_000;
  const deep = new Uint8Array(2 * LEVELS + 1);
  for (let i = 0; i < 2 * LEVELS; i += 2) (deep[i] = T.array), (deep[i + 1] = 1);
  deep[2 * LEVELS] = 0x80;
  let w = decode(deep);
  let levels = 0;
  while (Array.isArray(w)) (w = w[0]), levels++;
  assert.is(levels, LEVELS);
  assert.throws(() => decode(deep.subarray(0, 2 * LEVELS)), CorruptDataError);
});

test("decode(bytes, resolver, length) reads only the first length bytes, for every form", () => {
  const values: unknown[] = [{ id: 7, name: "n", values: [1, 2, 3, 4] }, "hé", Uint8Array.from([1, 2, 3]), Uint8Array.from([4, 5]).buffer, 42, [1, [2]]];
  for (const value of values) {
    const encoded = enc.encode(value).slice();
    const padded = new Uint8Array(encoded.length + 11).fill(0xee); // junk after the message, as in a reused buffer
    padded.set(encoded);
    assert.equal(decode(padded, undefined, encoded.length), value);
    // Without the length the junk is read: an error, or (raw forms, bytes to the end) a longer value.
    let whole: unknown;
    try {
      whole = decode(padded);
    } catch (err) {
      assert.ok(err instanceof CorruptDataError);
      continue;
    }
    assert.not.equal(whole, value);
  }
  const one = enc.encode({ a: 1 }).slice();
  for (const bad of [-1, one.length + 1, 1.5, NaN]) assert.throws(() => decode(one, undefined, bad), RangeError, /length/);
  assert.throws(() => decode(one, undefined, 0), CorruptDataError);
});

test("encodeInPlace writes what encode returns into the scratch, and refuses to be re-entered", () => {
  const encoder = new Encoder();
  for (const value of [{ id: 1, name: "x".repeat(300), values: [1, 2] }, "s", 5, [null, true]]) {
    const expected = encoder.encode(value).slice();
    const length = encoder.encodeInPlace(value);
    assert.is(length, expected.length);
    assertSame(encoder.scratch.subarray(0, length), expected);
  }
  const reentering = { get x(): number { encoder.encodeInPlace(1); return 1; } };
  assert.throws(() => encoder.encodeInPlace(reentering), Error, /re-entered/);
  assert.equal(encoder.encode({ after: "a throw" }).length > 0, true, "the encoder is usable after it");
});

// -- the top-level raw forms --------------------------------------------------

test("top-level Uint8Array, ArrayBuffer and string use the raw forms, and decode accepts hand-written ones", () => {
  const u8 = Uint8Array.from([1, 2, 3]);
  assertSame(enc.encode(u8), bytes(TAG_TOP_BYTES, 1, 2, 3));
  assertSame(enc.encode(u8.buffer), bytes(TAG_TOP_ARRAYBUFFER, 1, 2, 3));
  assertSame(enc.encode("hé"), bytes(TAG_TOP_STRING, 0x68, 0xc3, 0xa9));
  assertSame(enc.encode(new Uint8Array(new ArrayBuffer(10), 2, 3)), bytes(TAG_TOP_BYTES, 0, 0, 0));
  const raw = bytes(TAG_TOP_BYTES, 9, 8, 7);
  const fromRaw = decode(raw) as Uint8Array;
  assert.ok(fromRaw instanceof Uint8Array && fromRaw.buffer !== raw.buffer, "a fresh copy");
  assertSame(fromRaw, Uint8Array.from([9, 8, 7]));
  raw[1] = 0;
  assert.is(fromRaw[0], 9);
  const ab = decode(bytes(TAG_TOP_ARRAYBUFFER, 5, 6)) as ArrayBuffer;
  assert.ok(ab instanceof ArrayBuffer);
  assertSame(new Uint8Array(ab), Uint8Array.from([5, 6]));
  assert.is(decode(bytes(TAG_TOP_STRING, ...new TextEncoder().encode("🎉 ok"))), "🎉 ok");
  assert.is(decode(bytes(TAG_TOP_STRING)), "");
  assertSame(decode(bytes(TAG_TOP_BYTES)), new Uint8Array(0));
  assert.throws(() => decode(bytes(TAG_TOP_STRING, 0xff)), CorruptDataError);
  const shared = new Uint8Array(new SharedArrayBuffer(4));
  shared.set([TAG_TOP_BYTES, 1, 2, 3]);
  assertSame(decode(shared), Uint8Array.from([1, 2, 3]), "decodes from shared memory");
});

test("the returned view is reused by the next encode; the scratch buffer grows for big messages", () => {
  const e = new Encoder(16);
  const first = e.encode({ a: 1 });
  const copy = first.slice();
  e.encode({ b: 2 });
  assert.not.equal(Array.from(first), Array.from(copy), "the first view now shows the second message");
  const big = { blob: new Uint8Array(3_000_000).fill(7), text: "ü".repeat(1_000_000) };
  const back = decode(e.encode(big)) as typeof big;
  assert.is(back.blob.length, 3_000_000);
  assert.is(back.text, big.text);
  assertSame(decode(e.encode({ small: true })), { small: true });
});

test("an encode nested in a getter uses a fresh buffer and does not disturb the outer one", () => {
  const e = new Encoder();
  let inner: Uint8Array | undefined;
  const value = { a: 1, get b() { inner = e.encode({ inner: "yes" }).slice(); return 2; }, c: "three" };
  const outer = decode(e.encode(value));
  assertSame(outer, { a: 1, b: 2, c: "three" });
  assertSame(decode(inner!), { inner: "yes" });
});

// -- not shareable ----------------------------------------------------------

function notShareable(value: unknown, attacher?: Attacher): NotShareableError {
  const e = new Encoder();
  let thrown: unknown;
  try {
    e.encode(value, attacher);
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof NotShareableError, `expected NotShareableError for ${inspect(value)}, got ${inspect(thrown)}`);
  return thrown as NotShareableError;
}

test("NotShareableError names the exact path and the type, and says what to do", () => {
  const fn = function handler(): void {};
  const cases: [unknown, string, RegExp][] = [
    [{ handlers: [1, 2, () => 1] }, "value.handlers[2]", /function/],
    [() => 1, "value", /function/],
    [Symbol("s"), "value", /symbol/],
    [new Proxy({}, {}), "value", /Proxy/],
    [new WeakMap(), "value", /WeakMap/],
    [new WeakSet(), "value", /WeakSet/],
    [new WeakRef({}), "value", /WeakRef/],
    [Promise.resolve(1), "value", /Promise/],
    [{ m: new Map([["k", fn]]) }, 'value.m.get("k")', /function \(handler\)/],
    [{ m: new Map([[1, [Symbol()]]]) }, "value.m.get(1)[0]", /symbol/],
    [{ m: new Map([[{}, fn]]) }, "value.m.values()[0]", /function/],
    [{ m: new Map([[fn, 1]]) }, "value.m.keys()[0]", /function/],
    [{ s: new Set([1, fn]) }, "value.s.values()[1]", /function/],
    [{ "a b": { c: fn } }, 'value["a b"].c', /function/],
    [[{ deep: [{ p: new Proxy([], {}) }] }], "value[0].deep[0].p", /Proxy/],
    [{ err: new Error("x", { cause: fn }) }, "value.err.cause", /function/],
    [{ port: new MessageChannel().port1 }, "value.port", /MessagePort/],
    [{ it: [1].values() }, "value.it", /iterator/],
    [{ sab: new SharedArrayBuffer(8) }, "value.sab", /SharedArrayBuffer/],
    [{ v: new Int32Array(new SharedArrayBuffer(8)) }, "value.v.buffer", /SharedArrayBuffer/],
    [new SharedArrayBuffer(8), "value", /SharedArrayBuffer/],
    [[Object(Symbol("boxed"))], "value[0]", /Symbol object/],
    [{ blob: new Blob(["x"]) }, "value.blob", /Blob/],
    [{ ns: new Map([[1n, { gen: (function* () {})() }]]) }, "value.ns.get(1n).gen", /iterator or generator/],
  ];
  for (const [value, path, what] of cases) {
    const err = notShareable(value);
    assert.is(err.path, path, `path for ${inspect(value, { depth: 1 })}`);
    assert.ok(err.message.startsWith(`${path} is `), `message names the path: ${err.message}`);
    assert.match(err.message, what);
    assert.match(err.message, /cannot be sent to another interpreter: \S/);
    assert.is(err.code, "ERR_NOT_SHAREABLE");
  }
});

// -- shared buffers and attachments -----------------------------------------

test("SharedArrayBuffers travel through the attacher and come back as the same object", () => {
  const shelf = new Shelf();
  const sab = new SharedArrayBuffer(16);
  const view = new Int32Array(sab, 4, 2);
  const back = roundTrip({ sab, view, again: sab, dv: new DataView(sab, 1, 3) }, shelf, shelf);
  assert.is(shelf.objects.length, 1, "attach is asked once per distinct object");
  assert.is(back.sab, sab);
  assert.is(back.again, sab);
  assert.is(back.view.buffer, sab, "a view over the same shared memory");
  assert.is(back.view.byteOffset, 4);
  assert.is(back.view.length, 2);
  assert.is(back.dv.byteOffset, 1);
  back.view[0] = 42;
  assert.is(view[0], 42, "shared, not copied");
  assert.is(roundTrip(sab, shelf, shelf), sab, "top-level SharedArrayBuffer");
  const top = roundTrip(new Uint8Array(sab, 2, 3), shelf, shelf);
  assert.is(top.buffer, sab, "top-level view of shared memory");
  assert.is(notShareable({ sab }).path, "value.sab", "without an attacher");
  assert.is(notShareable({ sab }, new Shelf(() => false)).path, "value.sab", "an attacher that declines");
});

test("the attacher sees every object first, with a lazy path, and can claim class instances", () => {
  class Lock { constructor(readonly id: number) {} }
  const lock = new Lock(7);
  const shelf = new Shelf((v) => v instanceof Lock || v instanceof SharedArrayBuffer);
  const back = roundTrip({ list: [1, lock, { inner: lock }], v: new Uint8Array(new SharedArrayBuffer(4)) }, shelf, shelf);
  assert.is(back.list[1], lock);
  assert.is((back.list[2] as { inner: Lock }).inner, lock);
  assert.equal(shelf.paths, ["value.list[1]", "value.v.buffer"]);
  const seen: object[] = [];
  const spy: Attacher = { attach: (v) => void seen.push(v) };
  const proxy = new Proxy({}, {});
  const claimed: Attacher = { attach: (v) => (v === proxy ? 0 : undefined) };
  const backProxy = decode(enc.encode({ proxy }, claimed), { resolve: () => "resolved" }) as { proxy: unknown };
  assert.is(backProxy.proxy, "resolved", "a claimed Proxy is not refused");
  enc.encode({ a: [new Date(0)] }, spy);
  assert.is(seen.length, 3, "the object, the array and the Date");
  assert.throws(() => enc.encode({ a: {} }, { attach: () => -1 }), TypeError);
  assert.throws(() => decode(enc.encode({ lock }, shelf)), CorruptDataError, /no resolver/);
});

// -- decoding is a trust boundary --------------------------------------------

test("__proto__ stays an own key and Object.prototype is not polluted", () => {
  const hostile = JSON.parse('{"__proto__": {"polluted": 1}, "a": {"__proto__": {"polluted": 2}}}');
  const back = roundTrip(hostile) as Record<string, unknown>;
  assert.is(({} as Record<string, unknown>).polluted, undefined);
  assert.is(Object.getPrototypeOf(back), Object.prototype);
  assert.ok(Object.hasOwn(back, "__proto__"), "own __proto__ key");
  assert.equal(Object.keys(back), ["__proto__", "a"]);
  assertSame(Object.getOwnPropertyDescriptor(back, "__proto__")!.value, { polluted: 1 });
  assert.is((back as { polluted?: unknown }).polluted, undefined);
  assert.is(Object.getPrototypeOf(back.a), Object.prototype);
  const inMap = roundTrip(new Map([["k", hostile]]));
  assert.ok(Object.hasOwn(inMap.get("k"), "__proto__"));
  assert.is(({} as Record<string, unknown>).polluted, undefined);
});

test("malformed input throws CorruptDataError with a clear message", () => {
  const bad: [string, Uint8Array, RegExp][] = [
    ["empty", bytes(), /it is empty/],
    ["unknown tag", bytes(0x1f), /unknown tag 0x1f/],
    ["trailing garbage", bytes(...enc.encode({ a: 1 }), 0), /1 unexpected bytes after the value/],
    ["two values", bytes(0x80, 0x80), /1 unexpected bytes after the value/],
    ["holes outside an array", bytes(T.holes, 1), /unknown tag 0x0c/],
    ["holes past the array end", bytes(T.array, 2, T.holes, 3), /a run of 3 holes does not fit in an array of length 2 at index 0/],
    ["zero holes", bytes(T.array, 1, T.holes, 0, 0x80), /a run of 0 holes/],
    ["raw form nested", bytes(T.array, 1, TAG_TOP_BYTES, 1), /unknown tag 0x20/],
    ["invalid UTF-8", bytes(0x41, 0xff), /not valid UTF-8/],
    ["overlong UTF-8", bytes(0x42, 0xc0, 0x80), /not valid UTF-8/],
    ["UTF-8 surrogate", bytes(0x43, 0xed, 0xa0, 0x80), /not valid UTF-8/],
    ["invalid long UTF-8", bytes(T.string32, 70, 0, 0, 0, ...new Array(69).fill(0x61), 0xff), /not valid UTF-8/],
    ["reference to a later object", bytes(T.array, 1, T.ref, 5), /a reference to object #5, but only 1 came before/],
    ["reference to the next object", bytes(T.array, 2, T.ref, 1, T.object, 0), /a reference to object #1, but only 1 came before/],
    ["attachment without resolver", enc.encode(new SharedArrayBuffer(1), new Shelf()), /a reference to shared object #0, but no resolver was given/],
    ["view outside its buffer", bytes(T.view, 1, T.arrayBuffer, 2, 0, 0, 1, 5), /a view \(offset 1, length 5\) does not fit its 2-byte buffer/],
    ["misaligned view", bytes(T.view, 5, T.arrayBuffer, 8, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1), /a view \(offset 1, length 1\) does not fit/],
    ["view of a non-buffer", bytes(T.view, 1, 0x80, 0, 0), /a view's buffer is not a buffer/],
    ["view of a referenced non-buffer", bytes(T.array, 2, T.object, 0, T.view, 1, T.ref, 0, 0, 0), /not an ArrayBuffer or SharedArrayBuffer/],
    ["unknown view kind", bytes(T.view, 12, T.arrayBuffer, 0, 0, 0), /unknown view kind 12/],
    ["invalid RegExp", bytes(T.regexp, 0x41, 0x28, 0x40), /invalid RegExp \/\(\//],
    ["invalid RegExp flags", bytes(T.regexp, 0x41, 0x78, 0x41, 0x51), /invalid RegExp \/x\/Q/],
    ["RegExp source not a string", bytes(T.regexp, 0x80, 0x40), /expected a string, found tag 0x80/],
    ["Error message not a string", bytes(T.error, 0, 2, 0x85), /an Error's message is not a string/],
    ["unknown Error kind", bytes(T.error, 9, 0), /unknown Error prototype 9/],
    ["unknown Error fields", bytes(T.error, 0, 0x20), /unknown Error fields 0x20/],
    ["object key not a string", bytes(T.object, 1, 0x81, 0x82), /expected a string, found tag 0x81/],
    ["varuint too long", bytes(T.array, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), /a length is 2\^32 or more/],
    ["truncated float", bytes(T.float64, 0, 0, 0), /it ends before a float64/],
    ["truncated bigint", bytes(0x06, 9, 1, 2), /it ends before 9 bytes/],
  ];
  for (const [what, input, message] of bad) {
    let thrown: unknown;
    try {
      decode(input);
    } catch (err) {
      thrown = err;
    }
    assert.ok(thrown instanceof CorruptDataError, `${what}: expected CorruptDataError, got ${inspect(thrown)}`);
    const err = thrown as CorruptDataError;
    assert.match(err.message, message, `${what}: ${err.message}`);
    assert.match(err.message, /^Cannot decode message: .+ \(at byte \d+ of \d+\)|^Cannot decode message: it is empty/, what);
    assert.is(err.cause, undefined, `${what}: caught by an explicit check`);
  }
  const selfRef = decode(bytes(T.array, 1, T.ref, 0)) as unknown[];
  assert.is(selfRef[0], selfRef, "an array holding itself is fine");
});

test("declared lengths larger than the input are rejected before allocating", () => {
  const huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
  const cases: [Uint8Array, RegExp][] = [
    [bytes(T.array, huge), /ends before a value/],
    [bytes(T.object, huge), /ends before 4294967295 properties/],
    [bytes(T.map, huge), /ends before 4294967295 Map entries/],
    [bytes(T.arrayBuffer, huge), /ends before 4294967295 bytes/],
    [bytes(T.string32, 0xff, 0xff, 0xff, 0x7f, 0x41), /ends before a string of 2147483647 bytes/],
    [bytes(0x0a, huge), /ends before a string of 4294967295 UTF-16 units/],
    [bytes(0x06, huge), /ends before 4294967295 bytes/],
  ];
  const started = performance.now();
  for (const [input, message] of cases) assert.throws(() => decode(input), CorruptDataError, message);
  assert.ok(performance.now() - started < 2000, "rejected at once, without allocating what the lengths declare");
  // Holes cost no memory: the longest possible array, all holes, is legitimate.
  const empty = decode(bytes(T.array, huge, T.holes, huge)) as unknown[];
  assert.is(empty.length, 2 ** 32 - 1);
  assert.is(Object.keys(empty).length, 0);
});

test("every strict prefix of a valid encoding is rejected", () => {
  const shelf = new Shelf();
  const values = [
    { a: 1, b: "two", c: [3, { d: new Map([[1, new Set([2])]]) }] }, [new Date(0), /x/g, 1.5, -7, 2n ** 80n],
    { e: new RangeError("r", { cause: 1 }) }, [new Float64Array([1, 2]), new DataView(new ArrayBuffer(4))],
    [, , 1], ["é🎉", "\uD800", "x".repeat(100)], [Object(1), Object("s"), Object(true), Object(3n)], { sab: new SharedArrayBuffer(4) },
  ];
  for (const value of values) {
    const full = enc.encode(value, shelf).slice();
    for (let n = 0; n < full.length; n++) assert.throws(() => decode(full.subarray(0, n), shelf), CorruptDataError, undefined);
    assert.not.throws(() => decode(full, shelf));
  }
});

test("far-apart element indices do not make decoding allocate per index", () => {
  // 10,000 arrays [i, <999 holes>, i] and 10,000 objects {999: i}, a few bytes each.
  // Stored densely each would take ~12 KiB of element storage.
  const N = 10_000;
  const parts: number[] = [T.object, 2, 0x46, ...Buffer.from("arrays"), T.array, 0x90, 0x4e];
  for (let i = 0; i < N; i++) parts.push(T.array, 0xe9, 0x07, 0x80 | (i & 0x7f), T.holes, 0xe7, 0x07, 0x80 | (i & 0x7f));
  parts.push(0x47, ...Buffer.from("objects"), T.array, 0x90, 0x4e);
  for (let i = 0; i < N; i++) parts.push(T.object, 1, 0x43, 0x39, 0x39, 0x39, 0x80 | (i & 0x7f));
  const message = Uint8Array.from(parts);
  const gc = exposeGc();
  gc();
  const before = process.memoryUsage().heapUsed;
  const back = decode(message) as { arrays: number[][]; objects: Record<number, number>[] };
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  assert.is(back.arrays.length, N);
  assert.is(back.arrays[N - 1]!.length, 1001);
  assert.is(back.arrays[N - 1]![1000], (N - 1) & 0x7f);
  assert.equal(Object.keys(back.arrays[5]!), ["0", "1000"]);
  assert.is(back.objects[N - 1]![999], (N - 1) & 0x7f);
  assert.ok(grown < 24 * 1024 * 1024, `decoding ${message.length} bytes grew the heap by ${(grown / 1048576).toFixed(1)} MiB`);
  assertSame(decode(enc.encode(back.arrays[7])), back.arrays[7], "and they encode back compactly");
});

/** The collector, for measuring what a decoded value really keeps alive. */
function exposeGc(): () => void {
  setFlagsFromString("--expose-gc");
  return runInNewContext("gc") as () => void;
}

// -- isCloneable --------------------------------------------------------------

test("isCloneable agrees with encode throwing, and never throws", () => {
  const throwingGetter = { get bad(): never { throw new Error("getter"); } };
  const values: unknown[] = [
    1, "s", null, undefined, 2n, Symbol("x"), () => 1, { a: [1, { b: () => 2 }] }, { a: [1, { b: 2 }] }, new Map([[1, Symbol()]]),
    new SharedArrayBuffer(4), { v: new Uint8Array(new SharedArrayBuffer(4)) }, new Proxy({}, {}), Promise.resolve(), new WeakMap(),
    new Date(), /x/, new Error("e"), [new Set([new WeakSet()])], throwingGetter,
  ];
  const shelf = new Shelf();
  for (const v of values) {
    let encodes = true;
    try {
      new Encoder().encode(v, shelf);
    } catch {
      encodes = false;
    }
    assert.is(isCloneable(v), encodes, `isCloneable(${inspect(v, { depth: 1 })})`);
  }
  class Handle {}
  assert.ok(isCloneable({ h: new Handle(), p: new Proxy({}, {}) }, (o) => o instanceof Handle || types.isProxy(o)));
  assert.not.ok(isCloneable({ p: new Proxy({}, {}) }, (o) => o instanceof Handle));
  assert.not.ok(isCloneable({ a: {} }, () => { throw new Error("attachable threw"); }));
  fc.assert(
    fc.property(fc.anything({ withMap: true, withSet: true, withBigInt: true, withDate: true, withTypedArray: true, withBoxedValues: true }), (v) => {
      return isCloneable(v) && isCloneable({ v, f: () => 0 }) === false;
    }),
    { numRuns: 200 },
  );
});

// -- property test ------------------------------------------------------------

test("property: decode(encode(x)) deep-equals x for generated values", () => {
  const seed = seedFromEnv();
  const unit = fc.oneof(
    { weight: 8, arbitrary: fc.string({ unit: "binary", minLength: 1, maxLength: 1 }) },
    { weight: 1, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
  );
  const value = fc.anything({
    maxDepth: 4, withMap: true, withSet: true, withBigInt: true, withDate: true, withTypedArray: true,
    withSparseArray: true, withBoxedValues: true, withNullPrototype: false, withObjectString: true, stringUnit: unit,
  });
  fc.assert(
    fc.property(value, fc.boolean(), (v, share) => {
      const input = share ? { v, again: v } : v;
      const back = roundTrip(input);
      if (!isDeepStrictEqual(back, input) && !isDeepStrictEqual(markInvalidDates(back), markInvalidDates(input))) {
        throw new Error(`seed ${seed}: ${inspect(input, { depth: 6 })} decoded as ${inspect(back, { depth: 6 })}`);
      }
      const pair = back as { v: unknown; again: unknown };
      if (share && typeof v === "object" && v !== null && pair.v !== pair.again) throw new Error(`seed ${seed}: identity lost`);
    }),
    { seed, numRuns: 1500 },
  );
});

/**
 * A copy of `v` with invalid Dates replaced by a marker: Node 20's
 * isDeepStrictEqual finds two invalid Dates unequal (NaN !== NaN).
 * Containers keep their holes and prototypes; other values are returned as they are.
 */
function markInvalidDates(v: unknown): unknown {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? "<invalid date>" : v;
  if (Array.isArray(v)) {
    const copy = new Array(v.length);
    for (const key of Object.keys(v)) copy[Number(key)] = markInvalidDates(v[Number(key)]);
    return copy;
  }
  if (v instanceof Map) return new Map([...v].map(([k, x]) => [markInvalidDates(k), markInvalidDates(x)]));
  if (v instanceof Set) return new Set([...v].map(markInvalidDates));
  if (typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype) {
    const copy: Record<string, unknown> = {};
    for (const key of Object.keys(v)) Object.defineProperty(copy, key, { value: markInvalidDates((v as Record<string, unknown>)[key]), enumerable: true, writable: true, configurable: true });
    return copy;
  }
  return v;
}

// -- fuzz ---------------------------------------------------------------------

test("fuzz: random and mutated bytes decode to a value or throw CorruptDataError, nothing else", () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  const int = (n: number): number => Math.floor(random() * n);
  const shelf = new Shelf((v) => v instanceof SharedArrayBuffer || v instanceof Uint16Array);
  const sab = new SharedArrayBuffer(32);
  const resolver: Resolver = { resolve: (i) => (i === 0 ? sab : i === 1 ? { attached: true } : undefined) };
  const reencoder = new Encoder();
  const reattach: Attacher = { attach: (v) => (v instanceof SharedArrayBuffer || (v as { attached?: boolean }).attached ? 0 : undefined) };
  const looped: Record<string, unknown> = { k: "v" };
  looped.self = looped;
  const corpusValues: unknown[] = [
    0, 1000, -1.5, "text", "é🎉\uD800", 2n ** 70n, -5n, null, undefined, true,
    { id: 1, name: "abc", values: [1, 2, 3, 4] }, [1, , 3, , , , 7], looped, new Map<unknown, unknown>([[1, "a"], [{ o: 1 }, [2]]]),
    new Set([1, "x", [2]]), new Date(5), /re+/gi, [Object(1), Object("s"), Object(false), Object(2n)],
    { e: new TypeError("t", { cause: new Error("c") }) }, { buf: new ArrayBuffer(8), u: new Uint32Array([1, 2]), dv: new DataView(new ArrayBuffer(6), 2) },
    { shared: new Int32Array(new SharedArrayBuffer(16), 4, 2), claimed: new Uint16Array(2) }, new Uint8Array([1, 2, 3]), new ArrayBuffer(3),
    { "__proto__x": 1, 999: 2, 5: 3 }, ["x".repeat(70), "ü".repeat(40)],
  ];
  const corpus = corpusValues.map((v) => enc.encode(v, shelf).slice());
  const CASES = 30_000;
  const cpuAtStart = process.cpuUsage();
  let decoded = 0;
  for (let n = 0; n < CASES; n++) {
    const input = fuzzInput(n, corpus, int);
    const t0 = performance.now();
    let result: unknown;
    let ok = false;
    try {
      result = decode(input, resolver);
      ok = true;
    } catch (err) {
      const cause = (err as Error).cause;
      if (!(err instanceof CorruptDataError) || cause !== undefined) {
        throw new Error(`fuzz seed ${seed} case ${n}: decode(${hex(input)}) threw ${inspect(err)}${cause ? ` (cause ${inspect(cause)})` : ""}`);
      }
    }
    if (performance.now() - t0 > 5000) throw new Error(`fuzz seed ${seed} case ${n}: decode(${hex(input)}) took over 5 seconds`);
    if (ok) {
      decoded++;
      try {
        reencoder.encode(result, reattach);
      } catch (err) {
        throw new Error(`fuzz seed ${seed} case ${n}: decode(${hex(input)}) gave ${inspect(result)} which does not re-encode: ${inspect(err)}`);
      }
    }
  }
  const cpu = process.cpuUsage(cpuAtStart);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  assert.ok(cpuMs < 10_000, `fuzz seed ${seed}: ${CASES} cases took ${cpuMs.toFixed(0)} ms of CPU time`);
  assert.ok(decoded > 100 && decoded < CASES, `fuzz seed ${seed}: a mix of accepted (${decoded}) and rejected inputs`);
});

/** One fuzz input: random bytes, or a valid encoding with bytes flipped, inserted, deleted, overwritten or cut. */
function fuzzInput(n: number, corpus: Uint8Array[], int: (n: number) => number): Uint8Array {
  if (n % 5 === 0) {
    const len = int(48);
    const out = new Uint8Array(len);
    for (let i = 0; i < len; i++) out[i] = i === 0 && int(2) ? int(0x23) : int(256);
    return out;
  }
  let b = Array.from(corpus[int(corpus.length)]!);
  const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x0b, 0x0c, 0x1a, 0x1b, 0x20, 0x40];
  const mutations = 1 + int(4);
  for (let m = 0; m < mutations; m++) {
    const at = int(b.length + 1);
    switch (int(6)) {
      case 0: if (b.length) b[at % b.length]! ^= 1 << int(8); break;
      case 1: b.splice(at, 0, int(256)); break;
      case 2: b.splice(at, 1 + int(3)); break;
      case 3: b = b.slice(0, at); break;
      case 4: if (b.length) b[at % b.length] = INTERESTING[int(INTERESTING.length)]!; break;
      default: b.splice(at, 0, ...corpus[int(corpus.length)]!.subarray(0, 1 + int(8))); break;
    }
  }
  return Uint8Array.from(b);
}

function hex(b: Uint8Array): string {
  return `[${Array.from(b.subarray(0, 200), (x) => x.toString(16).padStart(2, "0")).join(" ")}${b.length > 200 ? " ..." : ""}] (${b.length} bytes)`;
}

test.run();
