/**
 * `npm run bench:pool`: InterpreterPool against tinypool used directly and
 * piscina, side by side in one run: tiny tasks, 2 threads each, tasks/s
 * with 64 in flight, p50/p99 latency of one task at a time, and the time
 * to the first result of a new pool; with a number in and out, and with a
 * small object in and out (the pool's codec path). Also tinypool configured as the pool
 * configures it (`useAtomics: false`), which separates what that choice
 * costs from what the pool's own layer costs.
 *
 * Every system runs in a fresh child process (bench/pool-child.ts), the
 * list REPS times round-robin so that load drifts hit every system alike;
 * each number is the median over the repetitions, ratios are of medians.
 *
 * Environment: BENCH_QUICK=1 (about 10x shorter), BENCH_REPS=n (default 5),
 * BENCH_TIMEOUT=seconds per child (default 60).
 */
import { spawn } from "node:child_process";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { QUICK, RESULT_PREFIX, fmtRate, median, sig, type ChildResult } from "./lib/common.js";

const REPS = Number(process.env.BENCH_REPS ?? (QUICK ? 2 : 5));
const CHILD_TIMEOUT_S = Number(process.env.BENCH_TIMEOUT ?? 60);
const PAYLOADS = [
  { id: "number", label: "a number in and out" },
  { id: "object", label: "a small object in and out ({ id, name, values: [4] })" },
];
const SYSTEMS = [
  { id: "pool", label: "InterpreterPool (2 interpreters)" },
  { id: "tinypool", label: "tinypool, defaults (useAtomics)" },
  { id: "tinypool-events", label: "tinypool, useAtomics: false (as the pool sets it)" },
  { id: "piscina", label: "piscina, defaults" },
];

function runChildProcess(system: string, payload: string): Promise<ChildResult & { load: number }> {
  const script = fileURLToPath(new URL("./pool-child.js", import.meta.url));
  const load = loadavg()[0]!;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [script, "--system", system, "--payload", payload], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-8000)));
    const timer = setTimeout(() => child.kill("SIGKILL"), CHILD_TIMEOUT_S * 1000);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split("\n").reverse().find((l) => l.startsWith(RESULT_PREFIX));
      if (!line) {
        const phase = stderr.split("\n").reverse().find((l) => l.startsWith("[phase]")) ?? "?";
        resolve({ ok: false, metrics: {}, notes: "", error: `no result (code ${code}, signal ${signal}, last ${phase}): ${stderr.slice(-300)}`, load });
        return;
      }
      resolve({ ...(JSON.parse(line.slice(RESULT_PREFIX.length)) as ChildResult), load });
    });
  });
}

const key = (payload: string, system: string): string => `${payload}/${system}`;
const results = new Map<string, Array<ChildResult & { load: number }>>();
const started = Date.now();
for (let rep = 0; rep < REPS; rep++) {
  for (const payload of PAYLOADS) {
    for (const system of SYSTEMS) {
      const result = await runChildProcess(system.id, payload.id);
      const list = results.get(key(payload.id, system.id)) ?? [];
      list.push(result);
      results.set(key(payload.id, system.id), list);
      const m = result.metrics;
      process.stderr.write(
        result.ok
          ? `rep ${rep + 1}/${REPS} ${payload.id} ${system.id}: ${fmtRate(m.tasksPerSec!)} tasks/s, p50 ${sig(m.p50us!)} µs, p99 ${sig(m.p99us!)} µs, first result ${sig(m.coldMs!)} ms (load ${result.load.toFixed(1)})\n`
          : `rep ${rep + 1}/${REPS} ${payload.id} ${system.id}: FAILED ${result.error}\n`,
      );
    }
  }
}

const med = (k: string, metric: string): number => median((results.get(k) ?? []).filter((r) => r.ok).map((r) => r.metrics[metric]!));
const failures = [...results.entries()].flatMap(([k, rs]) => rs.filter((r) => !r.ok).map((r) => `${k}: ${r.error}`));
const loads = [...results.values()].flat().map((r) => r.load);
const ratio = (a: number, b: number): string => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${sig(a / b)}x` : "—");

const lines: string[] = [];
lines.push(`Tiny tasks on 2 threads; medians of ${REPS} repetitions (round-robin, a fresh process each); load average ${sig(Math.min(...loads))}-${sig(Math.max(...loads))}; ${new Date().toISOString()}, ${((Date.now() - started) / 1000).toFixed(0)} s.`);
for (const payload of PAYLOADS) {
  const poolRate = med(key(payload.id, "pool"), "tasksPerSec");
  const poolP50 = med(key(payload.id, "pool"), "p50us");
  lines.push("");
  lines.push(`${payload.label}:`);
  lines.push("");
  lines.push("| system | tasks/s (64 in flight) | pool ÷ this | p50 µs (1 in flight) | p99 µs | pool p50 ÷ this | first result, ms |");
  lines.push("|---|---|---|---|---|---|---|");
  for (const system of SYSTEMS) {
    const k = key(payload.id, system.id);
    const rate = med(k, "tasksPerSec");
    const p50 = med(k, "p50us");
    const self = system.id === "pool";
    lines.push(`| ${system.label} | ${fmtRate(rate)} | ${self ? "1" : ratio(poolRate, rate)} | ${sig(p50)} | ${sig(med(k, "p99us"))} | ${self ? "1" : ratio(poolP50, p50)} | ${sig(med(k, "coldMs"))} |`);
  }
}
if (failures.length > 0) {
  lines.push("");
  lines.push(`Failed repetitions (not in the medians): ${failures.join("; ")}`);
}
process.stdout.write(`${lines.join("\n")}\n`);
process.exitCode = failures.length > 0 ? 1 : 0;
