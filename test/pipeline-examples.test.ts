/**
 * The pipeline examples run and check their own output: the log pipeline
 * over a small generated file (the example's default is 1 GiB; `npm start`
 * material, too slow for the suite) and the CPU-heavy hashing pipeline on
 * a few blocks. They run the built code (dist/), as users would.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { assert, suite, withTimeout } from "./_harness.js";

const test = suite("pipeline examples");
const root = fileURLToPath(new URL("..", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "interpreters-pipeline-examples-"));

function run(script: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const path = join(root, "dist/examples", script);
  if (!existsSync(path)) throw new Error(`${path} is missing: run npm run build first`);
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, [path, ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d) => (stdout += d));
      child.stderr.on("data", (d) => (stderr += d));
      child.on("exit", (code) => resolve({ code, stdout, stderr }));
    }),
    100_000,
    script,
  );
}

test("the log pipeline parses, filters and aggregates a generated log, and its report is the generator's", async () => {
  const file = join(dir, "access.log");
  const { code, stdout, stderr } = await run("pipeline-logs.js", ["--size", "24", "--file", file]);
  assert.is(code, 0, stdout + stderr);
  assert.match(stdout, /output checked: OK/);
  assert.match(stdout, /parse +\d worker/);
  assert.match(stderr, /generating/); // progress, on stderr
}, { timeout: 110_000 });

test("the hashing pipeline gives the same digests as one thread and reports its speed-up", async () => {
  const { code, stdout, stderr } = await run("pipeline-hash.js", ["--blocks", "24"]);
  assert.is(code, 0, stdout + stderr);
  assert.match(stdout, /output checked: OK/);
  assert.match(stdout, /speed-up: \d+\.\d\dx/);
}, { timeout: 110_000 });

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
