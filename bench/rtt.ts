/**
 * Round-trip latency.
 *
 * P3 (--topology ww): interpreter <-> interpreter over two channels of the
 * given capacity with sendSync/recvSync, vs a postMessage ping-pong between
 * two workers over a MessageChannel. The main thread only awaits.
 *
 * P4 (--topology main): the main thread (async send/recv, awaited one at a
 * time) to an interpreter that echoes with recvSync/sendSync, vs
 * worker.postMessage to a worker that echoes over parentPort.
 *
 *   node dist/bench/rtt.js --topology ww|main --system lib|pm [--capacity 0|1|64|Infinity]
 *
 * Each round trip carries its sequence number and is checked on return;
 * timed with performance.now() around it. Warm-up first, then a fixed time.
 */
import { MessageChannel } from "node:worker_threads";
import { create, createChannel } from "../src/index.js";
import { parseCapacity, phase, runChild, sized, count, summarize } from "./lib/common.js";
import type { RttOptions, RttReport } from "./lib/interp-side.js";
import { startPm } from "./lib/pm.js";

const INTERP_SIDE = new URL("./lib/interp-side.js", import.meta.url);

/**
 * Warm-up, then times single round trips (`roundTrip(n)` must resolve to n)
 * for opts.seconds (at least opts.minSamples): the measuring loop of both
 * main-side systems.
 */
async function timeRoundTrips(roundTrip: (n: number) => Promise<unknown>, opts: RttOptions): Promise<RttReport> {
  phase("warm-up");
  let bad = 0;
  let warmedUp = 0;
  const warmDeadline = performance.now() + opts.warmupSeconds * 1000;
  while (warmedUp < opts.warmup && performance.now() < warmDeadline) {
    if ((await roundTrip(warmedUp)) !== warmedUp) bad++;
    warmedUp++;
  }
  phase("measure");
  const lat = new Float64Array(opts.maxSamples);
  let n = 0;
  const start = performance.now();
  const deadline = start + opts.seconds * 1000;
  while (n < opts.maxSamples) {
    const t = performance.now();
    const v = await roundTrip(n);
    const t2 = performance.now();
    if (v !== n) bad++;
    lat[n++] = t2 - t;
    if (t2 >= deadline && n >= opts.minSamples) break;
  }
  const seconds = (performance.now() - start) / 1000;
  return { ...summarize(lat, n), seconds, bad, warmedUp };
}

async function mainSideLib(capacity: number, opts: RttOptions): Promise<RttReport> {
  phase("create interpreter");
  const interp = await create({ name: "echo" });
  const [pingRx, pingTx] = createChannel<number>({ capacity, name: `ping(${capacity})` });
  const [pongRx, pongTx] = createChannel<number>({ capacity, name: `pong(${capacity})` });
  const echoing = interp.call<number>(INTERP_SIDE, "echo", pingRx, pongTx);
  echoing.catch(() => {});
  const report = await timeRoundTrips(async (n) => {
    await pingTx.send(n);
    return pongRx.recv();
  }, opts);
  await pingTx.send(-1);
  const echoed = await echoing;
  if (echoed !== report.warmedUp + report.samples) report.bad++;
  await interp.terminate();
  return report;
}

async function mainSidePm(opts: RttOptions): Promise<RttReport> {
  phase("start worker");
  const w = startPm<unknown>("echo", {});
  await w.ready;
  let waiting: ((v: unknown) => void) | undefined;
  w.onOther = (v) => waiting!(v);
  const report = await timeRoundTrips(
    (n) =>
      new Promise((resolve) => {
        waiting = resolve;
        w.worker.postMessage(n);
      }),
    opts,
  );
  await w.terminate();
  return report;
}

runChild(async (args) => {
  const topology = args.topology ?? "ww";
  const system = args.system ?? "lib";
  const capacity = parseCapacity(args.capacity);
  const opts: RttOptions = { warmup: count(2000, 200), warmupSeconds: sized(0.3, 0.05), seconds: sized(0.75, 0.1), minSamples: count(2000, 200), maxSamples: 2_000_000 };
  let report: RttReport;
  if (topology === "main") {
    report = system === "lib" ? await mainSideLib(capacity, opts) : await mainSidePm(opts);
  } else if (system === "lib") {
    phase("create interpreters");
    const [a, b] = await Promise.all([create({ name: "ping" }), create({ name: "pong" })]);
    const [pingRx, pingTx] = createChannel<number>({ capacity, name: `ping(${capacity})` });
    const [pongRx, pongTx] = createChannel<number>({ capacity, name: `pong(${capacity})` });
    phase("run");
    let echoed: number;
    [report, echoed] = await Promise.all([
      a.call<RttReport>(INTERP_SIDE, "rttPing", pingTx, pongRx, { ...opts }),
      b.call<number>(INTERP_SIDE, "echo", pingRx, pongTx),
    ]);
    if (echoed !== report.warmedUp + report.samples) report.bad++;
    phase("terminate");
    await Promise.all([a.terminate(), b.terminate()]);
  } else {
    phase("start workers");
    const { port1, port2 } = new MessageChannel();
    const ping = startPm<RttReport>("ping", opts, port1);
    const pong = startPm<number>("pong", {}, port2);
    phase("run");
    let echoed: number;
    [report, echoed] = await Promise.all([ping.result, pong.result]);
    if (echoed !== report.warmedUp + report.samples) report.bad++;
    phase("terminate");
    await Promise.all([ping.terminate(), pong.terminate()]);
  }
  const metrics = {
    p50us: report.p50us,
    p99us: report.p99us,
    meanus: report.meanus,
    rtPerSec: report.samples / report.seconds,
    samples: report.samples,
  };
  const notes = `${report.samples} round trips checked after ${report.warmedUp} warm-up; mean ${report.meanus.toFixed(1)} µs, max ${report.maxus.toFixed(0)} µs`;
  return { metrics, notes, error: report.bad !== 0 ? `${report.bad} round trips returned the wrong value or counts differ` : undefined };
});
