/**
 * The lab in real interpreters (short runs): every message accounted for
 * and in order, the contract's fields in every row, Little's law closing,
 * recv-loop's deadlocks caught with their cycle (and none at Infinity);
 * the command: bad options named, --json and nothing else on a pipe,
 * --out's three files. No speed is asserted (it is measured, not tested).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { suite, assert, seedFromEnv } from "./_harness.js";
import { LabOptionError, parseLabOptions, type LabOptions } from "../src/lab/options.js";
import { runLab } from "../src/lab/run.js";
import { formatReport, resultsToCsv, resultsToJson } from "../src/lab/table.js";

const test = suite("lab");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const CLI = join(repoRoot, "dist/src/cli/index.js");
const seed = seedFromEnv();
const quiet = { update() {} };

function options(argv: string[]): LabOptions {
  const parsed = parseLabOptions([...argv, "--seed", String(seed)]);
  if (parsed === "help") throw new Error("help");
  return parsed;
}

function run(args: string[], timeoutMs = 120_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`interpreters ${args.join(" ")} did not end within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("bad options are refused naming the option and what is allowed", () => {
  const cases: Array<[string[], RegExp]> = [
    [["--scenario", "tandem"], /--scenario: "tandem" is not a scenario; use pipeline, fan-in, bursty, recv-loop/],
    [["--capacities", "0,-1"], /--capacities: "-1" is not a capacity; each is 0, a positive integer or inf/],
    [["--capacities", ""], /--capacities/],
    [["--overflow", "drop"], /--overflow: "drop" is not a policy; use wait, drop-newest, drop-oldest, error/],
    [["--arrival", "exp:"], /--arrival/],
    [["--arrival", "burst:0@100"], /--arrival: "burst:0@100": the burst size N must be an integer >= 1/],
    [["--service", "exp:-5"], /--service: "exp:-5": the time \(microseconds\) must be a number > 0/],
    [["--messages", "10", "--seconds", "1"], /--messages and --seconds: give one of them/],
    [["--size", "15"], /--size: "15" is not an integer >= 16/],
    [["--producers", "0"], /--producers/],
    [["--forward", "1"], /--forward: "1": a probability from 0 to below 1/],
    [["--capacity", "4"], /Unknown option '--capacity'/],
    [["--scenario", "recv-loop", "--overflow", "drop-newest"], /recv-loop .* wait only/],
  ];
  for (const [argv, message] of cases) assert.throws(() => parseLabOptions(argv), LabOptionError, message);
  const o = options(["--capacities", "0,1,INF", "--overflow", "wait,drop-oldest", "--arrival", "burst:8@2000", "--service", "const:150"]);
  assert.equal(o.capacities, [0, 1, Infinity]);
  assert.equal(o.overflows, ["wait", "drop-oldest"]);
  assert.equal(o.arrival, { kind: "burst", size: 8, rate: 2000 });
  assert.equal(o.service, { kind: "const", us: 150 });
  assert.equal(parseLabOptions(["-h"]), "help");
});

test("pipeline: every message accounted for and in order; the contract's fields; Little's law closes", async () => {
  const result = await runLab(options(["--capacities", "0,4,inf", "--messages", "500", "--arrival", "exp:2500"]), quiet);
  assert.equal(result.rows.map((r) => r.capacity), [0, 4, Infinity]);
  for (const row of result.rows) {
    const where = `capacity ${row.capacity} (SEED=${seed})`;
    assert.equal([row.lost, row.outOfOrder], [0, 0], where);
    assert.equal(row.messages, 500, where);
    assert.ok(row.throughput > 0 && row.seconds > 0, where);
    assert.ok(row.predictedThroughput! > 0 && row.simulatedThroughput! > 0, where);
    assert.ok(row.latencyUs.p50 > 0 && row.latencyUs.p50 <= row.latencyUs.p99 && row.latencyUs.p99 <= row.latencyUs.p999, where);
    assert.ok(row.peakRingBytes > 0 && row.peakRssBytes > 0, where);
    assert.ok(row.senderBlockedFraction >= 0 && row.senderBlockedFraction <= 1.01, `${where}: blocked ${row.senderBlockedFraction}`);
    if (row.capacity !== Infinity) assert.ok(row.peakBuffered <= Math.max(1, row.capacity), `${where}: peak ${row.peakBuffered}`);
    // An instrumentation check, not a speed check: a wrong unit or a missed count is off by a factor of
    // 1000 or more; a loaded machine (biased sampling, a queue still growing) by tens of percent at most.
    const lambdaW = (row.throughput * row.little.meanTimeMs) / 1000;
    const ratio = row.little.meanInChannel / lambdaW;
    process.stdout.write(`  ${where}: Little's law error ${(row.littleLawError * 100).toFixed(1)}%\n`);
    if (row.capacity !== Infinity) assert.ok(ratio > 1 / 3 && ratio < 3, `${where}: L ${row.little.meanInChannel} vs lambda W ${lambdaW}`);
  }
  const text = formatReport(result);
  assert.match(text, /Little's law/);
  assert.match(text, /capacity\s+overflow\s+msgs\/s\s+theory/);
  const json = JSON.parse(resultsToJson(result)) as { rows: Array<Record<string, unknown>> };
  assert.equal(json.rows.map((r) => r.capacity), [0, 4, "Infinity"]);
  for (const key of ["capacity", "overflow", "messages", "seconds", "throughput", "predictedThroughput", "latencyUs", "meanBuffered", "peakBuffered", "peakRingBytes", "peakRssBytes", "senderBlockedFraction", "dropped", "littleLawError"]) {
    assert.ok(key in json.rows[0]!, key);
  }
  assert.equal(resultsToCsv(result).trim().split("\n").length, 4);
}, { timeout: 120_000 });

test("overflow policies: drop-newest and error lose messages, counted; M/M/C/K beside them; drop-oldest skips capacity 0", async () => {
  const result = await runLab(options(["--capacities", "0,2", "--overflow", "drop-newest,drop-oldest,error", "--messages", "300", "--arrival", "exp:8000"]), quiet);
  assert.equal(result.rows.map((r) => `${r.capacity} ${r.overflow}`), ["0 drop-newest", "2 drop-newest", "2 drop-oldest", "0 error", "2 error"]);
  assert.match(result.skipped.join(" "), /drop-oldest/);
  for (const row of result.rows) {
    const where = `capacity ${row.capacity}, ${row.overflow} (SEED=${seed})`;
    assert.equal([row.lost, row.outOfOrder], [0, 0], where);
    assert.equal(row.messages + row.dropped + row.refused, 300, where);
    assert.equal(row.prediction?.model, "M/M/C/K", where);
  }
}, { timeout: 120_000 });

test("fan-in: four producers into one consumer, per-producer order kept", async () => {
  const result = await runLab(options(["--scenario", "fan-in", "--capacities", "1", "--messages", "400"]), quiet);
  const [row] = result.rows;
  assert.equal([row!.lost, row!.outOfOrder, row!.messages], [0, 0, 400]);
  assert.equal(row!.prediction?.model, "tandem");
}, { timeout: 120_000 });

test("recv-loop: deadlocks are caught with their cycle through both inboxes; Infinity never deadlocks", async () => {
  const result = await runLab(options(["--scenario", "recv-loop", "--capacities", "0,inf", "--runs", "2", "--messages", "200", "--forward", "0.9"]), quiet);
  const [zero, infinite] = result.rows as [typeof result.rows[0], typeof result.rows[0]];
  // At capacity 0 both peers forwarding 90% of what they handle block on each other within a few messages.
  assert.ok(zero.deadlocks! >= 1, `capacity 0: ${zero.deadlocks} of ${zero.runs} runs deadlocked (SEED=${seed})`);
  const cycle = zero.deadlock!.cycle as Array<{ interpreter: { name: string }; op: string; channel?: { name: string } }>;
  const parties = new Map(cycle.map((p) => [p.interpreter.name, p]));
  assert.equal(parties.get("A")?.op, "send");
  assert.equal(parties.get("A")?.channel?.name, "inbox of B");
  assert.equal(parties.get("B")?.channel?.name, "inbox of A");
  assert.ok(zero.deadlock!.detectedAfterMs! > 0);
  assert.equal(infinite.deadlocks, 0);
  assert.equal(infinite.lost, 0);
  assert.equal(infinite.messages, 400);
  assert.match(formatReport(result), /inbox of B/);
}, { timeout: 120_000 });

test("the command: --json alone on a pipe; --out writes report.html, results.json, results.csv; errors exit 2", async () => {
  const out = mkdtempSync(join(tmpdir(), "interpreters-lab-"));
  try {
    const { code, stdout, stderr } = await run(["lab", "--capacities", "1,inf", "--messages", "300", "--json", "--out", out, "--seed", String(seed)]);
    assert.equal(code, 0, stderr);
    const parsed = JSON.parse(stdout) as { scenario: string; options: unknown; rows: Array<{ capacity: unknown }> };
    assert.equal(parsed.scenario, "pipeline");
    assert.equal(parsed.rows.map((r) => r.capacity), [1, "Infinity"]);
    assert.not.match(stderr, /\u2588|ETA/); // no progress bar off a terminal
    for (const file of ["report.html", "results.json", "results.csv"]) assert.ok(existsSync(join(out, file)), file);
    const html = readFileSync(join(out, "report.html"), "utf8");
    assert.ok((html.match(/<svg/g) ?? []).length >= 5, "five plots");
    assert.not.match(html, /<script|<link|<img|src=|url\(/i);
    const plain = await run(["lab", "--capacities", "0", "--messages", "200", "--seed", String(seed)]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /^pipeline: 1 producer/);
    assert.equal(plain.stderr, "");
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  const bad = await run(["lab", "--capacities", "x"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--capacities: "x" is not a capacity/);
  assert.equal(bad.stdout, "");
  const unknown = await run(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
}, { timeout: 180_000 });

test.run();
