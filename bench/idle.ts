/**
 * P8: an idle receiver blocked past its spin window. One interpreter sits
 * in recvSync on a channel nobody sends to; after a settle period the main
 * thread (idle: it only awaits a timer) measures process.cpuUsage() over
 * ~2 s of wall time, the whole process (every thread) included. The
 * interpreter must still be waiting at both ends of the window
 * (stats().waitingReceivers), and must then receive the message sent to
 * release it.
 *
 * pm (a reference, not a comparison): a worker waiting for a message on
 * parentPort, same window.
 *
 *   node dist/bench/idle.js --system lib|pm
 */
import { create, createChannel } from "../src/index.js";
import { phase, runChild, sized, sleep } from "./lib/common.js";
import { startPm } from "./lib/pm.js";

const INTERP_SIDE = new URL("./lib/interp-side.js", import.meta.url);

async function window(seconds: number): Promise<{ cpuPercent: number; wallMs: number; cpuMs: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - t0;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  return { cpuPercent: (cpuMs / wallMs) * 100, wallMs, cpuMs };
}

runChild(async (args) => {
  const system = args.system ?? "lib";
  const seconds = sized(2.0, 0.5);
  let measured: { cpuPercent: number; wallMs: number; cpuMs: number };
  let error: string | undefined;
  if (system === "lib") {
    phase("create interpreter");
    const interp = await create({ name: "idle" });
    const [rx, tx] = createChannel<string>({ capacity: 0, name: "never" });
    const receiving = interp.call<string>(INTERP_SIDE, "idleRecv", rx);
    receiving.catch(() => {});
    phase("settle");
    while (tx.stats().waitingReceivers < 1) await sleep(5);
    await sleep(300);
    phase("measure");
    measured = await window(seconds);
    const still = tx.stats().waitingReceivers;
    if (still !== 1) error = `the receiver was not waiting at the end of the window (waitingReceivers=${still})`;
    phase("release");
    await tx.send("wake up");
    const got = await receiving;
    if (got !== "wake up") error = `the receiver got ${JSON.stringify(got)}`;
    await interp.terminate();
  } else {
    phase("start worker");
    const w = startPm<string>("idle", {});
    await w.ready;
    await sleep(300);
    phase("measure");
    measured = await window(seconds);
    w.worker.postMessage("wake up");
    const got = await w.result;
    if (got !== "wake up") error = `the worker got ${JSON.stringify(got)}`;
    await w.terminate();
  }
  const metrics = { cpuPercent: measured.cpuPercent, cpuMs: measured.cpuMs, wallMs: measured.wallMs };
  const notes = `${measured.cpuMs.toFixed(1)} ms CPU (all threads) over ${measured.wallMs.toFixed(0)} ms wall`;
  return { metrics, notes, error };
});
