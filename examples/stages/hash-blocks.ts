/**
 * Stages of examples/pipeline-hash.ts, also called inline by its
 * one-thread run: "compress" makes block `index` (256 KiB of log-like
 * text, the same for the same index) and deflates it; "hash" takes the
 * SHA-256 of the compressed bytes.
 */
import { createHash } from "node:crypto";
import { deflateSync } from "node:zlib";

export const BLOCK_BYTES = 256 * 1024;
const WORDS = ["GET", "POST", "/api/users", "/api/orders", "200", "404", "500", "latency", "ms", "bytes", "Mozilla/5.0", "curl/8.5.0", "ok", "retry", "timeout"];

/** Block `index`: deterministic text (a xorshift picks the words). */
export function makeBlock(index: number): Buffer {
  const block = Buffer.allocUnsafe(BLOCK_BYTES);
  let state = (index + 1) * 2654435761;
  let at = 0;
  while (at < BLOCK_BYTES) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    const word = WORDS[(state >>> 0) % WORDS.length]!;
    at += block.write(word, at, "latin1");
    if (at < BLOCK_BYTES) block[at++] = (state & 7) === 0 ? 0x0a : 0x20;
  }
  return block;
}

export function compress(index: number): { index: number; compressed: Uint8Array } {
  const compressed = deflateSync(makeBlock(index), { level: 6 });
  return { index, compressed: new Uint8Array(compressed.buffer, compressed.byteOffset, compressed.byteLength) };
}

export function hash(block: { index: number; compressed: Uint8Array }): { index: number; bytes: number; digest: string } {
  return { index: block.index, bytes: block.compressed.byteLength, digest: createHash("sha256").update(block.compressed).digest("hex") };
}
