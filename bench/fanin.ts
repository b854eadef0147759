/**
 * `node dist/bench/fanin.js [--senders 4] [--capacity 8] [--work 5] [--messages 80000]`:
 * a fan-in, the shape of a pipeline stage fed by several producers. N
 * sender interpreters sendSync into one bounded channel; one receiver
 * interpreter takes each message, checks it is the next from its sender,
 * and works `work` µs on it. Reports messages/s and the wake-ups sent to
 * the senders per message taken (their park words, control.ts): one per
 * message at most when a freed slot wakes one sleeping sender
 * (channel-ops.ts WAKE_FOR_ROOM), about 1.9 with 4 senders when every
 * sender was woken for every slot. A diagnostic, not part of the table.
 */
import { create, createChannel, type RecvChannel, type SendChannel } from "../src/index.js";
import { slotOf, wakeupsSentTo } from "./lib/parties.js";
import { parseArgs } from "./lib/common.js";

export function fanInSend(tx: SendChannel<number>, count: number, me: number): number {
  for (let i = 0; i < count; i++) tx.sendSync(me * 1e7 + i);
  tx.close();
  return count;
}

export function fanInRecv(rx: RecvChannel<number>, workMicros: number): number {
  const next = new Map<number, number>();
  let n = 0;
  for (const value of rx) {
    const sender = Math.floor(value / 1e7);
    const i = value % 1e7;
    if ((next.get(sender) ?? 0) !== i) throw new Error(`sender ${sender}: message ${i} arrived when ${next.get(sender) ?? 0} was next`);
    next.set(sender, i + 1);
    n++;
    const until = performance.now() + workMicros / 1000;
    while (performance.now() < until);
  }
  return n;
}



const isMain = import.meta.url === new URL(process.argv[1]!, "file://").href;
if (isMain) {
  const args = parseArgs();
  const senders = Number(args.senders ?? 4);
  const capacity = Number(args.capacity ?? 8);
  const workMicros = Number(args.work ?? 5);
  const perSender = Math.ceil(Number(args.messages ?? 80_000) / senders);
  const self = new URL(import.meta.url);
  const producers = await Promise.all(Array.from({ length: senders }, (_, i) => create({ name: `sender-${i}` })));
  const consumer = await create({ name: "receiver" });
  const [rx, tx] = createChannel<number>({ capacity, name: "fan-in" });
  const slots = producers.map((p) => slotOf(p.id));
  const before = slots.map(wakeupsSentTo);
  const handles = producers.map(() => tx.clone());
  tx.close();
  const t0 = performance.now();
  const [received] = await Promise.all([
    consumer.call<number>(self, "fanInRecv", rx, workMicros),
    ...producers.map((p, i) => p.call<number>(self, "fanInSend", handles[i], perSender, i)),
  ]);
  const seconds = (performance.now() - t0) / 1000;
  const wakeups = slots.reduce((sum, slot, i) => sum + ((wakeupsSentTo(slot) - before[i]!) | 0), 0);
  console.log(
    `fan-in of ${senders} senders into capacity ${capacity}, ${workMicros} µs of work per message: ${received} messages in ${seconds.toFixed(2)} s = ${(received / seconds / 1000).toFixed(1)} k msgs/s; ${(wakeups / received).toFixed(2)} wake-ups sent to the senders per message`,
  );
  await Promise.all([...producers, consumer].map((i) => i.close()));
}
