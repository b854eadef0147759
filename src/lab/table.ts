/**
 * The lab's results as text: the table printed on the terminal (and in
 * the README), CSV, and JSON with Infinity written as "Infinity".
 */
import type { LabResult, Row } from "./run.js";

export function capacityLabel(capacity: number): string {
  return capacity === Infinity ? "inf" : String(capacity);
}

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || !Number.isFinite(value) ? "—" : value.toFixed(digits);
}
function int(value: number | undefined): string {
  return value === undefined || !Number.isFinite(value) ? "—" : Math.round(value).toLocaleString("en-US");
}
function percent(value: number | undefined, digits = 1): string {
  return value === undefined || !Number.isFinite(value) ? "—" : `${(value * 100).toFixed(digits)}%`;
}

/** One line per party of a deadlock cycle: `A send "inbox of B" → B send "inbox of A"`. */
export function describeCycle(cycle: unknown[]): string {
  return (cycle as Array<{ interpreter: { name: string; id: number }; op: string; channel?: { name: string; id: number } }>)
    .map((p) => `${p.interpreter.name || `#${p.interpreter.id}`} ${p.op}${p.channel ? ` "${p.channel.name || p.channel.id}"` : ""}`)
    .join(" → ");
}

function render(headers: string[], rows: string[][], alignLeft: Set<number>): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (alignLeft.has(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(headers), widths.map((w) => "─".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}

/** The table for pipeline, fan-in and bursty. */
function lineTable(rows: Row[]): string {
  const headers = ["capacity", "overflow", "msgs/s", "theory", "meas/theory", "simulated", "p50 µs", "p99 µs", "p99.9 µs", "mean buf", "peak buf", "ring KiB", "RSS MiB", "blocked", "dropped", "Little err", "off-CPU"];
  const cells = rows.map((r) => [
    capacityLabel(r.capacity),
    r.overflow,
    int(r.throughput),
    int(r.predictedThroughput),
    r.ratio === undefined ? "—" : fixed(r.ratio, 3),
    int(r.simulatedThroughput),
    int(r.latencyUs.p50),
    int(r.latencyUs.p99),
    int(r.latencyUs.p999),
    fixed(r.meanBuffered, 2),
    String(r.peakBuffered),
    int(r.peakRingBytes / 1024),
    fixed(r.peakRssBytes / 1048576, 0),
    percent(r.senderBlockedFraction, 0),
    String(r.dropped + r.refused),
    percent(r.littleLawError),
    percent(r.offCpuFraction, 0),
  ]);
  return render(headers, cells, new Set([0, 1]));
}

/** The table for recv-loop. */
function recvLoopTable(rows: Row[]): string {
  const headers = ["capacity", "deadlocked", "handled before", "detected after", "requests/s", "peak buffered", "ring KiB", "RSS MiB", "cycle (first deadlocked run)"];
  const cells = rows.map((r) => [
    capacityLabel(r.capacity),
    `${r.deadlocks ?? 0} of ${r.runs ?? 0} runs`,
    r.handledBeforeDeadlock === undefined ? "—" : int(r.handledBeforeDeadlock),
    r.deadlock?.detectedAfterMs === undefined ? "—" : `${Math.round(r.deadlock.detectedAfterMs)} ms`,
    r.throughput > 0 ? int(r.throughput) : "—",
    String(r.peakBuffered),
    int(r.peakRingBytes / 1024),
    fixed(r.peakRssBytes / 1048576, 0),
    r.deadlock ? describeCycle(r.deadlock.cycle) : "none",
  ]);
  return render(headers, cells, new Set([0, 1, 8]));
}

/** What the run was, the table, and what it means: printed on a terminal or a pipe. */
export function formatReport(result: LabResult): string {
  const o = result.options as Record<string, unknown>;
  const lines: string[] = [];
  const extent = o.seconds ? `${o.seconds} s per run` : `${o.messages} messages per run`;
  if (result.scenario === "recv-loop") {
    lines.push(`recv-loop: two interpreters, each receiving in a loop and (with probability ${o.forward}) sending to the other; a feeder sends ${o.messages} requests per run (${o.arrival}/s), service ${o.service} µs; ${o.runs} seeded runs per capacity (seed ${o.seed})`);
    lines.push("");
    lines.push(recvLoopTable(result.rows));
    lines.push("");
    lines.push("Deadlocks are caught by the detector (DeadlockError in every party of the cycle); \"handled before\" is the median number of messages the two handled before it (deadlocked runs). Infinity never blocks a send, so it never deadlocks: its cost is the memory of the backlog (peak buffered, ring, RSS).");
  } else {
    lines.push(`${result.scenario}: ${o.producers} producer(s) → channel → ${o.consumers} consumer(s); arrival ${o.arrival}/s per producer, service ${o.service} µs; ${extent}, ${o.size}-byte messages, seed ${o.seed}`);
    lines.push("");
    lines.push(lineTable(result.rows));
    lines.push("");
    const models = [...new Set(result.rows.map((r) => r.prediction?.model).filter(Boolean))];
    if (models.length > 0) lines.push(`theory: ${models.join(", ")} (src/lab/theory.ts); simulated: a seeded simulation of the same system (src/lab/simulate.ts)`);
    else lines.push("theory: no closed form for these times; simulated: a seeded simulation of the same system (src/lab/simulate.ts)");
    const worstLittle = Math.max(...result.rows.map((r) => r.littleLawError));
    const offCpu = Math.max(...result.rows.map((r) => r.offCpuFraction));
    if (offCpu > 0.02) lines.push(`off-CPU: the producer and consumer were descheduled up to ${percent(offCpu, 0)} of the run while they had work (other load on ${result.machine.cpus} CPUs); theory assumes they always run`);
    lines.push(`Little's law (mean in channel vs throughput × mean time from send to receive): worst error ${percent(worstLittle)}${worstLittle > 0.05 ? " (a queue still growing at the end of a run is not in steady state; the law holds only on average over a steady window)" : ""}`);
  }
  const problems = result.rows.filter((r) => r.lost !== 0 || r.outOfOrder !== 0);
  for (const r of problems) {
    lines.push(
      result.scenario === "recv-loop"
        ? `CHECK FAILED at capacity ${capacityLabel(r.capacity)}: ${r.lost} runs neither finished nor deadlocked within their time limit`
        : `CHECK FAILED at capacity ${capacityLabel(r.capacity)}, ${r.overflow}: ${r.lost} messages unaccounted for, ${r.outOfOrder} out of order`,
    );
  }
  for (const note of [...new Set(result.skipped)]) lines.push(`not run: ${note}`);
  lines.push(`machine: ${result.machine.cpus} CPUs, Node ${result.machine.node}, load average ${result.machine.load.map((l) => l.toFixed(1)).join(" ")}`);
  return lines.join("\n");
}

/** JSON of the results: capacities as numbers or "Infinity" (results.json and --json). */
export function resultsToJson(result: LabResult): string {
  return JSON.stringify(
    { ...result, rows: result.rows.map((r) => ({ ...r, capacity: r.capacity === Infinity ? "Infinity" : r.capacity })) },
    (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? String(value) : value),
    2,
  );
}

function csvCell(value: unknown): string {
  const text = value === undefined ? "" : String(value);
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** results.csv: one line per row, the contract's fields flattened. */
export function resultsToCsv(result: LabResult): string {
  const header = [
    "scenario", "capacity", "overflow", "messages", "seconds", "throughput", "predictedThroughput", "ratio", "simulatedThroughput",
    "latencyUsP50", "latencyUsP99", "latencyUsP999", "meanBuffered", "peakBuffered", "peakRingBytes", "peakRssBytes",
    "senderBlockedFraction", "dropped", "refused", "littleLawError", "offCpuFraction", "deadlocks", "runs", "handledBeforeDeadlock", "deadlockCycle",
  ];
  const lines = result.rows.map((r) =>
    [
      result.scenario, r.capacity === Infinity ? "Infinity" : r.capacity, r.overflow, r.messages, r.seconds.toFixed(3), r.throughput.toFixed(1),
      r.predictedThroughput?.toFixed(1), r.ratio?.toFixed(4), r.simulatedThroughput?.toFixed(1),
      r.latencyUs.p50.toFixed(1), r.latencyUs.p99.toFixed(1), r.latencyUs.p999.toFixed(1), r.meanBuffered.toFixed(3), r.peakBuffered, r.peakRingBytes, r.peakRssBytes,
      r.senderBlockedFraction.toFixed(4), r.dropped, r.refused, r.littleLawError.toFixed(4), r.offCpuFraction.toFixed(4), r.deadlocks, r.runs, r.handledBeforeDeadlock, r.deadlock ? describeCycle(r.deadlock.cycle) : "",
    ].map(csvCell).join(","),
  );
  return [header.join(","), ...lines].join("\n") + "\n";
}
