/**
 * The lab's time distributions: how producers space their messages
 * (`--arrival`) and how long a consumer works on one (`--service`).
 *
 * - `exp:RATE`    a producer's gaps are exponential with mean 1/RATE s
 *                 (Poisson arrivals when nothing blocks it);
 * - `const:RATE`  every gap is 1/RATE s;
 * - `burst:N@RATE` N messages back to back, bursts spaced by exponential
 *                 gaps of mean N/RATE s: RATE messages a second on average;
 * - `exp:US`, `const:US` a consumer's time per message, mean US µs.
 */
import { exponential } from "./random.js";

export type Arrival = { kind: "exp"; rate: number } | { kind: "const"; rate: number } | { kind: "burst"; size: number; rate: number };
export type Service = { kind: "exp"; us: number } | { kind: "const"; us: number };

/** "exp:5000" etc. as the options print them. */
export function formatArrival(arrival: Arrival): string {
  return arrival.kind === "burst" ? `burst:${arrival.size}@${arrival.rate}` : `${arrival.kind}:${arrival.rate}`;
}
export function formatService(service: Service): string {
  return `${service.kind}:${service.us}`;
}

/** Mean messages per second of one producer that never blocks. */
export function arrivalRate(arrival: Arrival): number {
  return arrival.rate;
}

/** Squared coefficient of variation of a producer's gaps (0 constant, 1 exponential, more for bursts). */
export function arrivalScv(arrival: Arrival): number {
  if (arrival.kind === "const") return 0;
  if (arrival.kind === "exp") return 1;
  // N - 1 zero gaps and one exponential gap of mean N/rate: E[g] = 1/rate, E[g^2] = 2 (N/rate)^2 / N.
  return 2 * arrival.size - 1;
}

/** Gaps (ms) between one producer's messages, drawn from `random`. */
export function gapSampler(arrival: Arrival, random: () => number): () => number {
  const meanMs = 1000 / arrival.rate;
  if (arrival.kind === "const") return () => meanMs;
  if (arrival.kind === "exp") return () => exponential(random, meanMs);
  let left = 0;
  const burstGapMs = (1000 * arrival.size) / arrival.rate;
  return () => {
    if (left > 0) {
      left--;
      return 0;
    }
    left = arrival.size - 1;
    return exponential(random, burstGapMs);
  };
}

/** Service times (ms), drawn from `random`. */
export function serviceSampler(service: Service, random: () => number): () => number {
  const meanMs = service.us / 1000;
  if (service.kind === "const") return () => meanMs;
  return () => exponential(random, meanMs);
}
