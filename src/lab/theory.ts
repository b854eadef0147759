/**
 * What queueing theory predicts for the lab's scenarios, where it
 * predicts anything (exponential times; see shared/research/observe-servers.md §3).
 *
 * Both models are birth–death chains on n, the number of messages past
 * their producers: in service at a consumer, buffered in the channel, or
 * held by a producer blocked in `send`. With p producers, C consumers and
 * a channel of capacity c:
 *
 * - **overflow "wait"** (the producer blocks when the channel is full:
 *   the tandem line with a finite buffer, blocking after service). Each
 *   producer not blocked finishes its next message at rate μ1; a blocked
 *   producer holds its message until room appears. So n runs from 0 to
 *   N = c + C + p, with birth rate (p − max(0, n − c − C))·μ1 and death
 *   rate min(n, C)·μ2. For p = C = 1 this is the two-station line,
 *   X = μ1(1 − r^N)/(1 − r^(N+1)) with r = μ1/μ2 and N = c + 2, and
 *   X = μ(c + 2)/(c + 3) at equal rates: 2/3 of μ for a rendezvous,
 *   μ as c → ∞.
 * - **overflow "drop-newest"** (or "error", or "drop-oldest": the number in
 *   the system evolves the same way) with Poisson arrivals: M/M/C/K with
 *   λ = p·rate and K = c + C (a message finds room only if fewer than
 *   c are buffered, or, at capacity 0, a consumer waits for it). Blocking
 *   probability P_K, throughput λ(1 − P_K).
 *
 * Capacity counts messages *buffered*; a consumer holds one more (the one
 * it works on), and at capacity 0 the channel holds none, which is why
 * K = c + C and not c. With constant times (const:RATE and const:US) the
 * line runs at min(p·rate, C·μ2) whatever the buffer: buffers pay only
 * when there is variance. Infinity: M/M/C with λ = p·rate; throughput
 * min(λ, C·μ2), no stationary queue when λ >= C·μ2.
 *
 * The formulas are checked against a seeded simulation (simulate.ts) in
 * test/lab-theory.test.ts before the lab relies on them.
 */

export interface Prediction {
  /** Which model: "tandem" (wait), "M/M/C/K" (losses), "deterministic", or "M/M/C" (Infinity). */
  model: string;
  /** Messages per second through the consumers. */
  throughput: number;
  /** Mean messages past their producer but not yet taken by a consumer (buffered + held by blocked producers); undefined when unbounded. */
  meanWaiting?: number;
  /** Mean time (ms) from send to receive, by Little's law: meanWaiting / throughput. */
  meanWaitMs?: number;
  /** Fraction of time a producer spends blocked ("wait"), or fraction of messages lost (the others). */
  blocked?: number;
  /** Fraction of messages that find no room (losses; M/M/C/K's P_K). */
  lossProbability?: number;
}

/** Stationary probabilities of a birth–death chain on 0..N. */
function stationary(N: number, birth: (n: number) => number, death: (n: number) => number): number[] {
  // Work in logs: rates can make the products overflow for long chains.
  const logs = [0];
  for (let n = 1; n <= N; n++) logs.push(logs[n - 1]! + Math.log(birth(n - 1)) - Math.log(death(n)));
  const top = Math.max(...logs);
  const weights = logs.map((l) => Math.exp(l - top));
  const total = weights.reduce((a, b) => a + b, 0);
  return weights.map((w) => w / total);
}

export interface LineParams {
  producers: number;
  consumers: number;
  /** Messages buffered at most: 0, n, or Infinity. */
  capacity: number;
  /** One producer's rate (messages per second) when it never blocks. */
  productionRate: number;
  /** One consumer's rate (messages per second): 1e6 / mean service µs. */
  serviceRate: number;
}

/** The tandem line with a finite buffer (overflow "wait"), exponential production and service. */
export function tandemLine({ producers, consumers, capacity, productionRate, serviceRate }: LineParams): Prediction {
  if (capacity === Infinity) return mmc(producers * productionRate, consumers, serviceRate);
  const room = capacity + consumers;
  const N = room + producers;
  const p = stationary(
    N,
    (n) => (producers - Math.max(0, n - room)) * productionRate,
    (n) => Math.min(n, consumers) * serviceRate,
  );
  let throughput = 0;
  let waiting = 0;
  let blockedProducers = 0;
  for (let n = 0; n <= N; n++) {
    throughput += p[n]! * Math.min(n, consumers) * serviceRate;
    waiting += p[n]! * (n - Math.min(n, consumers));
    blockedProducers += p[n]! * Math.max(0, n - room);
  }
  return { model: "tandem", throughput, meanWaiting: waiting, meanWaitMs: (1000 * waiting) / throughput, blocked: blockedProducers / producers };
}

/** M/M/C/K: Poisson arrivals at `lambda`, C exponential consumers at `mu`, room for K in the system. */
export function mmck(lambda: number, consumers: number, mu: number, K: number): Prediction {
  if (K === Infinity) return mmc(lambda, consumers, mu);
  const p = stationary(
    K,
    () => lambda,
    (n) => Math.min(n, consumers) * mu,
  );
  const loss = p[K]!;
  const throughput = lambda * (1 - loss);
  let waiting = 0;
  for (let n = 0; n <= K; n++) waiting += p[n]! * (n - Math.min(n, consumers));
  return { model: "M/M/C/K", throughput, meanWaiting: waiting, meanWaitMs: (1000 * waiting) / throughput, blocked: loss, lossProbability: loss };
}

/** M/M/C (an unbounded channel): throughput min(λ, Cμ); a mean queue only when stable. */
export function mmc(lambda: number, consumers: number, mu: number): Prediction {
  const rho = lambda / (consumers * mu);
  if (rho >= 1) return { model: "M/M/C", throughput: consumers * mu, blocked: 0, lossProbability: 0 };
  // Erlang C for the mean queue.
  const a = lambda / mu;
  let sum = 0;
  let term = 1;
  for (let k = 0; k < consumers; k++) {
    if (k > 0) term *= a / k;
    sum += term;
  }
  const last = (term * a) / consumers / (1 - rho);
  const p0 = 1 / (sum + last);
  const waiting = (p0 * last * rho) / (1 - rho);
  return { model: "M/M/C", throughput: lambda, meanWaiting: waiting, meanWaitMs: (1000 * waiting) / lambda, blocked: 0, lossProbability: 0 };
}

/** Constant gaps and constant service: the line runs at the slower side's rate, whatever the buffer. */
export function deterministicLine({ producers, consumers, productionRate, serviceRate }: LineParams): Prediction {
  return { model: "deterministic", throughput: Math.min(producers * productionRate, consumers * serviceRate) };
}

/**
 * The prediction for a lab run, or undefined where theory has no closed
 * form (bursty arrivals, exponential with constant, drop-oldest latency...).
 */
export function predict(options: {
  arrival: { kind: string; rate: number };
  service: { kind: string; us: number };
  overflow: string;
  producers: number;
  consumers: number;
  capacity: number;
}): Prediction | undefined {
  const params: LineParams = {
    producers: options.producers,
    consumers: options.consumers,
    capacity: options.capacity,
    productionRate: options.arrival.rate,
    serviceRate: 1e6 / options.service.us,
  };
  if (options.arrival.kind === "const" && options.service.kind === "const") return deterministicLine(params);
  if (options.arrival.kind !== "exp" || options.service.kind !== "exp") return undefined;
  if (options.overflow === "wait") return tandemLine(params);
  return mmck(options.producers * options.arrival.rate, options.consumers, params.serviceRate, options.capacity + options.consumers);
}

/**
 * Little's law, L = λW, as a relative error: how far the measured mean
 * number in the channel is from throughput × mean time in the channel.
 */
export function littleLawError(meanInChannel: number, throughputPerSecond: number, meanTimeMs: number): number {
  const product = (throughputPerSecond * meanTimeMs) / 1000;
  const scale = Math.max(meanInChannel, product);
  return scale === 0 ? 0 : Math.abs(meanInChannel - product) / scale;
}
