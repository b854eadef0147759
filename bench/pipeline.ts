/**
 * `npm run bench:pipeline`: pipelines side by side with what a user would
 * do instead, in one run, as ratios:
 *
 *   A  two CPU-bound stages (~50 µs of work per item each), one worker each,
 *      vs the same work in one thread                          target >= 1.8x
 *   B  one CPU-bound stage with 2 workers vs one thread         target >= 1.8x
 *   C  per-hop cost with trivial stages (1-4 stages of x + 1): the wall time
 *      per item each added stage costs                          target <= 1 µs
 *      and 3 trivial transforms vs Node's stream.pipeline of 3 Transform
 *      streams in one thread                                   target >= 1x
 *   D  statistics on vs off (3 trivial stages)                  target >= 0.98x
 *   M  the machine's own ceiling: 2 plain worker_threads vs one thread (reference)
 *
 * Every case runs in a fresh process (bench/pipeline-case.ts), REPS rounds
 * round-robin (so that load drifts hit every case alike); each number is
 * the median over the rounds. Throughput is steady-state: items after the
 * first 5% of outputs, over the time they took (the interpreters' start is
 * reported apart, as "total"). The work per item is calibrated here (rounds
 * of an integer mix that take 50 µs on this machine) and given to every
 * child. Results go to bench/pipeline-results.md.
 *
 * Environment: BENCH_QUICK=1 (about 10x fewer items), BENCH_REPS (default 3).
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { QUICK, RESULT_PREFIX, fmtRate, median, sig, type ChildResult } from "./lib/common.js";
import { mix } from "./pipeline-stages.js";

const REPS = Number(process.env.BENCH_REPS ?? 3);
const scale = (n: number): number => Math.max(1000, Math.round(QUICK ? n / 10 : n));

/** Rounds of mix() that take `us` microseconds here (median of several measurements). */
function calibrate(us: number): number {
  let rounds = 1000;
  for (let i = 0; i < 5; i++) mix(i, 200_000); // warm the JIT
  const samples: number[] = [];
  for (let attempt = 0; attempt < 7; attempt++) {
    const t0 = performance.now();
    mix(attempt, 200_000);
    samples.push((performance.now() - t0) / 200_000);
  }
  const msPerRound = median(samples);
  rounds = Math.max(1, Math.round(us / 1000 / msPerRound));
  return rounds;
}

interface Case {
  name: string;
  items: number;
}

const CASES: Case[] = [
  // Pipelines run 8-10 s each: every interpreter compiles the library (TurboFan, about 700 compiles
  // over 3 isolates), which on 2 cores takes CPU from the stages for the first seconds; runs of
  // 30k items (3 s) measured that warm-up as much as the pipeline (12 µs of compiler CPU per item).
  { name: "cpu-pipeline-2x1", items: scale(100_000) },
  { name: "cpu-thread-2", items: scale(50_000) },
  { name: "cpu-pipeline-1x2", items: scale(200_000) },
  { name: "cpu-thread-1", items: scale(100_000) },
  { name: "cpu-workers-2", items: scale(200_000) },
  // The same with capacity 256 (the default is 16): how much the default's small batches cost.
  { name: "cpu-pipeline-2x1-c256", items: scale(100_000) },
  { name: "cpu-pipeline-1x2-c256", items: scale(200_000) },
  ...[1, 2, 3, 4].map((k) => ({ name: `trivial-pipeline-${k}`, items: scale(3_000_000) })),
  { name: "trivial-node-3", items: scale(3_000_000) },
  { name: "trivial-pipeline-3-objects", items: scale(1_500_000) },
  { name: "trivial-node-3-objects", items: scale(1_500_000) },
  { name: "trivial-pipeline-3-nostats", items: scale(3_000_000) },
];

function runCase(c: Case, env: NodeJS.ProcessEnv): Promise<ChildResult> {
  const script = fileURLToPath(new URL("./pipeline-case.js", import.meta.url));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, "--case", c.name, "--items", String(c.items)], { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 600_000);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const line = out.split("\n").find((l) => l.startsWith(RESULT_PREFIX));
      if (!line) resolve({ ok: false, metrics: {}, notes: "", error: `exit ${code ?? signal}: ${err.slice(-500)}` });
      else resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as ChildResult);
    });
  });
}

const rounds = calibrate(50);
const env = { ...process.env, PIPELINE_BENCH_SPIN: String(rounds) };
const results = new Map<string, ChildResult[]>();
const loads: number[] = [];
const started = Date.now();
for (let rep = 0; rep < REPS; rep++) {
  for (const c of CASES) {
    loads.push(loadavg()[0]!);
    const result = await runCase(c, env);
    if (!result.ok) process.stderr.write(`${c.name} (round ${rep + 1}) failed: ${result.error}\n`);
    results.set(c.name, [...(results.get(c.name) ?? []), result]);
    process.stderr.write(`round ${rep + 1}/${REPS} ${c.name}: ${result.ok ? `${fmtRate(result.metrics.itemsPerSec!)} items/s` : "failed"}\n`);
  }
}

const rate = (name: string): number => median((results.get(name) ?? []).filter((r) => r.ok).map((r) => r.metrics.itemsPerSec!));
const total = (name: string): number => median((results.get(name) ?? []).filter((r) => r.ok).map((r) => r.metrics.totalMs!));
const cpu = (name: string): number => median((results.get(name) ?? []).filter((r) => r.ok).map((r) => r.metrics.cpuUsPerItem!));

// Per-hop cost: least-squares slope of µs per item against the number of stages.
const ks = [1, 2, 3, 4];
const usPerItem = ks.map((k) => 1e6 / rate(`trivial-pipeline-${k}`));
const meanK = ks.reduce((a, b) => a + b, 0) / ks.length;
const meanUs = usPerItem.reduce((a, b) => a + b, 0) / ks.length;
const slope = ks.reduce((a, k, i) => a + (k - meanK) * (usPerItem[i]! - meanUs), 0) / ks.reduce((a, k) => a + (k - meanK) ** 2, 0);

interface Row {
  id: string;
  what: string;
  value: string;
  target: string;
  met: boolean;
}
const rows: Row[] = [];
const ratio = (a: string, b: string): number => rate(a) / rate(b);
const ceiling = ratio("cpu-workers-2", "cpu-thread-1");
rows.push({ id: "M", what: "the machine now: 2 plain worker_threads vs one thread, same work (the most any 2-thread design can get)", value: `${sig(ceiling)}x (${fmtRate(rate("cpu-workers-2"))} vs ${fmtRate(rate("cpu-thread-1"))} items/s)`, target: "(reference: 2x on an idle 2-core machine)", met: true });
const a = ratio("cpu-pipeline-2x1", "cpu-thread-2");
rows.push({ id: "A", what: "2 CPU stages (50 µs each), 1 worker each, vs one thread", value: `${sig(a)}x (${fmtRate(rate("cpu-pipeline-2x1"))} vs ${fmtRate(rate("cpu-thread-2"))} items/s); ${Math.round((a / ceiling) * 100)}% of M`, target: ">= 1.8x", met: a >= 1.8 });
const b = ratio("cpu-pipeline-1x2", "cpu-thread-1");
rows.push({ id: "B", what: "1 CPU stage (50 µs), 2 workers, vs one thread", value: `${sig(b)}x (${fmtRate(rate("cpu-pipeline-1x2"))} vs ${fmtRate(rate("cpu-thread-1"))} items/s); ${Math.round((b / ceiling) * 100)}% of M`, target: ">= 1.8x", met: b >= 1.8 });
const a256 = ratio("cpu-pipeline-2x1-c256", "cpu-thread-2");
rows.push({ id: "A'", what: "A with capacity 256 per stage (default 16)", value: `${sig(a256)}x (${fmtRate(rate("cpu-pipeline-2x1-c256"))} items/s); ${Math.round((a256 / ceiling) * 100)}% of M`, target: "(reference)", met: true });
const b256 = ratio("cpu-pipeline-1x2-c256", "cpu-thread-1");
rows.push({ id: "B'", what: "B with capacity 256 (default 16)", value: `${sig(b256)}x (${fmtRate(rate("cpu-pipeline-1x2-c256"))} items/s); ${Math.round((b256 / ceiling) * 100)}% of M`, target: "(reference)", met: true });
rows.push({ id: "C1", what: "per-hop cost, trivial stages (slope of µs per item over 1-4 stages)", value: `${sig(slope)} µs per item per stage (${usPerItem.map((u) => sig(u)).join(", ")} µs per item with 1-4 stages)`, target: "<= 1 µs", met: slope <= 1 });
const c2 = ratio("trivial-pipeline-3", "trivial-node-3");
rows.push({ id: "C2", what: "3 trivial transforms (numbers) vs Node stream.pipeline of 3 Transforms", value: `${sig(c2)}x (${fmtRate(rate("trivial-pipeline-3"))} vs ${fmtRate(rate("trivial-node-3"))} items/s)`, target: ">= 1x", met: c2 >= 1 });
const c3 = ratio("trivial-pipeline-3-objects", "trivial-node-3-objects");
rows.push({ id: "C3", what: "3 trivial transforms ({id, name} objects) vs Node stream.pipeline", value: `${sig(c3)}x (${fmtRate(rate("trivial-pipeline-3-objects"))} vs ${fmtRate(rate("trivial-node-3-objects"))} items/s)`, target: ">= 1x", met: c3 >= 1 });
const d = ratio("trivial-pipeline-3", "trivial-pipeline-3-nostats");
const dCpu = cpu("trivial-pipeline-3-nostats") / cpu("trivial-pipeline-3");
rows.push({
  id: "D",
  what: "statistics on vs off (3 trivial stages): throughput, and CPU per item (all threads, steady part; less sensitive to a busy machine)",
  value: `${sig(d)}x throughput (${fmtRate(rate("trivial-pipeline-3"))} vs ${fmtRate(rate("trivial-pipeline-3-nostats"))} items/s); ${sig(dCpu)}x by CPU (${sig(cpu("trivial-pipeline-3"))} vs ${sig(cpu("trivial-pipeline-3-nostats"))} µs per item)`,
  target: ">= 0.98x",
  met: dCpu >= 0.98,
});

const spread = (name: string): string => {
  const values = (results.get(name) ?? []).filter((r) => r.ok).map((r) => r.metrics.itemsPerSec!);
  return values.map((v) => fmtRate(v)).join(" / ");
};
const lines = [
  "# Pipeline benchmarks",
  "",
  `\`npm run bench:pipeline\`, ${new Date(started).toISOString()}, ${REPS} rounds${QUICK ? " (BENCH_QUICK)" : ""}, ${((Date.now() - started) / 1000).toFixed(0)} s; load average during the run: median ${sig(median(loads))}, max ${sig(Math.max(...loads))} (2 vCPUs shared with other work).`,
  `50 µs of work = ${rounds} rounds of the integer mix (calibrated at the start of the run).`,
  "",
  "| | what | measured (median of rounds) | target | met |",
  "|---|---|---|---|---|",
  ...rows.map((r) => `| ${r.id} | ${r.what} | ${r.value} | ${r.target} | ${r.met ? "yes" : "**no**"} |`),
  "",
  "| case | items | items/s (each round) | total ms incl. start (median) | CPU µs per item, all threads, steady part (median) |",
  "|---|---|---|---|---|",
  ...CASES.map((c) => `| ${c.name} | ${c.items} | ${spread(c.name)} | ${sig(total(c.name))} | ${sig(cpu(c.name))} |`),
  "",
  "Stage states in the last round (name, busy, back-pressured, idle ms/s):",
  "",
  ...CASES.filter((c) => c.name.includes("pipeline")).map((c) => `- ${c.name}: ${(results.get(c.name) ?? []).at(-1)?.notes ?? ""}`),
  "",
];
const text = lines.join("\n");
writeFileSync(fileURLToPath(new URL(QUICK ? "../../bench/pipeline-results-quick.md" : "../../bench/pipeline-results.md", import.meta.url)), text);
process.stdout.write(text);
