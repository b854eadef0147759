/**
 * The lab's formulas (src/lab/theory.ts), checked against a seeded
 * discrete-event simulation of the same system (src/lab/simulate.ts)
 * before the lab relies on them: the tandem line with a finite buffer and
 * its generalisation to several producers and consumers (overflow
 * "wait"), M/M/C/K (losses), constant times, Little's law.
 */
import { suite, assert, seedFromEnv } from "./_harness.js";
import { deterministicLine, littleLawError, mmck, predict, tandemLine } from "../src/lab/theory.js";
import { simulate, type SimulationOptions } from "../src/lab/simulate.js";

const test = suite("lab-theory");
const seed = seedFromEnv();
const MESSAGES = 200_000;

function sim(options: Partial<SimulationOptions>) {
  return simulate({
    producers: 1,
    consumers: 1,
    capacity: 0,
    overflow: "wait",
    arrival: { kind: "exp", rate: 5000 },
    service: { kind: "exp", us: 200 },
    warmup: 2000,
    messages: MESSAGES,
    seed,
    ...options,
  });
}

function close(measured: number, expected: number, tolerance: number, what: string): void {
  if (measured === expected) return;
  const error = Math.abs(measured - expected) / expected;
  assert.ok(error <= tolerance, `${what}: ${measured.toFixed(4)} vs ${expected.toFixed(4)} (${(error * 100).toFixed(2)}% > ${tolerance * 100}%; SEED=${seed})`);
}

test("the two-station line at equal rates: X = mu (c + 2) / (c + 3), formula and simulation", () => {
  const mu = 5000;
  for (const c of [0, 1, 2, 4, 8, 16]) {
    const formula = tandemLine({ producers: 1, consumers: 1, capacity: c, productionRate: mu, serviceRate: mu });
    close(formula.throughput, (mu * (c + 2)) / (c + 3), 1e-9, `closed form, capacity ${c}`);
    const simulated = sim({ capacity: c });
    close(simulated.throughput, formula.throughput, 0.02, `simulated throughput, capacity ${c}`);
    close(simulated.meanWaiting, formula.meanWaiting!, 0.06, `simulated messages waiting, capacity ${c}`);
    close(simulated.blockedFraction, formula.blocked!, 0.06, `simulated blocked fraction, capacity ${c}`);
  }
});

test("the two-station line at unequal rates: X = mu1 (1 - r^N) / (1 - r^(N+1)), N = c + 2", () => {
  for (const [mu1, mu2] of [[10_000, 5000], [2500, 5000]] as const) {
    for (const c of [0, 1, 4]) {
      const r = mu1 / mu2;
      const N = c + 2;
      const expected = (mu1 * (1 - r ** N)) / (1 - r ** (N + 1));
      const formula = tandemLine({ producers: 1, consumers: 1, capacity: c, productionRate: mu1, serviceRate: mu2 });
      close(formula.throughput, expected, 1e-9, `closed form mu1 ${mu1}, capacity ${c}`);
      close(sim({ capacity: c, arrival: { kind: "exp", rate: mu1 } }).throughput, expected, 0.02, `simulated mu1 ${mu1}, capacity ${c}`);
    }
  }
});

test("several producers and consumers (fan-in, fan-out): the birth-death chain matches the simulation", () => {
  for (const [producers, consumers] of [[4, 1], [2, 2], [1, 3]] as const) {
    for (const c of [0, 1, 4]) {
      const rate = 5000 / producers;
      const formula = tandemLine({ producers, consumers, capacity: c, productionRate: rate * consumers, serviceRate: 5000 });
      const simulated = sim({ producers, consumers, capacity: c, arrival: { kind: "exp", rate: rate * consumers } });
      close(simulated.throughput, formula.throughput, 0.02, `${producers} producers, ${consumers} consumers, capacity ${c}`);
    }
  }
});

test("losses (drop-newest, error, drop-oldest) with Poisson arrivals: M/M/C/K, K = capacity + consumers", () => {
  for (const overflow of ["drop-newest", "error", "drop-oldest"] as const) {
    for (const [consumers, c] of [[1, 0], [1, 1], [1, 4], [2, 2]] as const) {
      if (overflow === "drop-oldest" && c === 0) continue; // a RangeError by the contract
      const lambda = 6000;
      const formula = mmck(lambda, consumers, 5000, c + consumers);
      const simulated = sim({ consumers, capacity: c, overflow, arrival: { kind: "exp", rate: lambda } });
      close(simulated.throughput, formula.throughput, 0.02, `${overflow}, ${consumers} consumers, capacity ${c}`);
      assert.ok(Math.abs(simulated.lossFraction - formula.lossProbability!) < 0.01, `${overflow} loss ${simulated.lossFraction} vs P_K ${formula.lossProbability} (SEED=${seed})`);
      if (overflow !== "drop-oldest") close(simulated.meanWaiting, formula.meanWaiting!, 0.06, `${overflow} waiting, capacity ${c}`);
    }
  }
  // M/M/1/1 by hand: P_1 = rho / (1 + rho).
  const rho = 6000 / 5000;
  close(mmck(6000, 1, 5000, 1).lossProbability!, rho / (1 + rho), 1e-9, "M/M/1/1");
});

test("constant times: the buffer makes no difference (min of the rates), in theory and in simulation", () => {
  for (const c of [0, 1, 16]) {
    const simulated = sim({ capacity: c, arrival: { kind: "const", rate: 4000 }, service: { kind: "const", us: 200 } });
    const formula = deterministicLine({ producers: 1, consumers: 1, capacity: c, productionRate: 4000, serviceRate: 5000 });
    close(simulated.throughput, formula.throughput, 0.005, `constant, capacity ${c}`);
    assert.equal(formula.throughput, 4000);
  }
});

test("Infinity: M/M/1 throughput min(lambda, mu); predict() picks the model by options", () => {
  close(sim({ capacity: Infinity, arrival: { kind: "exp", rate: 4000 } }).throughput, 4000, 0.02, "Infinity, rho 0.8");
  assert.equal(predict({ arrival: { kind: "exp", rate: 5000 }, service: { kind: "exp", us: 200 }, overflow: "wait", producers: 1, consumers: 1, capacity: 0 })!.model, "tandem");
  assert.equal(predict({ arrival: { kind: "exp", rate: 5000 }, service: { kind: "exp", us: 200 }, overflow: "drop-newest", producers: 1, consumers: 1, capacity: 0 })!.model, "M/M/C/K");
  assert.equal(predict({ arrival: { kind: "const", rate: 5000 }, service: { kind: "const", us: 200 }, overflow: "wait", producers: 1, consumers: 1, capacity: 4 })!.model, "deterministic");
  assert.equal(predict({ arrival: { kind: "burst", rate: 5000 }, service: { kind: "exp", us: 200 }, overflow: "wait", producers: 1, consumers: 1, capacity: 4 }), undefined);
});

test("Little's law closes in the simulation (L = lambda W), and the error measure", () => {
  for (const c of [0, 4, Infinity]) {
    const r = sim({ capacity: c, arrival: { kind: "exp", rate: 4000 } });
    assert.ok(littleLawError(r.meanWaiting, r.throughput, r.meanWaitMs) < 0.01, `capacity ${c}: L ${r.meanWaiting} vs lambda W ${(r.throughput * r.meanWaitMs) / 1000}`);
  }
  assert.equal(littleLawError(2, 1000, 2), 0);
  close(littleLawError(1, 1000, 2), 0.5, 1e-9, "error relative to the larger side");
});

test.run();
