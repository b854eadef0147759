/**
 * Stage "aggregate" of examples/pipeline-logs.ts: a generator that keeps a
 * running report of its worker's share of the problem requests and yields
 * it once its input ends (with the latency histogram, so that the main
 * thread can merge the shares of several workers exactly).
 */
import { account, emptyReport, LATENCY_BUCKETS, type LogReport } from "./log-format.js";
import type { Columns } from "./log-parse.js";

export default function* aggregate(ranges: Iterable<Columns>): Generator<{ report: LogReport; histogram: Uint32Array }> {
  const report = emptyReport();
  const histogram = new Uint32Array(LATENCY_BUCKETS);
  for (const columns of ranges) {
    report.lines += columns.lines;
    for (let i = 0; i < columns.route.length; i++) {
      account(report, histogram, columns.route[i]!, columns.status[i]!, columns.bytes[i]!, columns.latencyUs[i]!);
    }
  }
  yield { report, histogram };
}
