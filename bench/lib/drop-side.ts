/**
 * The interpreter side of bench/drop.ts: a producer sending 16 KiB messages
 * as fast as it can, and a checking consumer about 10x slower.
 */
import type { RecvChannel, SendChannel } from "../../src/index.js";
import { nowNs } from "./common.js";

const SIZE = 16 * 1024;

/** Sends for `seconds`, then closes; returns how many, and the mean time a send took. */
export function produce(tx: SendChannel<Uint8Array>, seconds: number): { sent: number; sendNs: number } {
  const message = new Uint8Array(SIZE);
  const view = new DataView(message.buffer);
  const t0 = nowNs();
  const deadline = t0 + seconds * 1e9;
  let sent = 0;
  do {
    for (let k = 0; k < 64; k++) {
      view.setUint32(0, sent, true);
      message[SIZE - 1] = sent & 255;
      tx.sendSync(message);
      sent++;
    }
  } while (nowNs() < deadline);
  const sendNs = (nowNs() - t0) / sent;
  tx.close();
  return { sent, sendNs };
}

/** Receives until the channel closes: checks that sequence numbers only increase, works ~10x a send per message. */
export function consume(rx: RecvChannel<Uint8Array>): { received: number; outOfOrder: number; workNs: number } {
  let received = 0;
  let outOfOrder = 0;
  let last = -1;
  // A send of 16 KiB takes ~2-4 µs here: 30 µs of work per message is ~10x.
  const workNs = 30_000;
  for (const message of rx) {
    const seq = new DataView(message.buffer, message.byteOffset).getUint32(0, true);
    if (seq <= last || message[SIZE - 1] !== (seq & 255) || message.length !== SIZE) outOfOrder++;
    last = seq;
    received++;
    const until = nowNs() + workNs;
    while (nowNs() < until) {
      /* work */
    }
  }
  return { received, outOfOrder, workNs };
}
