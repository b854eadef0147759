/**
 * `node dist/bench/view-copy.js`: the measurement behind a documented
 * difference from structured clone (README, "What can cross"): a top-level
 * Uint8Array that is a view into a larger buffer crosses as its own bytes,
 * where structured clone copies the whole buffer under it. Matching it
 * would cost what sending the whole buffer costs; this prints both, per
 * send and receive on one thread (CPU time), beside structuredClone of the
 * view itself, for a 64-byte view of a 64 KiB and of a 1 MiB buffer.
 */
import { createChannel } from "../src/index.js";

function cpuNow(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1000;
}

/** Median CPU µs per call of `step` over 5 rounds of `count` calls. */
function microsPer(count: number, step: () => void): number {
  const samples: number[] = [];
  for (let round = 0; round < 6; round++) {
    const start = cpuNow();
    for (let i = 0; i < count; i++) step();
    if (round > 0) samples.push((cpuNow() - start) / count / 1000);
  }
  return samples.sort((a, b) => a - b)[samples.length >> 1]!;
}

const [rx, tx] = createChannel<Uint8Array>({ name: "view-copy", bufferBytes: 4 << 20 });
const roundTrip = (value: Uint8Array, bytes: number) => (): void => {
  tx.sendSync(value);
  const got = rx.recvSync();
  if (got.length !== bytes || got[bytes - 1] !== value[bytes - 1]) throw new Error("wrong bytes");
};
console.log("| buffer | 64 B view, its own bytes (what is done) | the whole buffer (what matching structured clone costs) | structuredClone(view) |");
console.log("|---|---|---|---|");
for (const size of [64 << 10, 1 << 20]) {
  const whole = Uint8Array.from({ length: size }, (_, i) => i & 255);
  const view = whole.subarray(4096, 4096 + 64);
  const own = microsPer(20_000, roundTrip(view, 64));
  const all = microsPer(size > 100_000 ? 200 : 2000, roundTrip(whole, size));
  const cloned = microsPer(size > 100_000 ? 200 : 2000, () => void structuredClone(view));
  console.log(`| ${size >> 10} KiB | ${own.toFixed(2)} µs | ${all.toFixed(1)} µs | ${cloned.toFixed(1)} µs |`);
}
rx.close();
tx.close();
