/**
 * Integrity as an option (issue 18, point 4): `createChannel({ checksum:
 * true })` gives every message a CRC-32, computed by its sender and checked
 * by its receiver, so a message changed in shared memory in between fails
 * with CorruptDataError instead of arriving changed. The CRC itself
 * (src/crc32.ts) against the standard check values and Node's zlib.crc32;
 * the tampering probe, written as the attack from another thread;
 * messages of every size (one record, streams) through wrapping rings.
 */
import * as zlib from "node:zlib";
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { create, createChannel, CorruptDataError, type RecvChannel, type SendChannel } from "../src/index.js";
import { crc32, crc32InJs, crc32Word, hasNativeCrc32, NATIVE_MIN_BYTES } from "../src/crc32.js";
import { H, HEADER_BYTES, R_CHECKSUM, R_PAD, R_RAW_BUFFER, R_RAW_BYTES } from "../src/ring.js";
import { endOf } from "../src/transfer.js";

const test = suite("hardening-checksum");

function memoryOf(handle: object) {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  return end.memory;
}

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);

// ---- the CRC ----

/** CRC-32/ISO-HDLC check values (the CRC catalogue; zlib, gzip, PNG). */
const VECTORS: Array<[string, Uint8Array, number]> = [
  ["empty", new Uint8Array(0), 0x00000000],
  ['"a"', ascii("a"), 0xe8b7be43],
  ['"abc"', ascii("abc"), 0x352441c2],
  ['"123456789" (the check value)', ascii("123456789"), 0xcbf43926],
  ["the quick brown fox", ascii("The quick brown fox jumps over the lazy dog"), 0x414fa339],
  ["32 zero bytes", new Uint8Array(32), 0x190a55ad],
  ["32 bytes of 0xff", new Uint8Array(32).fill(0xff), 0xff6cab0b],
  ["bytes 0 to 31", Uint8Array.from({ length: 32 }, (_, i) => i), 0x91267e8a],
];

test("CRC-32 of the standard test vectors, in JavaScript and as used", () => {
  for (const [what, bytes, expected] of VECTORS) {
    assert.is(crc32InJs(bytes, 0, bytes.length), expected, `${what} (JavaScript)`);
    assert.is(crc32(bytes, 0, bytes.length), expected, `${what} (as used)`);
  }
  const long = new Uint8Array(4096).fill(0x61); // past NATIVE_MIN_BYTES: zlib's path where Node has it
  assert.is(crc32(long, 0, long.length), crc32InJs(long, 0, long.length));
});

test("CRC-32: the JavaScript loop agrees with zlib.crc32 at every length and offset, and continues a CRC", () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  const data = Uint8Array.from({ length: 1 << 20 }, () => (random() * 256) | 0);
  const nativeCrc = (zlib as unknown as { crc32?: (b: Uint8Array, v?: number) => number }).crc32;
  for (let length = 0; length <= 600; length++) {
    const from = (random() * 64) | 0;
    const js = crc32InJs(data, from, from + length);
    assert.is(crc32(data, from, from + length), js, `length ${length} at ${from} (seed ${seed})`);
    if (nativeCrc) assert.is(nativeCrc(data.subarray(from, from + length)), js, `zlib, length ${length} at ${from} (seed ${seed})`);
    const cut = (random() * (length + 1)) | 0;
    assert.is(crc32(data, from + cut, from + length, crc32(data, from, from + cut)), js, `continued at ${cut} (seed ${seed})`);
  }
  assert.is(crc32(data, 0, data.length), crc32InJs(data, 0, data.length), "1 MiB");
  const word = 0x8c7a0512;
  assert.is(crc32Word(word, 0x1234), crc32InJs(Uint8Array.of(0x12, 0x05, 0x7a, 0x8c), 0, 4, 0x1234), "a word is its 4 bytes, little-endian");
  assert.ok(NATIVE_MIN_BYTES > 0 && typeof hasNativeCrc32 === "boolean");
});

// ---- the tampering probe ----

/**
 * Changes a buffered `{ to: "alice", amount: 100 }` into `{ to: "mallo",
 * amount: 127 }` from another thread holding the channel's memory (as the
 * issue's probe did): the name's bytes, and the byte after "amount" (the
 * codec's small integer 100, 0xe4, becomes 127, 0xff).
 */
async function tamperFromAnotherThread(memoryBuffer: SharedArrayBuffer): Promise<void> {
  const tamperer = await create({ name: "tamperer" });
  try {
    await tamperer.exec(
      `const data = new Uint8Array(memory, ${HEADER_BYTES});
       const find = (text) => {
         const bytes = [...text].map((c) => c.charCodeAt(0));
         for (let i = 0; i + bytes.length <= data.length; i++) if (bytes.every((b, k) => data[i + k] === b)) return i;
         throw new Error("not found: " + text);
       };
       data.set([..."mallo"].map((c) => c.charCodeAt(0)), find("alice"));
       const amount = find("amount") + 6;
       if (data[amount] !== (0x80 | 100)) throw new Error("amount byte " + data[amount]);
       data[amount] = 0x80 | 127;`,
      { bind: { memory: memoryBuffer } },
    );
  } finally {
    await tamperer.terminate();
  }
}

test("the issue's probe without the option: a payment changed in the ring by another thread arrives changed (the default stays fast)", async () => {
  const [rx, tx] = createChannel<{ to: string; amount: number }>({ capacity: 4 });
  await tx.send({ to: "alice", amount: 100 });
  await tamperFromAnotherThread(memoryOf(rx).buffer);
  assert.equal(await rx.recv({ timeout: 5000 }), { to: "mallo", amount: 127 });
});

test("the issue's probe with checksum: true: the changed payment fails with CorruptDataError, and the channel goes on", async () => {
  const [rx, tx] = createChannel<{ to: string; amount: number }>({ capacity: 4, checksum: true });
  await tx.send({ to: "alice", amount: 100 });
  await tx.send({ to: "bob", amount: 5 });
  await tamperFromAnotherThread(memoryOf(rx).buffer);
  await assert.rejects(() => rx.recv({ timeout: 5000 }), CorruptDataError, /message 0 fails its checksum \(CRC-32 0x[0-9a-f]{8} where its sender wrote 0x[0-9a-f]{8}\)/);
  assert.equal(await rx.recv({ timeout: 5000 }), { to: "bob", amount: 5 }, "the next message");
  const stats = rx.stats();
  assert.is(stats.length, 0);
  assert.is(stats.sent, stats.received + stats.dropped, "the failed message counts as taken");
});

// ---- every size, every path ----

/** A value of about `size` encoded bytes of each kind the channel carries differently. */
function valuesOf(size: number, tag: number): unknown[] {
  const bytes = Uint8Array.from({ length: size }, (_, i) => (i * 31 + tag) & 255);
  return [
    bytes, // raw bytes
    bytes.slice().buffer, // raw buffer
    { tag, text: "é".repeat(size >> 1), list: [size, -size, size / 3] }, // the codec
  ];
}

async function roundTrip<T>(rx: RecvChannel<T>, tx: SendChannel<T>, value: T): Promise<T> {
  const receiving = rx.recv({ timeout: 10_000 });
  await tx.send(value, { timeout: 10_000 });
  return receiving;
}

test("messages of every size, one record or streamed, through wrapping rings arrive intact with checksum: true", async () => {
  for (const ring of [1024, 4096]) {
    const [rx, tx] = createChannel<unknown>({ capacity: 2, bufferBytes: ring, maxBufferBytes: ring, checksum: true, name: `ring-${ring}` });
    const sizes = [...Array.from({ length: 300 }, (_, i) => i), ...Array.from({ length: 40 }, (_, i) => ring - 40 + i * 2), 3 * ring + 5, 50_000];
    for (const size of sizes) {
      for (const value of valuesOf(size, size & 0xff)) {
        const got = await roundTrip(rx, tx, value);
        assert.equal(got, value, `${size} bytes as ${Object.prototype.toString.call(value)} through a ${ring}-byte ring`);
      }
    }
    // Two at a time (capacity 2): records wrap around the ring's end behind one another.
    for (let size = 0; size < ring / 4 - 32; size += 3) {
      const first = { size, pad: "p".repeat(size) };
      assert.ok(tx.trySend(first));
      assert.ok(tx.trySend(new Uint8Array(size).fill(size & 0xff)));
      assert.equal(rx.tryRecv(), { ok: true, value: first });
      assert.equal(rx.tryRecv(), { ok: true, value: new Uint8Array(size).fill(size & 0xff) });
    }
    const stats = rx.stats();
    assert.is(stats.length, 0);
    assert.is(stats.sent, stats.received);
  }
});

test("checksummed messages between threads: an interpreter streams and sends every kind, the main thread checks them", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 4, bufferBytes: 2048, maxBufferBytes: 2048, checksum: true });
  const sender = await create({ name: "checksummed sender" });
  try {
    const sizes = [0, 1, 7, 8, 100, 2000, 2048, 5000, 100_000];
    const running = sender.exec(
      `for (const size of sizes) {
         const bytes = Uint8Array.from({ length: size }, (_, i) => (i * 31 + size) & 255);
         tx.sendSync(bytes, { timeout: 30000 });
         tx.sendSync({ size, text: "x".repeat(size) }, { timeout: 30000 });
       }
       tx.close();`,
      { bind: { tx, sizes } },
    );
    for (const size of sizes) {
      const bytes = (await rx.recv({ timeout: 30_000 })) as Uint8Array;
      assert.equal(bytes, Uint8Array.from({ length: size }, (_, i) => (i * 31 + size) & 255), `${size} raw bytes`);
      assert.equal(await rx.recv({ timeout: 30_000 }), { size, text: "x".repeat(size) });
    }
    await running;
  } finally {
    await sender.terminate();
  }
});

test("channel ends inside checksummed messages move as usual", async () => {
  const [rx, tx] = createChannel<{ reply: SendChannel<string> }>({ capacity: 1, checksum: true });
  const [replyRx, replyTx] = createChannel<string>({ capacity: 1, checksum: true });
  await tx.send({ reply: replyTx });
  const { reply } = await rx.recv({ timeout: 5000 });
  await reply.send("through the moved end");
  assert.is(await replyRx.recv({ timeout: 5000 }), "through the moved end");
});

// ---- tampering, case by case ----

/** Offset in the data area of the first buffered record's payload, its length, and the index of its flags word. */
function firstPayload(rx: RecvChannel<unknown>): { at: number; length: number; flagsWord: number } {
  const memory = memoryOf(rx);
  let head = memory.get(H.HEAD);
  // A sender that wrapped left padding (a PAD record, or under 16 bytes) at the end: the record is at 0.
  if (memory.get(H.DATA_SIZE) - head < 16 || memory.dataWords[(head >>> 2) + 1]! & R_PAD) head = 0;
  return { at: head + 16, length: memory.dataWords[head >>> 2]!, flagsWord: (head >>> 2) + 1 };
}

test("any single changed bit of a one-record message, its stored CRC or its decoding flags fails the receive; the channel goes on", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 4, checksum: true });
  const memory = memoryOf(rx);
  for (const value of [new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]), { to: "alice", amount: 100 }]) {
    await tx.send(value);
    const { length } = firstPayload(rx); // the message and its CRC
    assert.equal(rx.tryRecv(), { ok: true, value });
    for (let bit = 0; bit < length * 8; bit++) {
      await tx.send(value);
      const { at } = firstPayload(rx);
      memory.data[at + (bit >>> 3)]! ^= 1 << (bit & 7);
      assert.throws(() => rx.tryRecv(), CorruptDataError, /fails its checksum/, `bit ${bit} of ${length * 8}`);
    }
    await tx.send(value);
    assert.equal(rx.tryRecv(), { ok: true, value }, "an untouched one after them");
  }
  // Flags that change the decoding: raw bytes read as a raw ArrayBuffer, or the checksum flag dropped.
  for (const change of [(f: number) => (f & ~R_RAW_BYTES) | R_RAW_BUFFER, (f: number) => f & ~R_CHECKSUM]) {
    await tx.send(new Uint8Array([1, 2, 3]));
    const { flagsWord } = firstPayload(rx);
    memory.dataWords[flagsWord] = change(memory.dataWords[flagsWord]!);
    assert.throws(() => rx.tryRecv(), CorruptDataError, /fails its checksum/);
  }
  await tx.send("after");
  assert.equal(rx.tryRecv(), { ok: true, value: "after" });
});

test("a streamed message changed in the ring while it streams fails at its end; what was sent before and after arrives", async () => {
  const [rx, tx] = createChannel<Uint8Array | string>({ capacity: 4, bufferBytes: 4096, maxBufferBytes: 4096, checksum: true });
  const memory = memoryOf(rx);
  const big = new Uint8Array(20_000).map((_, i) => i & 255);
  await tx.send("before");
  const sending = tx.send(big, { timeout: 10_000 }); // its first pieces fill the ring, then it waits for room
  assert.equal(rx.tryRecv(), { ok: true, value: "before" });
  const { at } = firstPayload(rx as RecvChannel<unknown>);
  memory.data[at + 100]! ^= 0x10;
  await assert.rejects(() => rx.recv({ timeout: 10_000 }), CorruptDataError, /fails its checksum/);
  await sending;
  await tx.send("after");
  assert.is(await rx.recv({ timeout: 5000 }), "after");
});

test("recvMany returns the messages before one that fails its checksum; the next receive reports it, then the channel goes on", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 8, checksum: true });
  for (let i = 0; i < 5; i++) await tx.send(1000 + i);
  // The third message: find its payload by walking two records from the head.
  const memory = memoryOf(rx);
  let offset = memory.get(H.HEAD); // a fresh channel: the five records lie one after another from 0
  for (let i = 0; i < 2; i++) offset += 16 + ((memory.dataWords[offset >>> 2]! + 7) & ~7);
  memory.data[offset + 16 + 1]! ^= 0xff;
  assert.equal(await rx.recvMany(8, { timeout: 5000 }), [1000, 1001]);
  assert.throws(() => rx.recvManySync(8, { timeout: 5000 }), CorruptDataError, /message 2 fails its checksum/);
  assert.equal(rx.recvManySync(8, { timeout: 5000 }), [1003, 1004]);
});

test("checksum must be a boolean; a channel without it carries no CRC and no checksum flag", async () => {
  assert.throws(() => createChannel({ checksum: "yes" as unknown as boolean }), TypeError, /checksum must be a boolean/);
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 1 });
  await tx.send(new Uint8Array(5));
  const { length, flagsWord } = firstPayload(rx as RecvChannel<unknown>);
  assert.is(length, 5, "no CRC in the payload");
  assert.is(memoryOf(rx).dataWords[flagsWord]! & R_CHECKSUM, 0);
  const [crx, ctx] = createChannel<Uint8Array>({ capacity: 1, checksum: true });
  await ctx.send(new Uint8Array(5));
  assert.is(firstPayload(crx as RecvChannel<unknown>).length, 9, "the CRC's 4 bytes follow the message");
  void rx.tryRecv();
});

test.run();
