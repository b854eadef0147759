/**
 * Stage modules for `npm run bench:pipeline` (imported inside the stages'
 * interpreters, and inline by the one-thread baselines).
 *
 * `spin` is CPU work of a calibrated length: PIPELINE_BENCH_SPIN rounds of
 * an integer mix (the parent measures how many rounds take 50 µs and passes
 * it to every child through the environment, which interpreters inherit).
 */
const ROUNDS = Number(process.env.PIPELINE_BENCH_SPIN ?? 2000);

/** `rounds` rounds of a 32-bit integer mix of `x` (no allocation, no I/O: pure CPU). */
export function mix(x: number, rounds: number): number {
  let h = x | 0;
  for (let i = 0; i < rounds; i++) {
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
    h ^= h >>> 12;
    h = Math.imul(h ^ (h >>> 13), 0x297a2d39);
  }
  return h;
}

/** About 50 µs of CPU per item. */
export function spin(x: number): number {
  return mix(x, ROUNDS);
}

/** A trivial transform. */
export function increment(x: number): number {
  return x + 1;
}

/** A trivial transform of a small object. */
export function touch(item: { id: number; name: string }): { id: number; name: string } {
  return { id: item.id + 1, name: item.name };
}
