/**
 * A log-processing pipeline over a generated access log of 1 GiB (by
 * default): the main thread splits the file into byte ranges at line ends;
 * "parse" (one worker per core) reads its range and parses every line into
 * columns; "filter" keeps the problem requests (5xx or slow); "aggregate"
 * counts them per route, with a latency histogram. The generator knows the
 * answer, so the output is checked: the program exits 1 if it differs.
 *
 *   npm run build && node dist/examples/pipeline-logs.js [--size MiB] [--file path] [--workers n]
 *
 * The file (and what it should give) is kept in the temporary directory and
 * reused by later runs (writing it is a pipeline too: "generate" makes
 * chunks in parallel). Progress goes to stderr; the report to stdout.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pipeline, stage } from "interpreters";
import { progress } from "./pipeline-progress.js";
import { canonical, emptyReport, LATENCY_BUCKETS, type LogReport, mergeReports, p99 } from "./stages/log-format.js";
import { CHUNK_TEXT_BYTES, type GeneratedChunk } from "./stages/log-generate.js";
import type { Range } from "./stages/log-parse.js";

const { values: options } = parseArgs({
  options: {
    size: { type: "string", default: "1024" },
    file: { type: "string" },
    workers: { type: "string", default: String(availableParallelism()) },
    seed: { type: "string", default: "20240501" },
  },
});
const sizeBytes = Math.round(Number(options.size) * 1024 * 1024);
const seed = Number(options.seed);
const file = options.file ?? join(tmpdir(), `interpreters-access-${options.size}MiB-${seed}.log`);
const CHUNK = 8 * 1024 * 1024;

// ---- the log file, and what it should give ----

/**
 * Writes the log (sizeBytes or a little more) with a pipeline of its own:
 * "generate" (one worker per core) makes 4 MiB chunks, the main thread
 * writes them in order. Returns what the pipeline below must find in it.
 */
async function generate(): Promise<LogReport> {
  const chunks = Math.ceil(sizeBytes / CHUNK_TEXT_BYTES);
  const report = emptyReport();
  const histogram = new Uint32Array(LATENCY_BUCKETS);
  const fd = openSync(file, "w");
  const bar = progress("generating", chunks, "chunks of 4 MiB");
  try {
    const writing = pipeline<GeneratedChunk>({
      name: "generate",
      source: Array.from({ length: chunks }, (_, index) => ({ seed, index })),
      stages: [stage(new URL("./stages/log-generate.js", import.meta.url), { name: "generate", workers: Math.max(1, Number(options.workers)), capacity: 2 })],
    });
    let done = 0;
    for await (const chunk of writing) {
      for (let written = 0; written < chunk.text.byteLength; ) written += writeSync(fd, chunk.text, written);
      mergeReports(report, chunk.report);
      for (let b = 0; b < LATENCY_BUCKETS; b++) histogram[b]! += chunk.histogram[b]!;
      bar.update(++done, {});
    }
    await writing.done;
  } finally {
    closeSync(fd);
    bar.stop();
  }
  report.problemP99Ms = p99(histogram);
  return report;
}

async function expectedReport(): Promise<LogReport> {
  const sidecar = `${file}.expected.json`;
  if (existsSync(file) && existsSync(sidecar)) {
    const saved = JSON.parse(readFileSync(sidecar, "utf8")) as { seed: number; sizeBytes: number; fileBytes: number; report: LogReport };
    if (saved.seed === seed && saved.sizeBytes === sizeBytes && statSync(file).size === saved.fileBytes) return saved.report;
  }
  process.stderr.write(`generating ${file} (${options.size} MiB, seed ${seed})\n`);
  const report = await generate();
  writeFileSync(sidecar, JSON.stringify({ seed, sizeBytes, fileBytes: statSync(file).size, report }));
  return report;
}

/** Byte ranges of about CHUNK bytes, each ending just after a newline. */
function* ranges(path: string): Generator<Range> {
  const size = statSync(path).size;
  const fd = openSync(path, "r");
  const probe = Buffer.alloc(4096);
  try {
    let start = 0;
    while (start < size) {
      let end = Math.min(size, start + CHUNK);
      if (end < size) {
        const n = readSync(fd, probe, 0, probe.length, end);
        const newline = probe.subarray(0, n).indexOf(0x0a);
        if (newline < 0) throw new Error(`no line end within 4 KiB after byte ${end}`);
        end += newline + 1;
      }
      yield { path, start, end };
      start = end;
    }
  } finally {
    closeSync(fd);
  }
}

// ---- the pipeline ----

const expected = await expectedReport();
const fileBytes = statSync(file).size;
const totalRanges = Math.ceil(fileBytes / CHUNK);
const workers = Math.max(1, Number(options.workers));
const started = performance.now();
const logs = pipeline<{ report: LogReport; histogram: Uint32Array }>({
  name: "logs",
  source: ranges(file),
  stages: [
    // Each item is an 8 MiB read: a short queue is plenty, and order does not matter for a count.
    stage(new URL("./stages/log-parse.js", import.meta.url), { name: "parse", workers, capacity: 2, order: "completion" }),
    stage(new URL("./stages/log-filter.js", import.meta.url), { name: "filter", capacity: 4 }),
    stage(new URL("./stages/log-aggregate.js", import.meta.url), { name: "aggregate" }),
  ],
});
const bar = progress("parsing", totalRanges, "ranges of 8 MiB");
logs.on("stats", (stats) => {
  const mib = (stats.stages[0]!.out * CHUNK) / 1024 / 1024;
  const seconds = stats.elapsedMs / 1000;
  bar.update(stats.stages[2]!.in, { speed: `${Math.round(mib / seconds)} MiB/s`, bottleneck: stats.bottleneck ?? "none" });
});

const report = emptyReport();
const histogram = new Uint32Array(LATENCY_BUCKETS);
for await (const share of logs) {
  mergeReports(report, share.report);
  for (let b = 0; b < LATENCY_BUCKETS; b++) histogram[b]! += share.histogram[b]!;
}
const stats = await logs.done;
bar.stop();
report.problemP99Ms = p99(histogram);
const seconds = (performance.now() - started) / 1000;

console.log(`${file}: ${(fileBytes / 1024 / 1024).toFixed(0)} MiB, ${report.lines.toLocaleString("en-US")} lines in ${seconds.toFixed(1)} s (${(fileBytes / 1024 / 1024 / seconds).toFixed(0)} MiB/s, ${workers} parse workers)`);
const problems = Object.values(report.routes).reduce((n, r) => n + r.problems, 0);
console.log(`problem requests (5xx or slower than 250 ms): ${problems.toLocaleString("en-US")}, p99 latency ${report.problemP99Ms} ms`);
for (const [route, r] of Object.entries(report.routes).sort((x, y) => y[1].problems - x[1].problems).slice(0, 5)) {
  console.log(`  ${route.padEnd(26)} ${String(r.problems).padStart(8)} (${r.errors} errors, ${r.slow} slow, ${(r.bytes / 1024 / 1024).toFixed(0)} MiB sent)`);
}
console.log("stages (busy / back-pressured / idle, ms per second of the run):");
for (const s of stats.stages) {
  console.log(`  ${s.name.padEnd(10)} ${String(s.workers).padStart(2)} worker(s)  in ${String(s.in).padStart(6)}  ${s.busyMsPerSecond} / ${s.backpressuredMsPerSecond} / ${s.idleMsPerSecond}  service p50 ${s.serviceUs.p50} µs`);
}
if (canonical(report) === canonical(expected)) {
  console.log("output checked: OK (the same report as the generator's)");
} else {
  console.log(`output checked: WRONG\n  expected ${canonical(expected)}\n  got      ${canonical(report)}`);
  process.exitCode = 1;
}
