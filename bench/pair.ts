/**
 * `node dist/bench/pair.js [--capacity 64] [--payload bytes64|object] [--seconds 1]`:
 * a diagnostic one-sender one-receiver run (the P1/P2 shape, any
 * capacity) that also reports the wake-ups sent to each side per message
 * (their park words): how often a full or empty channel put a party to
 * sleep. Not part of the table. Seen here: a few hundredths of a wake-up
 * per message at capacity 64 (each costing the sleeper 0.1-1 ms before it
 * runs again), none to the sender at capacity Infinity.
 */
import { create, createChannel, type RecvChannel, type SendChannel } from "../src/index.js";
import { payloadFor, type PayloadKind } from "./lib/payload.js";
import { parseArgs } from "./lib/common.js";
import { slotOf, wakeupsSentTo } from "./lib/parties.js";

export function pairSend(tx: SendChannel<unknown>, kind: PayloadKind, seconds: number): number {
  const payload = payloadFor(kind);
  const until = performance.now() + seconds * 1000;
  let n = 0;
  do {
    for (let k = 0; k < 256; k++) tx.sendSync(payload.make(n++));
  } while (performance.now() < until);
  tx.close();
  return n;
}

export function pairRecv(rx: RecvChannel<unknown>, kind: PayloadKind): number {
  const payload = payloadFor(kind);
  let n = 0;
  for (const value of rx) {
    if (!payload.check(value, n)) throw new Error(`message ${n} is wrong`);
    n++;
  }
  return n;
}

const isMain = import.meta.url === new URL(process.argv[1]!, "file://").href;
if (isMain) {
  const args = parseArgs();
  const capacity = Number(args.capacity ?? 64);
  const kind = (args.payload ?? "bytes64") as PayloadKind;
  const seconds = Number(args.seconds ?? 1);
  const self = new URL(import.meta.url);
  const [sender, receiver] = await Promise.all([create({ name: "sender" }), create({ name: "receiver" })]);
  const [rx, tx] = createChannel({ capacity, name: "pair" });
  const slots = [slotOf(sender.id), slotOf(receiver.id)];
  const before = slots.map(wakeupsSentTo);
  const t0 = performance.now();
  const [sent, received] = await Promise.all([sender.call<number>(self, "pairSend", tx, kind, seconds), receiver.call<number>(self, "pairRecv", rx, kind)]);
  const elapsed = (performance.now() - t0) / 1000;
  const [toSender, toReceiver] = slots.map((slot, i) => ((wakeupsSentTo(slot) - before[i]!) | 0) / received);
  if (sent !== received) throw new Error(`sent ${sent}, received ${received}`);
  console.log(
    `${kind} capacity ${capacity}: ${(received / elapsed / 1e6).toFixed(2)} M msgs/s; wake-ups per message: to the sender ${toSender!.toFixed(3)}, to the receiver ${toReceiver!.toFixed(3)}`,
  );
  await Promise.all([sender.close(), receiver.close()]);
}
