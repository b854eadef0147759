/**
 * The codec where it used to differ from structured clone for the worse
 * (issue 18, point 2), each written as the probe that found it: a
 * resizable buffer resized by a getter during encoding, a detached buffer,
 * a Proxy (whose traps must not run), a getter that deletes a later key,
 * and a top-level Uint8Array that is a view into a larger buffer. Every
 * refusal must come at the sender, as NotShareableError naming the path,
 * with the channel unchanged; isShareable must say the same as send.
 */
import { readFileSync } from "node:fs";
import { suite, assert } from "./_harness.js";
import { CorruptDataError, createChannel, isShareable, NotShareableError, type RecvChannel, type SendChannel } from "../src/index.js";
import { decode, Encoder } from "../src/serialization.js";

const test = suite("hardening-codec");

/**
 * Sends what `make()` builds (a fresh value each time: getters may change
 * it) through every send flavour and expects each to refuse it with
 * NotShareableError whose path is `path`, leaving the channel unchanged;
 * isShareable must say false. Then a plain message still goes through.
 */
async function refusedEverywhere(make: () => unknown, path: string, what: RegExp): Promise<void> {
  const [rx, tx] = createChannel<unknown>({ capacity: 4, name: "probe" });
  assert.is(isShareable(make()), false, "isShareable agrees with send");
  const sendErr = await tx.send(make()).then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(sendErr instanceof NotShareableError, `send: ${String(sendErr)}`);
  assert.is((sendErr as NotShareableError).path, path);
  assert.match((sendErr as Error).message, what);
  assert.throws(() => tx.trySend(make()), NotShareableError, what);
  assert.throws(() => tx.sendSync(make(), { timeout: 5000 }), NotShareableError, what);
  const manyErr = await tx.sendMany([1, make()]).then(
    () => undefined,
    (err: unknown) => err,
  );
  assert.ok(manyErr instanceof NotShareableError, `sendMany: ${String(manyErr)}`);
  // sendMany encodes a batch before sending any of it: what came before the refused value went in only if reported.
  for (let i = 0; i < (manyErr as { sent: number }).sent; i++) assert.is(rx.recvSync({ timeout: 5000 }), 1);
  await channelUnchanged(rx, tx);
}

/** Nothing of a refused send is in the channel: its counters are as before and the next message is the first out. */
async function channelUnchanged(rx: RecvChannel<unknown>, tx: SendChannel<unknown>): Promise<void> {
  const stats = rx.stats();
  assert.is(stats.length, 0, "nothing buffered");
  assert.is(stats.sent, stats.received, "every counted send was received");
  await tx.send("after");
  assert.is(await rx.recv({ timeout: 5000 }), "after");
  assert.equal(rx.tryRecv(), { ok: false, closed: false });
}

// ---- a resizable ArrayBuffer resized by a getter during encoding ----

test("a resizable buffer grown by a getter after it was written, then a length-tracking view of it: refused at the sender", async () => {
  await refusedEverywhere(
    () => {
      const buffer = new ArrayBuffer(8, { maxByteLength: 64 });
      const view = new Uint8Array(buffer); // tracks the buffer's length
      return { buffer, get grow() { buffer.resize(16); return 0; }, view };
    },
    "value.view",
    /resized while the message was being encoded/,
  );
});

test("a view written first, the buffer grown by a getter, then a second view: refused at the sender", async () => {
  await refusedEverywhere(
    () => {
      const buffer = new ArrayBuffer(8, { maxByteLength: 64 });
      return { first: new Uint8Array(buffer), get grow() { buffer.resize(32); return 0; }, second: new Uint32Array(buffer, 4) };
    },
    "value.second",
    /resized while the message was being encoded/,
  );
});

test("a fixed-length view left out of bounds by a getter that shrank its buffer: refused (structured clone refuses it too)", async () => {
  await refusedEverywhere(
    () => {
      const buffer = new ArrayBuffer(16, { maxByteLength: 64 });
      return { buffer, get shrink() { buffer.resize(4); return 0; }, view: new Uint8Array(buffer, 8, 8) };
    },
    "value.view",
    /out of bounds/,
  );
  await refusedEverywhere(
    () => {
      const buffer = new ArrayBuffer(16, { maxByteLength: 64 });
      return { buffer, get shrink() { buffer.resize(4); return 0; }, view: new DataView(buffer, 8) };
    },
    "value.view",
    /out of bounds/,
  );
});

test("resizable buffers that are not resized mid-message still cross, each view as it is now", async () => {
  const [rx, tx] = createChannel<{ buffer: ArrayBuffer; view: Uint8Array; tail: Uint16Array }>({ capacity: 1 });
  const buffer = new ArrayBuffer(8, { maxByteLength: 64 });
  new Uint8Array(buffer).set([1, 2, 3, 4, 5, 6, 7, 8]);
  const message = { buffer, view: new Uint8Array(buffer), tail: new Uint16Array(buffer, 4) };
  await tx.send(message);
  const got = await rx.recv({ timeout: 5000 });
  assert.is(got.buffer.byteLength, 8);
  assert.is(got.view.buffer, got.buffer);
  assert.equal([...got.view], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.is(got.tail.byteOffset, 4);
  assert.is(got.tail.length, 2);
});

// ---- a detached ArrayBuffer ----

function detached(bytes = 8): ArrayBuffer {
  const buffer = new ArrayBuffer(bytes);
  structuredClone(buffer, { transfer: [buffer] });
  return buffer;
}

/** A view made over a buffer that is then detached (a view cannot be made over a detached one). */
function overDetached<V extends ArrayBufferView>(make: (buffer: ArrayBuffer) => V): V {
  const buffer = new ArrayBuffer(16);
  const view = make(buffer);
  structuredClone(buffer, { transfer: [buffer] });
  return view;
}

test("a detached ArrayBuffer at top level: isShareable and send agree, NotShareableError naming the path", async () => {
  await refusedEverywhere(() => detached(), "value", /detached/);
});

test("a detached ArrayBuffer inside a value, and views over one, are refused as structured clone refuses them", async () => {
  await refusedEverywhere(() => ({ inside: [detached()] }), "value.inside[0]", /detached/);
  await refusedEverywhere(() => overDetached((b) => new Uint8Array(b)), "value", /detached/); // the raw fast path
  await refusedEverywhere(() => ({ view: overDetached((b) => new Float64Array(b, 8, 1)) }), "value.view", /detached/);
  await refusedEverywhere(() => overDetached((b) => new DataView(b)), "value", /detached/);
  const empty = new ArrayBuffer(0); // empty, not detached: crosses
  assert.ok(isShareable(empty) && isShareable({ empty }));
});

// ---- a Proxy ----

/** A Proxy every trap of which counts and throws: `runs()` says how many traps ran. */
function hostileProxy(target: object): { proxy: object; runs: () => number } {
  let runs = 0;
  const handler = new Proxy(
    {},
    {
      get(_, trap) {
        return () => {
          runs++;
          throw new Error(`the ${String(trap)} trap ran`);
        };
      },
    },
  );
  return { proxy: new Proxy(target, handler), runs: () => runs };
}

test("a top-level Proxy is refused without running any of its traps, and a throwing trap cannot replace NotShareableError", async () => {
  for (const target of [{ a: 1 }, new Uint8Array(8), new ArrayBuffer(8), [1, 2]]) {
    const made: Array<() => number> = [];
    const make = (): object => {
      const { proxy, runs } = hostileProxy(target);
      made.push(runs);
      return proxy;
    };
    await refusedEverywhere(make, "value", /Proxy/);
    assert.equal(made.map((runs) => runs()), made.map(() => 0), `no trap ran (${Object.prototype.toString.call(target)})`);
  }
});

test("a Proxy inside a value is refused without running its traps", async () => {
  const { proxy, runs } = hostileProxy({ a: 1 });
  await refusedEverywhere(() => ({ list: [1, proxy] }), "value.list[1]", /Proxy/);
  assert.is(runs(), 0);
});

test("a top-level Uint8Array's own properties are never looked up on the raw path (no user code in the ring's critical section)", async () => {
  let ran = 0;
  const booby = (bytes: Uint8Array): Uint8Array => {
    for (const name of ["length", "byteOffset", "buffer", "subarray", "slice", "constructor", "set"]) {
      Object.defineProperty(bytes, name, { get: () => { ran++; throw new Error(`own ${name} was read`); } });
    }
    return bytes;
  };
  // Small: one record; unaligned and over 1 KiB: copied to aligned memory first; larger than the ring: streamed in pieces.
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 4, bufferBytes: 4096, maxBufferBytes: 4096 });
  for (const size of [100, 3000, 20_000]) {
    const backing = new Uint8Array(size + 3).map((_, i) => i & 255);
    const bytes = booby(new Uint8Array(backing.buffer, 3, size));
    const receiving = rx.recv({ timeout: 10_000 });
    await tx.send(bytes, { timeout: 10_000 });
    const got = await receiving;
    assert.is(got.length, size);
    assert.ok(got.every((b, i) => b === ((i + 3) & 255)), `${size} bytes arrive intact`);
  }
  class Species extends Uint8Array {
    static override get [Symbol.species](): never {
      ran++;
      throw new Error("species was looked up");
    }
  }
  await tx.send(new Species([1, 2, 3]));
  assert.equal([...(await rx.recv({ timeout: 5000 }))], [1, 2, 3]);
  assert.is(ran, 0, "no own property or species of the sender's array was read");
});

test("absent properties in the wire format: one entry each, nothing set", () => {
  const encoder = new Encoder();
  const object = encoder.encode({})[0]!;
  const holes = encoder.encode([, 1])[2]!;
  const k = [...encoder.encode({ k: 1 }).subarray(2)]; // key "k", then the value 1
  assert.equal(decode(Uint8Array.from([object, 2, holes, 1, ...k])), { k: 1 });
  assert.equal(decode(Uint8Array.from([object, 2, ...k, holes, 1])), { k: 1 });
  for (const bad of [[object, 1, holes, 0], [object, 2, holes, 2, 0, 0], [object, 1, ...k.slice(0, -1), holes, 1]]) {
    assert.throws(() => decode(Uint8Array.from(bad)), CorruptDataError);
  }
  assert.throws(() => decode(Uint8Array.from([object, 2, holes, 2, 0, 0])), CorruptDataError, /absent properties/);
});

// ---- a getter that deletes a later key ----

test("a getter that deletes a later key: the key is left out, as structured clone leaves it out", async () => {
  const [rx, tx] = createChannel<Record<string, unknown>>({ capacity: 1 });
  const make = (): Record<string, unknown> => ({
    get first() {
      delete (this as Record<string, unknown>).second;
      return 1;
    },
    second: 2,
    third: 3,
  });
  assert.equal(Object.keys(structuredClone(make())), ["first", "third"], "what structured clone does");
  await tx.send(make());
  const got = await rx.recv({ timeout: 5000 });
  assert.equal(Object.keys(got), ["first", "third"]);
  assert.not.ok("second" in got);
  const encoder = new Encoder();
  assert.equal(Object.keys(decode(encoder.encode(make())) as object), ["first", "third"], "the codec alone");
});

test("a deleted key is left out even where the prototype has a property of that name", async () => {
  const [rx, tx] = createChannel<Record<string, unknown>>({ capacity: 2 });
  class Shadowed {
    declare later: unknown;
    get earlier(): number {
      return 0;
    }
  }
  Object.defineProperty(Shadowed.prototype, "later", { value: "from the prototype", enumerable: true });
  const instance = new Shadowed();
  Object.defineProperty(instance, "earlier", { enumerable: true, get: () => delete (instance as { later?: unknown }).later });
  Object.defineProperty(instance, "later", { value: "own", enumerable: true, configurable: true, writable: true });
  await tx.send(instance);
  assert.equal(await rx.recv({ timeout: 5000 }), { earlier: true });
  // A plain object whose deleted key names an Object.prototype method: left out, not a function to refuse.
  const plain = { get earlier() { delete (plain as { toString?: unknown }).toString; return 0; }, toString: "own" };
  await tx.send(plain);
  assert.equal(await rx.recv({ timeout: 5000 }), { earlier: 0 });
});

// ---- a top-level Uint8Array that is a view into a larger buffer ----

test("a top-level Uint8Array view into a larger buffer arrives as its own bytes over a buffer of their length (documented); inside a value the whole buffer crosses, as with structured clone", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 2 });
  const whole = new Uint8Array(64).map((_, i) => i);
  const view = whole.subarray(8, 12);
  await tx.send(view);
  const top = (await rx.recv({ timeout: 5000 })) as Uint8Array;
  assert.equal([...top], [8, 9, 10, 11]);
  assert.is(top.byteOffset, 0);
  assert.is(top.buffer.byteLength, 4);
  await tx.send([view]);
  const [inside] = (await rx.recv({ timeout: 5000 })) as [Uint8Array];
  assert.equal([...inside], [8, 9, 10, 11]);
  assert.is(inside.byteOffset, 8);
  assert.is(inside.buffer.byteLength, 64);
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  assert.match(readme, /a top-level `Uint8Array` arrives as a copy of its own bytes/, "the README lists this difference from structured clone");
});

test.run();
