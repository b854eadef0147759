/**
 * The access-log format of examples/pipeline-logs.ts, shared by the
 * generator (main thread) and the stages (interpreters): one request per
 * line,
 *
 *   2024-05-01T12:00:00.123Z 10.1.2.3 GET /api/users/1234 200 5123 12.345ms "Mozilla/5.0 (X11; Linux x86_64)"
 *
 * time, client, method, path, status, response bytes, latency, user agent.
 * Paths come from ROUTES with numeric ids in place of `:id`.
 */

export const ROUTES = [
  "/",
  "/index.html",
  "/static/app.js",
  "/static/app.css",
  "/api/users/:id",
  "/api/users/:id/orders",
  "/api/orders/:id",
  "/api/orders/:id/items/:id",
  "/api/products/:id",
  "/api/search",
  "/api/cart",
  "/api/checkout",
  "/health",
  "/metrics",
  "/login",
  "/logout",
] as const;

/** A request is a "problem" when it failed (5xx) or took longer than this. */
export const SLOW_MS = 250;
/** Latency histogram: 1 ms buckets up to 10 s (the last one catches the rest). */
export const LATENCY_BUCKETS = 10_001;

/** What the pipeline computes, and the generator knows in advance. */
export interface LogReport {
  lines: number;
  /** Problem requests (5xx or slow), per route template. */
  routes: Record<string, { problems: number; errors: number; slow: number; bytes: number }>;
  /** 99th percentile latency (ms, bucket upper edge) of the problem requests. */
  problemP99Ms: number;
  /** Status codes of problem requests. */
  statuses: Record<string, number>;
}

export function emptyReport(): LogReport {
  return { lines: 0, routes: {}, problemP99Ms: 0, statuses: {} };
}

/** Accumulates one request into a report (and its latency into `histogram`). */
export function account(report: LogReport, histogram: Uint32Array, route: number, status: number, bytes: number, latencyUs: number): void {
  const slow = latencyUs > SLOW_MS * 1000;
  const error = status >= 500;
  if (!slow && !error) return;
  const name = ROUTES[route] ?? "?";
  const entry = (report.routes[name] ??= { problems: 0, errors: 0, slow: 0, bytes: 0 });
  entry.problems++;
  if (error) entry.errors++;
  if (slow) entry.slow++;
  entry.bytes += bytes;
  report.statuses[status] = (report.statuses[status] ?? 0) + 1;
  histogram[Math.min(LATENCY_BUCKETS - 1, Math.floor(latencyUs / 1000))]!++;
}

/** The 99th percentile of a latency histogram (ms, upper bucket edge). */
export function p99(histogram: Uint32Array): number {
  let total = 0;
  for (const n of histogram) total += n;
  if (total === 0) return 0;
  const rank = Math.ceil(total * 0.99);
  let seen = 0;
  for (let b = 0; b < histogram.length; b++) {
    seen += histogram[b]!;
    if (seen >= rank) return b + 1;
  }
  return histogram.length;
}

/** Adds report `b` (and its histogram) into `a`. */
export function mergeReports(a: LogReport, b: LogReport): void {
  a.lines += b.lines;
  for (const [name, entry] of Object.entries(b.routes)) {
    const into = (a.routes[name] ??= { problems: 0, errors: 0, slow: 0, bytes: 0 });
    into.problems += entry.problems;
    into.errors += entry.errors;
    into.slow += entry.slow;
    into.bytes += entry.bytes;
  }
  for (const [status, n] of Object.entries(b.statuses)) a.statuses[status] = (a.statuses[status] ?? 0) + n;
}

/** A report in a canonical form (sorted keys), for comparing. */
export function canonical(report: LogReport): string {
  const sortKeys = (o: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(o).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0)));
  return JSON.stringify({ lines: report.lines, routes: sortKeys(report.routes), problemP99Ms: report.problemP99Ms, statuses: sortKeys(report.statuses) });
}
