/**
 * report.html: one self-contained file (inline SVG and CSS, no script, no
 * network) with the lab's table and plots of each metric against capacity
 * and of queue length over time.
 *
 * The plots are Vega-Lite specifications compiled and rendered to SVG in
 * Node by vega's headless renderer (`view.toSVG()`): no browser, no
 * canvas, no hand-drawn axes. Why Vega-Lite: it is the one charting
 * library that renders SVG in Node without a DOM (uPlot and Chart.js need
 * a canvas or a browser; Observable Plot needs a fake DOM such as jsdom),
 * its grammar gives axes, log scales, legends and small multiples from a
 * few lines of JSON, and the same specs open in any Vega editor.
 */
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { LabResult, Row } from "./run.js";
import { capacityLabel, describeCycle, formatReport } from "./table.js";

/** Escapes text for HTML (every name and value in the report goes through it). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

/** Renders a Vega-Lite spec to an SVG string, in Node. */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

const WIDTH = 360;
const HEIGHT = 220;
const CONFIG = { font: "system-ui, -apple-system, Segoe UI, sans-serif", view: { stroke: "#d9dee5" }, axis: { labelColor: "#3a414b", titleColor: "#3a414b", gridColor: "#eceff3" } };

function capacityAxis(rows: Row[]) {
  return { field: "capacity", type: "ordinal" as const, sort: rows.map((r) => capacityLabel(r.capacity)), title: "capacity", axis: { labelAngle: 0 } };
}

/** One metric (or several, as series) against capacity, one line per overflow policy and series. */
function metricSpec(rows: Row[], title: string, yTitle: string, series: Array<{ name: string; value: (r: Row) => number | undefined }>, options: { log?: boolean; percent?: boolean } = {}): TopLevelSpec {
  const values = rows.flatMap((r) =>
    series
      .map((s) => ({ capacity: capacityLabel(r.capacity), overflow: r.overflow, series: s.name, value: s.value(r) }))
      .filter((v) => v.value !== undefined && Number.isFinite(v.value) && (!options.log || v.value! > 0)),
  );
  const policies = new Set(rows.map((r) => r.overflow)).size;
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title,
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values },
    mark: { type: "line", point: { filled: true, size: 45 } },
    encoding: {
      x: capacityAxis(rows),
      y: { field: "value", type: "quantitative", title: yTitle, scale: options.log ? { type: "log" } : { zero: true }, axis: options.percent ? { format: "%" } : {} },
      color: { field: "series", type: "nominal", title: null, legend: { orient: "bottom" }, sort: series.map((s) => s.name), scale: { domain: series.map((s) => s.name), range: ["#2f6fd0", "#e8890c", "#8a94a3", "#c92a2a"].slice(0, series.length) } },
      ...(policies > 1 ? { strokeDash: { field: "overflow", type: "nominal", title: "overflow" } } : {}),
      detail: { field: "overflow" },
    },
  } as TopLevelSpec;
}

function queueSpec(rows: Row[]): TopLevelSpec {
  const values = rows.flatMap((r) => r.queue.map(([ms, length]) => ({ capacity: `${capacityLabel(r.capacity)} ${r.overflow}`, ms, length })));
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: "Messages buffered over time",
    width: WIDTH * 2 + 60,
    height: HEIGHT,
    config: CONFIG,
    data: { values },
    mark: { type: "line", interpolate: "step-after", strokeWidth: 1.2 },
    encoding: {
      x: { field: "ms", type: "quantitative", title: "ms since the run began" },
      y: { field: "length", type: "quantitative", title: "buffered" },
      color: { field: "capacity", type: "nominal", title: "capacity", sort: rows.map((r) => `${capacityLabel(r.capacity)} ${r.overflow}`) },
    },
  } as TopLevelSpec;
}

function deadlockSpec(rows: Row[]): TopLevelSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: "Runs that deadlocked",
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: rows.map((r) => ({ capacity: capacityLabel(r.capacity), fraction: (r.deadlocks ?? 0) / Math.max(1, r.runs ?? 1) })) },
    mark: { type: "bar", color: "#c92a2a" },
    encoding: {
      x: capacityAxis(rows),
      y: { field: "fraction", type: "quantitative", title: "fraction of seeded runs", scale: { domain: [0, 1] }, axis: { format: "%" } },
    },
  } as TopLevelSpec;
}

/** The charts for a result (SVG strings, in order). */
export async function charts(result: LabResult): Promise<string[]> {
  const rows = result.rows;
  const specs: TopLevelSpec[] = [];
  if (result.scenario === "recv-loop") {
    specs.push(deadlockSpec(rows));
    specs.push(metricSpec(rows, "Peak memory", "MiB", [
      { name: "ring bytes (both inboxes)", value: (r) => r.peakRingBytes / 1048576 },
      { name: "process RSS", value: (r) => r.peakRssBytes / 1048576 },
    ], { log: true }));
    specs.push(metricSpec(rows, "Peak messages buffered", "messages", [{ name: "peak buffered (both inboxes)", value: (r) => r.peakBuffered }]));
  } else {
    specs.push(metricSpec(rows, "Throughput", "messages / s", [
      { name: "measured", value: (r) => r.throughput },
      { name: "theory", value: (r) => r.predictedThroughput },
      { name: "simulated", value: (r) => r.simulatedThroughput },
    ]));
    specs.push(metricSpec(rows, "Latency, send to receive", "µs (log)", [
      { name: "p50", value: (r) => r.latencyUs.p50 },
      { name: "p99", value: (r) => r.latencyUs.p99 },
      { name: "p99.9", value: (r) => r.latencyUs.p999 },
    ], { log: true }));
    specs.push(metricSpec(rows, "Peak memory", "MiB (log)", [
      { name: "ring (header + data)", value: (r) => r.peakRingBytes / 1048576 },
      { name: "process RSS", value: (r) => r.peakRssBytes / 1048576 },
    ], { log: true }));
    specs.push(metricSpec(rows, "Time senders spent blocked", "fraction of producer time", [
      { name: "measured", value: (r) => r.senderBlockedFraction },
      { name: "theory", value: (r) => (r.overflow === "wait" ? r.prediction?.blocked : undefined) },
    ], { percent: true }));
  }
  specs.push(queueSpec(rows));
  return Promise.all(specs.map(renderSvg));
}

const STYLE = `
body { margin: 0 auto; max-width: 1180px; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #68717d; margin: 0 0 16px; }
pre { background: #f5f7f9; border: 1px solid #e2e6eb; border-radius: 6px; padding: 12px; overflow-x: auto; font-size: 12px; line-height: 1.35; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 12.5px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e2e6eb; text-align: right; white-space: nowrap; }
th { color: #68717d; font-weight: 500; } td.left, th.left { text-align: left; }
.good { color: #2b8a3e; } .bad { color: #c92a2a; }
.table-wrap { overflow-x: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
.charts figure { margin: 0; border: 1px solid #e2e6eb; border-radius: 8px; padding: 8px; }
.notes li { margin: 4px 0; }
`;

function rowsTable(result: LabResult): string {
  const recvLoop = result.scenario === "recv-loop";
  const head = recvLoop
    ? ["capacity", "deadlocked runs", "handled before", "detected after", "requests/s", "peak buffered", "ring KiB", "RSS MiB", "cycle"]
    : ["capacity", "overflow", "msgs/s", "theory", "measured / theory", "simulated", "p50 µs", "p99 µs", "p99.9 µs", "mean buffered", "peak", "ring KiB", "RSS MiB", "blocked", "dropped", "Little's law error", "off-CPU"];
  const cell = (text: string, cls = ""): string => `<td${cls ? ` class="${cls}"` : ""}>${escapeHtml(text)}</td>`;
  const fmt = (n: number | undefined, digits = 0): string => (n === undefined || !Number.isFinite(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const body = result.rows.map((r) => {
    if (recvLoop) {
      return `<tr>${[
        cell(capacityLabel(r.capacity), "left"),
        cell(`${r.deadlocks ?? 0} of ${r.runs ?? 0}`, (r.deadlocks ?? 0) > 0 ? "bad" : "good"),
        cell(r.handledBeforeDeadlock === undefined ? "—" : fmt(r.handledBeforeDeadlock)),
        cell(r.deadlock?.detectedAfterMs === undefined ? "—" : `${Math.round(r.deadlock.detectedAfterMs)} ms`),
        cell(r.throughput > 0 ? fmt(r.throughput) : "—"),
        cell(String(r.peakBuffered)),
        cell(fmt(r.peakRingBytes / 1024)),
        cell(fmt(r.peakRssBytes / 1048576)),
        cell(r.deadlock ? describeCycle(r.deadlock.cycle) : "none", "left"),
      ].join("")}</tr>`;
    }
    const ratioClass = r.ratio === undefined ? "" : Math.abs(r.ratio - 1) <= 0.05 ? "good" : "bad";
    return `<tr>${[
      cell(capacityLabel(r.capacity), "left"),
      cell(r.overflow, "left"),
      cell(fmt(r.throughput)),
      cell(fmt(r.predictedThroughput)),
      cell(r.ratio === undefined ? "—" : r.ratio.toFixed(3), ratioClass),
      cell(fmt(r.simulatedThroughput)),
      cell(fmt(r.latencyUs.p50)),
      cell(fmt(r.latencyUs.p99)),
      cell(fmt(r.latencyUs.p999)),
      cell(fmt(r.meanBuffered, 2)),
      cell(String(r.peakBuffered)),
      cell(fmt(r.peakRingBytes / 1024)),
      cell(fmt(r.peakRssBytes / 1048576)),
      cell(`${(r.senderBlockedFraction * 100).toFixed(0)}%`),
      cell(String(r.dropped + r.refused)),
      cell(`${(r.littleLawError * 100).toFixed(1)}%`, r.littleLawError <= 0.05 ? "good" : "bad"),
      cell(`${(r.offCpuFraction * 100).toFixed(0)}%`),
    ].join("")}</tr>`;
  });
  return `<table><thead><tr>${head.map((h, i) => `<th${i < (recvLoop ? 1 : 2) || (recvLoop && i === head.length - 1) ? ' class="left"' : ""}>${escapeHtml(h)}</th>`).join("")}</tr></thead><tbody>${body.join("")}</tbody></table>`;
}

const NOTES = [
  "Throughput is measured over a steady window: from the first 5% of messages received to the last send of the first producer to finish.",
  "Latency runs from the start of send to the return of recv, so it includes time a sender spent blocked.",
  "Theory: with overflow \"wait\" and exponential times, the tandem line with a finite buffer (a birth–death chain: for one producer and one consumer at equal rates, μ(c+2)/(c+3)); with losses and Poisson arrivals, M/M/C/K with K = capacity + consumers; with constant times, the slower side's rate at every capacity. Simulated: a seeded discrete-event simulation of the same system.",
  "Little's law: the sampled mean number of messages in the channel (sends begun, not yet received) against throughput × mean time from send to receive.",
  "Off-CPU: the fraction of the run the producers and consumers were descheduled while they had work (gaps in their clock reads while spinning): theory assumes 0, and on a shared machine this is what moves the measurement away from it.",
];

/** The whole report as one HTML string. */
export async function renderReport(result: LabResult): Promise<string> {
  const svgs = await charts(result);
  const title = `interpreters lab: ${result.scenario}`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
<p class="meta">${escapeHtml(`run at ${result.startedAt} · ${result.machine.cpus} CPUs · Node ${result.machine.node} · load average ${result.machine.load.map((l) => l.toFixed(1)).join(" ")}`)}</p>
<h2>Results</h2>
<div class="table-wrap">${rowsTable(result)}</div>
<h2>Plots</h2>
<div class="charts">${svgs.map((svg) => `<figure>${svg}</figure>`).join("\n")}</div>
<h2>As printed</h2>
<pre>${escapeHtml(formatReport(result))}</pre>
<h2>How to read it</h2>
<ul class="notes">${NOTES.map((n) => `<li>${escapeHtml(n)}</li>`).join("")}</ul>
<h2>Options</h2>
<pre>${escapeHtml(JSON.stringify(result.options, null, 2))}</pre>
</body>
</html>
`;
}
