/**
 * Shared helpers for the benchmark children (bench/<workload>.ts) and the
 * parent (bench/run.ts): argument parsing, sizing (BENCH_QUICK), the JSON
 * result line protocol, percentiles and formatting.
 */

/** BENCH_QUICK=1 shrinks every duration and count ~10x (smoke runs). */
export const QUICK = process.env.BENCH_QUICK === "1" || process.env.BENCH_QUICK === "true";

/** Scales a duration (seconds) or count for quick runs (never below `min`). */
export function sized(full: number, min = 1): number {
  return QUICK ? Math.max(min, full / 10) : full;
}

/** Integer count, scaled for quick runs. */
export function count(full: number, min = 1): number {
  return Math.max(min, Math.round(QUICK ? full / 10 : full));
}

/** `--key value` pairs after the script name. */
export function parseArgs(argv: string[] = process.argv.slice(2)): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) continue;
    const key = arg.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) out[key] = "true";
    else {
      out[key] = next;
      i++;
    }
  }
  return out;
}

/** "Infinity" | "inf" | number text. */
export function parseCapacity(text: string | undefined): number {
  if (text === undefined) return Infinity;
  if (text === "Infinity" || text === "inf") return Infinity;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0 || !Number.isInteger(n)) throw new Error(`bad capacity ${text}`);
  return n;
}

/** Monotonic nanoseconds shared by every thread of the process (CLOCK_MONOTONIC). */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Percentile of an ascending-sorted array (nearest rank, lower). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.floor(p * (sorted.length - 1))));
  return sorted[index]!;
}

export interface LatencySummary {
  samples: number;
  p50us: number;
  p99us: number;
  meanus: number;
  maxus: number;
}

/** Summarizes `n` latencies in milliseconds (from performance.now()) as microseconds. */
export function summarize(latMs: Float64Array, n: number): LatencySummary {
  const sorted = latMs.slice(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  return {
    samples: n,
    p50us: percentile(sorted, 0.5) * 1000,
    p99us: percentile(sorted, 0.99) * 1000,
    meanus: n > 0 ? (sum / n) * 1000 : NaN,
    maxus: n > 0 ? sorted[n - 1]! * 1000 : NaN,
  };
}

export function median(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (finite.length === 0) return NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 === 1 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

/** The line prefix by which the parent recognizes a child's result. */
export const RESULT_PREFIX = "BENCH_RESULT ";

export interface ChildResult {
  ok: boolean;
  /** Headline and secondary numbers (all plain numbers). */
  metrics: Record<string, number>;
  /** Human-readable detail from this repetition. */
  notes: string;
  error?: string;
}

let currentPhase = "start";
/** Names the phase a child is in (on stderr, so a timeout report can say where it hung). */
export function phase(name: string): void {
  currentPhase = name;
  process.stderr.write(`[phase] ${name}\n`);
}

/**
 * Runs a child benchmark: prints one result line, then exits (so that no
 * leftover worker can keep the process alive). A throw is reported as a
 * failed result, never swallowed.
 */
export function runChild(body: (args: Record<string, string>) => Promise<Omit<ChildResult, "ok">>): void {
  const args = parseArgs();
  body(args).then(
    (result) => {
      const failed = result.error !== undefined;
      process.stdout.write(RESULT_PREFIX + JSON.stringify({ ok: !failed, ...result }) + "\n", () => process.exit(failed ? 1 : 0));
    },
    (err: unknown) => {
      const message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      const out: ChildResult = { ok: false, metrics: {}, notes: "", error: `in phase "${currentPhase}": ${message}` };
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.stdout.write(RESULT_PREFIX + JSON.stringify(out) + "\n", () => process.exit(1));
    },
  );
}

/** Formats a rate with k/M suffixes (3 significant digits). */
export function fmtRate(value: number): string {
  if (!Number.isFinite(value)) return "—";
  if (value >= 1e6) return `${sig(value / 1e6)} M`;
  if (value >= 1e3) return `${sig(value / 1e3)} k`;
  return sig(value);
}

/** 3 significant digits, no exponent. */
export function sig(value: number): string {
  if (!Number.isFinite(value)) return "—";
  const abs = Math.abs(value);
  if (abs >= 100) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  if (abs >= 1) return value.toFixed(2);
  return value.toPrecision(3);
}

export const MiB = 1024 * 1024;
