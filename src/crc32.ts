/**
 * CRC-32 (the ISO-HDLC / IEEE 802.3 CRC that zlib, gzip, PNG and Ethernet
 * use: reflected polynomial 0xEDB88320, initial value and final xor
 * 0xFFFFFFFF; check value 0xCBF43926 for "123456789"): the per-message
 * checksum of channels created with `{ checksum: true }` (channel-ops.ts).
 *
 * Why this CRC and not CRC-32C: Node has a native one for it. `zlib.crc32`
 * (Node 20.15+ and 22.2+; this package supports 20.6+) hashes 1 MiB at
 * 0.19 ns a byte, against 0.82 for the JavaScript loop below, but a call
 * costs ~130 ns, which a short message does not repay (64 bytes: 2.0 ns a
 * byte native, 0.72 in JavaScript; they cross near 256). So: the loop in
 * JavaScript under NATIVE_MIN_BYTES, and wherever `zlib.crc32` is missing;
 * the native one from there. Both compute the same function (tested against
 * each other and the standard check values), and both sides of a channel
 * run in one process, so they always agree. (CPU time, `npm run
 * bench:checksum`, on this shared 2-core machine.)
 *
 * The JavaScript loop is slice-by-8 (eight 256-entry tables, one step per
 * 8 bytes): 2.8x the byte-at-a-time loop (0.82 vs 2.4 ns a byte), so it
 * pays; under 16 bytes it goes byte by byte. Reading the input as 32-bit
 * words instead of bytes would save another ~20 ns per 64 bytes (measured),
 * not worth a second entry point for aligned buffers.
 */
import * as zlib from "node:zlib";

const POLYNOMIAL = 0xedb88320;
/** Inputs at least this long go to zlib.crc32 when Node has it (below, the call costs more than it saves). */
export const NATIVE_MIN_BYTES = 256;
const SLICE_MIN_BYTES = 16;

/** T[k * 256 + b]: the CRC of byte b followed by k zero bytes (table k of slice-by-8). */
const T = new Int32Array(8 * 256);
for (let b = 0; b < 256; b++) {
  let c = b;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLYNOMIAL : c >>> 1;
  T[b] = c;
}
for (let b = 0; b < 256; b++) {
  for (let k = 1; k < 8; k++) {
    const previous = T[(k - 1) * 256 + b]!;
    T[k * 256 + b] = (previous >>> 8) ^ T[previous & 0xff]!;
  }
}

// The sender's own array may be hashed (a raw message): read it through the
// built-in getters, never its own properties or methods (no user code runs).
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype) as object;
const builtInGetter = (key: string): ((this: unknown) => any) => Object.getOwnPropertyDescriptor(TypedArrayPrototype, key)!.get!;
const lengthOf = builtInGetter("length") as (this: unknown) => number;
const bufferOf = builtInGetter("buffer") as (this: unknown) => ArrayBufferLike;
const byteOffsetOf = builtInGetter("byteOffset") as (this: unknown) => number;

type NativeCrc32 = (data: Uint8Array, value?: number) => number;
const native: NativeCrc32 | undefined = typeof (zlib as { crc32?: unknown }).crc32 === "function" ? (zlib as unknown as { crc32: NativeCrc32 }).crc32 : undefined;

/**
 * The CRC-32 of bytes [from, to) of `bytes`, continuing from `crc` (the
 * CRC of what came before them; 0 to start): crc32(b, 0, n, crc32(a, 0, m))
 * is the CRC of a followed by b. Returns an unsigned 32-bit integer.
 */
export function crc32(bytes: Uint8Array, from: number, to: number, crc = 0): number {
  if (native !== undefined && to - from >= NATIVE_MIN_BYTES) {
    const whole = from === 0 && to === lengthOf.call(bytes);
    return native(whole ? bytes : new Uint8Array(bufferOf.call(bytes), byteOffsetOf.call(bytes) + from, to - from), crc);
  }
  return crc32InJs(bytes, from, to, crc);
}

/** The JavaScript loop alone (the fallback; exported for tests and the benchmark). */
export function crc32InJs(bytes: Uint8Array, from: number, to: number, crc = 0): number {
  let c = ~crc;
  let i = from;
  if (to - from >= SLICE_MIN_BYTES) {
    for (const end = to - 8; i <= end; i += 8) {
      const low = c ^ (bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24));
      c =
        T[1792 + (low & 0xff)]! ^
        T[1536 + ((low >>> 8) & 0xff)]! ^
        T[1280 + ((low >>> 16) & 0xff)]! ^
        T[1024 + (low >>> 24)]! ^
        T[768 + bytes[i + 4]!]! ^
        T[512 + bytes[i + 5]!]! ^
        T[256 + bytes[i + 6]!]! ^
        T[bytes[i + 7]!]!;
    }
  }
  for (; i < to; i++) c = (c >>> 8) ^ T[(c ^ bytes[i]!) & 0xff]!;
  return ~c >>> 0;
}

/** The CRC-32 of a 32-bit word's 4 bytes, little-endian, continuing from `crc`. */
export function crc32Word(word: number, crc: number): number {
  let c = ~crc;
  for (let k = 0; k < 4; k++, word >>>= 8) c = (c >>> 8) ^ T[(c ^ word) & 0xff]!;
  return ~c >>> 0;
}

/** True when the native zlib.crc32 is used for long inputs (Node 20.15+). */
export const hasNativeCrc32 = native !== undefined;
