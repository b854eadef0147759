/**
 * One-way throughput, interpreter -> interpreter (P1 64-byte Uint8Array,
 * P2 small objects, P5 1 MiB Uint8Array), this library or postMessage over
 * a MessageChannel whose ports were transferred to two workers.
 *
 *   node dist/bench/oneway.js --system lib|pm|ringbuf --payload bytes64|object|mib [--capacity 0|1|64|Infinity] [--batch N]
 *
 * `--batch N` (lib): sendManySync/recvManySync N at a time. `--system
 * ringbuf`: ringbuf.js, a lock-free SPSC ring (64-byte payload only), with
 * room for `capacity` framed messages.
 *
 * Warm-up: up to `warmup` messages or 0.25 s, then an end-of-warm-up marker
 * that the receiver acks (the sender waits for the ack). Measured: the sender sends for a fixed time (clock checked every
 * batch), then an end marker. Throughput is receiver-side: messages received
 * / (receiver's end - sender's start), on the process-wide monotonic clock.
 * The receiver checks every message (payload.ts) and the counts must match.
 * The main thread only awaits results meanwhile.
 */
import { MessageChannel } from "node:worker_threads";
import { create, createChannel } from "../src/index.js";
import { MiB, parseCapacity, phase, runChild, sized, count } from "./lib/common.js";
import type { OnewayOptions, RecvReport, SendReport } from "./lib/interp-side.js";
import { payloadFor, type PayloadKind } from "./lib/payload.js";
import { startPm } from "./lib/pm.js";

const INTERP_SIDE = new URL("./lib/interp-side.js", import.meta.url);

runChild(async (args) => {
  const system = args.system ?? "lib";
  const kind = (args.payload ?? "bytes64") as PayloadKind;
  const capacity = parseCapacity(args.capacity);
  const payload = payloadFor(kind);
  const opts: OnewayOptions = {
    kind,
    warmup: kind === "mib" ? count(100, 10) : count(20_000, 1000),
    warmupSeconds: sized(0.25, 0.05),
    seconds: sized(0.5, 0.1),
  };

  let sent: SendReport;
  let recv: RecvReport;
  const batch = args.batch ? Number(args.batch) : 0;
  if (system === "ringbuf") {
    if (kind !== "bytes64") throw new Error("the ringbuf.js row is for 64-byte messages");
    const { RingBuffer } = await import("ringbuf.js");
    const slots = Number.isFinite(capacity) && capacity > 0 ? capacity : 800;
    const sab = RingBuffer.getStorageForCapacity(slots * 65, Uint8Array);
    phase("create interpreters");
    const [a, b] = await Promise.all([create({ name: "sender" }), create({ name: "receiver" })]);
    phase("run");
    [sent, recv] = await Promise.all([a.call<SendReport>(INTERP_SIDE, "ringbufSend", sab, { ...opts }), b.call<RecvReport>(INTERP_SIDE, "ringbufRecv", sab, { ...opts })]);
    phase("terminate");
    await Promise.all([a.terminate(), b.terminate()]);
  } else if (system === "lib") {
    phase("create interpreters");
    const [a, b] = await Promise.all([create({ name: "sender" }), create({ name: "receiver" })]);
    const [rx, tx] = createChannel({ capacity, name: `data(${capacity})` });
    const [ackRx, ackTx] = createChannel({ capacity: 1, name: "ack" });
    phase("run");
    [sent, recv] = await Promise.all([
      a.call<SendReport>(INTERP_SIDE, batch > 0 ? "onewaySendMany" : "onewaySend", tx, ackRx, { ...opts, batch }),
      b.call<RecvReport>(INTERP_SIDE, batch > 0 ? "onewayRecvMany" : "onewayRecv", rx, ackTx, { ...opts, batch }),
    ]);
    phase("terminate");
    await Promise.all([a.terminate(), b.terminate()]);
  } else {
    phase("start workers");
    const { port1, port2 } = new MessageChannel();
    const s = startPm<SendReport>("oneway-send", opts, port1);
    const r = startPm<RecvReport>("oneway-recv", opts, port2);
    phase("run");
    [sent, recv] = await Promise.all([s.result, r.result]);
    phase("terminate");
    await Promise.all([s.terminate(), r.terminate()]);
  }

  const seconds = (recv.tEnd - sent.t0) / 1e9;
  const msgs = recv.received / seconds;
  const metrics = {
    msgsPerSec: msgs,
    MBps: (msgs * payload.bytes) / 1e6,
    received: recv.received,
    sendLoopMs: (sent.tLoopEnd - sent.t0) / 1e6,
    recvDoneMs: seconds * 1000,
    rssGrowthMiB: (sent.rssAfterLoop - sent.rssBefore) / MiB,
  };
  const notes = `${recv.received} msgs checked after ${recv.warmedUp} warm-up; sender loop ${metrics.sendLoopMs.toFixed(0)} ms, recv done ${metrics.recvDoneMs.toFixed(0)} ms; RSS +${metrics.rssGrowthMiB.toFixed(0)} MiB during send loop`;
  let error: string | undefined;
  if (recv.bad !== 0) error = `receiver found ${recv.bad} wrong messages`;
  else if (recv.received !== sent.sent) error = `sent ${sent.sent} but received ${recv.received}`;
  return { metrics, notes, error };
});
