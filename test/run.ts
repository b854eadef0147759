/**
 * Runs every `test/*.test.ts` file in its own Node process (so one file's
 * leftovers cannot affect another), two at a time, and prints uvu's output of
 * each followed by a last line `N passed, N failed` that sums them all.
 *
 * A file that crashes or outlives FILE_TIMEOUT_MS counts as one failure on
 * top of whatever it reported. Usage: `node --import tsx test/run.ts [filter]`.
 */
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const FILE_TIMEOUT_MS = Number(process.env.FILE_TIMEOUT_MS ?? 8 * 60_000);
const PARALLEL = Number(process.env.TEST_PARALLEL ?? 2);
const here = dirname(fileURLToPath(import.meta.url));
const filter = process.argv[2];
const files = readdirSync(here)
  .filter((f) => f.endsWith(".test.ts") && (!filter || f.includes(filter)))
  .sort();

interface FileResult { file: string; passed: number; failed: number; output: string; crashed?: string }

function runFile(file: string): Promise<FileResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", join(here, "_entry.ts"), join(here, file)], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, FORCE_COLOR: "0" },
    });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => {
      output += `\n[run] ${file} outlived ${FILE_TIMEOUT_MS} ms; killed\n`;
      child.kill("SIGKILL");
    }, FILE_TIMEOUT_MS);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      const total = Number(/Total:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const passed = Number(/Passed:\s+(\d+)/.exec(output)?.[1] ?? 0);
      const skipped = Number(/Skipped:\s+(\d+)/.exec(output)?.[1] ?? 0);
      let failed = Math.max(0, total - passed - skipped);
      let crashed: string | undefined;
      if (signal || (code !== 0 && failed === 0) || (total === 0 && skipped === 0)) {
        crashed = signal ? `killed by ${signal}` : `exit code ${code}`;
        failed += 1;
      }
      resolve({ file, passed, failed, output, crashed });
    });
  });
}

const results: FileResult[] = [];
let next = 0;
async function worker(): Promise<void> {
  while (next < files.length) {
    const file = files[next++]!;
    const r = await runFile(file);
    results.push(r);
    process.stdout.write(`\n=== ${file} ===\n${r.output}`);
    if (r.crashed) process.stdout.write(`[run] ${file}: ${r.crashed}\n`);
  }
}
const started = Date.now();
await Promise.all(Array.from({ length: Math.min(PARALLEL, files.length) }, worker));
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
for (const r of results) if (r.failed) process.stdout.write(`[run] FAILED in ${r.file}: ${r.failed}\n`);
process.stdout.write(`\n${files.length} files in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
