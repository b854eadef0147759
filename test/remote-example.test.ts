/**
 * examples/remote-pipeline.ts runs (from dist/: `npm run build` first, as
 * `npm test` does): a stage on another host (network namespaces when root,
 * else a second process), backpressure end to end: the source waits, and
 * the jobs in flight stay within the channels' capacities.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { suite, assert } from "./_harness.js";
import { natsMissing } from "../bench/remote-nats.js";

const test = suite("remote-example");
const example = fileURLToPath(new URL("../dist/examples/remote-pipeline.js", import.meta.url));
const missing = natsMissing() ?? (existsSync(example) ? undefined : "dist/examples/remote-pipeline.js is missing: npm run build first");

if (missing) {
  test(`the remote pipeline example runs, with backpressure end to end [SKIPPED: ${missing}]`, () => {});
} else {
  test(
    "the remote pipeline example runs, with backpressure end to end",
    async () => {
      const output = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [example], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d: Buffer) => (out += d));
        child.stderr.on("data", (d: Buffer) => (out += d));
        child.once("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`the example exited with ${code}:\n${out}`))));
      });
      const summary = /40 jobs through the stage in \d+ ms; the source waited (\d+) ms in all .*at most (\d+) jobs were in flight at once \(bound (\d+)/.exec(output);
      assert.ok(summary, `the example printed its summary:\n${output}`);
      const [, waited, most, bound] = summary!.map(Number);
      assert.ok(waited! > 200, `the source waited for the stage (${waited} ms):\n${output}`);
      assert.ok(most! <= bound!, `in flight ${most} within the bound ${bound}:\n${output}`);
    },
    { timeout: 120_000 },
  );
}

test.run();
