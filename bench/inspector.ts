/**
 * What the inspector costs a running program: a ping-pong between two
 * interpreters (capacity 0, sendSync/recvSync, each message a sequence
 * number checked on return) measured in windows of equal length, with
 * the inspector off and on in turn (off, on, off, on, ...), in one run.
 *
 * "On" is what a user watching does: serveInspector() in the main thread
 * and a page subscribed to /events (10 snapshots a second), here a
 * separate process that reads the stream and parses every snapshot as
 * the page's script does. With --chromium, a third condition: the real
 * page in headless Chromium (which also draws, on the same two cores).
 *
 *   node dist/bench/inspector.js [--seconds 2] [--pairs 6] [--chromium]
 *
 * Prints round trips per second for every window, the median of each
 * condition and the cost: 1 - on / off (median of the per-pair ratios).
 * Target: at most 3%.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { create, createChannel, inspect, serveInspector, type Inspector } from "../src/index.js";
import { snapshotToJson } from "../src/inspect/types.js";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "2" },
    pairs: { type: "string", default: "6" },
    chromium: { type: "boolean", default: false },
  },
});
const windowMs = Number(values.seconds) * 1000;
const pairs = Number(values.pairs);

const counters = new Int32Array(new SharedArrayBuffer(16)); // [0] stop flag, [1] round trips, [2] bad replies
const pinger = await create({ name: "pinger" });
const ponger = await create({ name: "ponger" });
const [pingRx, pingTx] = createChannel<number>({ capacity: 0, name: "ping" });
const [pongRx, pongTx] = createChannel<number>({ capacity: 0, name: "pong" });
const pinging = pinger.exec(
  `const c = new Int32Array(counters);
   for (let n = 1; Atomics.load(c, 0) === 0; n++) {
     ping.sendSync(n);
     if (pong.recvSync() !== n) Atomics.add(c, 2, 1);
     Atomics.store(c, 1, n);
   }
   ping.sendSync(-1);`,
  { bind: { ping: pingTx, pong: pongRx, counters: counters.buffer } },
);
const ponging = ponger.exec(`for (let n; (n = ping.recvSync()) !== -1; ) pong.sendSync(n);`, { bind: { ping: pingRx, pong: pongTx } });

/** A page's worth of work in another process: read /events, parse every snapshot. */
function startWatcher(url: string): ChildProcess {
  const script = `
    const http = require("node:http");
    let buffer = "", frames = 0, base = process.cpuUsage();
    http.get(${JSON.stringify(`${url}events`)}, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\\n\\n")) >= 0) {
          const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
          const line = event.split("\\n").find((l) => l.startsWith("data: "));
          if (line) { JSON.parse(line.slice(6)); if (frames++ === 0) base = process.cpuUsage(); }
        }
      });
    });
    // CPU from the first frame on: the process's own start-up is not the inspector's cost.
    process.on("SIGTERM", () => { const cpu = process.cpuUsage(base); process.stdout.write(frames + " " + (cpu.user + cpu.system)); process.exit(0); });
  `;
  return spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
}

/** Stops the watcher; returns the frames it parsed and the CPU time it used (ms). */
async function stopWatcher(child: ChildProcess): Promise<{ frames: number; cpuMs: number }> {
  let out = "";
  child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  child.kill("SIGTERM");
  await exited;
  const [frames, cpuUs] = out.trim().split(" ").map(Number);
  return { frames: frames || 0, cpuMs: (cpuUs || 0) / 1000 };
}

type Condition = "off" | "on" | "chromium";
interface Window {
  condition: Condition;
  roundTripsPerSecond: number;
  frames: number;
  /** Ms spent taking snapshots and writing their JSON in this process (wall time: an upper bound on the CPU it took, supervisor included). */
  snapshotMs: number;
  /** Ms of CPU the watching page's process used (the SSE watcher; not measured for Chromium). */
  watcherCpuMs: number;
  seconds: number;
}

async function chromiumPage(url: string): Promise<() => Promise<{ frames: number; cpuMs: number }>> {
  const { chromium } = await import("playwright-core");
  const profile = mkdtempSync(join(tmpdir(), "interpreters-bench-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = await context.newPage();
  await page.goto(url);
  // Strings: these run in the page, where `document` exists (not in this program's types).
  await page.waitForFunction('Number(document.body.getAttribute("data-frames")) >= 3');
  return async () => {
    const frames = Number(await page.evaluate('document.body.getAttribute("data-frames")'));
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    return { frames, cpuMs: 0 };
  };
}

async function measure(condition: Condition): Promise<Window> {
  let inspector: Inspector | undefined;
  let stop: (() => Promise<{ frames: number; cpuMs: number }>) | undefined;
  let snapshotMs = 0;
  let counting = false;
  if (condition !== "off") {
    // What the inspector does per snapshot, timed: inspect() (the supervisor builds it) and the JSON (timed here, redone by the server).
    const source = () => {
      const started = performance.now();
      const snapshot = inspect();
      snapshotToJson(snapshot);
      if (counting) snapshotMs += performance.now() - started;
      return snapshot;
    };
    inspector = await serveInspector({ source });
    if (condition === "on") {
      const watcher = startWatcher(inspector.url);
      stop = () => stopWatcher(watcher);
    } else {
      stop = await chromiumPage(inspector.url);
    }
    // Let the watcher connect and the first snapshots flow before the window opens.
    await new Promise((resolve) => setTimeout(resolve, 500));
  } else {
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const before = Atomics.load(counters, 1);
  const started = performance.now();
  counting = true;
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  counting = false;
  const after = Atomics.load(counters, 1);
  const elapsed = (performance.now() - started) / 1000;
  const watched = stop ? await stop() : { frames: 0, cpuMs: 0 };
  await inspector?.close();
  // The watcher ran 0.5 s before the window too: its CPU is counted over its whole life.
  return { condition, roundTripsPerSecond: (after - before) / elapsed, frames: watched.frames, snapshotMs, watcherCpuMs: watched.cpuMs, seconds: elapsed };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

// Warm-up: JIT and spin budgets settle.
await new Promise((resolve) => setTimeout(resolve, 1500));
const conditions: Condition[] = values.chromium ? ["off", "on", "chromium"] : ["off", "on"];
const windows: Window[] = [];
for (let pair = 0; pair < pairs; pair++) {
  // Alternate which condition goes first, so a drift in the machine's speed does not favour one.
  const order = pair % 2 === 0 ? conditions : [...conditions].reverse();
  for (const condition of order) {
    const w = await measure(condition);
    windows.push(w);
    process.stdout.write(`pair ${pair + 1} ${condition.padEnd(8)} ${Math.round(w.roundTripsPerSecond).toLocaleString("en-US").padStart(10)} round trips/s${w.frames ? `  (${w.frames} snapshots drawn/parsed by the page)` : ""}\n`);
  }
}
Atomics.store(counters, 0, 1);
await Promise.all([pinging, ponging]);
await Promise.all([pinger.close(), ponger.close()]);
const bad = Atomics.load(counters, 2);

const off = windows.filter((w) => w.condition === "off").map((w) => w.roundTripsPerSecond);
const summary: string[] = [];
const spread = (values: number[]) => (Math.max(...values) - Math.min(...values)) / median(values);
summary.push(`\nping-pong, capacity 0, ${pairs} pairs of ${windowMs / 1000} s windows; replies checked: ${bad} wrong; load average ${loadavg().map((l) => l.toFixed(1)).join(" ")}`);
summary.push(`off (no inspector)           median ${Math.round(median(off)).toLocaleString("en-US")} round trips/s (windows spread ${(spread(off) * 100).toFixed(0)}% of the median)`);
for (const condition of conditions.filter((c) => c !== "off")) {
  const on = windows.filter((w) => w.condition === condition).map((w) => w.roundTripsPerSecond);
  // Per-pair ratio against the off window of the same pair, then the median over pairs.
  const ratios = on.map((value, i) => value / off[i]!);
  const cost = 1 - median(ratios);
  const label = condition === "on" ? "on (page watching: SSE)" : "on (page in Chromium)";
  // A cost smaller than the machine's own noise cannot be told from it: say so rather than claim a result.
  const sorted = [...ratios].sort((a, b) => a - b);
  const iqr = sorted[Math.floor(sorted.length * 0.75)]! - sorted[Math.floor(sorted.length * 0.25)]!;
  const verdict = iqr > 0.03 ? `inconclusive: the per-pair ratios spread ${(iqr * 100).toFixed(0)}% (interquartile), more than the 3% target` : cost <= 0.03 ? "met" : "missed";
  summary.push(`${label.padEnd(28)} median ${Math.round(median(on)).toLocaleString("en-US")} round trips/s; cost ${(cost * 100).toFixed(1)}% (per-pair ratios ${ratios.map((r) => r.toFixed(3)).join(" ")})${condition === "on" ? `; target <= 3%: ${verdict}` : ""}`);
  if (condition === "on") {
    const watched = windows.filter((w) => w.condition === "on");
    const seconds = watched.reduce((n, w) => n + w.seconds, 0);
    const snapshots = watched.reduce((n, w) => n + w.snapshotMs, 0);
    const watcher = watched.reduce((n, w) => n + w.watcherCpuMs, 0);
    summary.push(
      `  its work, measured directly: taking and serializing snapshots ${(snapshots / seconds / 10).toFixed(2)}% of one core (wall time, an upper bound), the watching page's process ${(watcher / (seconds + 0.5 * watched.length) / 10).toFixed(2)}% of one core (parsing every snapshot, from its first on): ${((snapshots / seconds + watcher / (seconds + 0.5 * watched.length)) / (10 * cpus().length)).toFixed(2)}% of this machine's ${cpus().length} cores, the most it can take from the ping-pong`,
    );
  }
}
process.stdout.write(summary.join("\n") + "\n");
if (bad > 0) process.exitCode = 1;
