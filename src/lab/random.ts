/**
 * Seeded randomness for the lab: a PRNG (mulberry32, the same generator
 * the tests use) and the time distributions the options name.
 */

/** A seeded PRNG: uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An exponential sample with mean `mean` (any unit). */
export function exponential(random: () => number, mean: number): number {
  return -mean * Math.log(1 - random());
}

/** A seed for party `index` of role `role` in run `run`: distinct streams from one --seed. */
export function partySeed(seed: number, run: number, role: number, index: number): number {
  return (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + run * 7919 + role * 104729 + index * 1299709) >>> 0;
}
