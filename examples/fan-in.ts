/**
 * `node dist/examples/fan-in.js`: fan-in with select(). Two producers that
 * are always ready ("a" and "b") and one that produces every 10 ms ("slow")
 * feed one consumer (main) that takes from whichever is ready. The choice
 * among ready channels is uniformly random: "a" and "b" get about half each,
 * and neither can starve "slow".
 */
import { ChannelClosedError, create, createChannel, Event, select, type RecvChannel } from "interpreters";

const producers = [
  { name: "a", every: 0, count: 2000 },
  { name: "b", every: 0, count: 2000 },
  { name: "slow", every: 10, count: 20 },
];
const go = new Event(); // so that all three start at the same moment
const interpreters = await Promise.all(producers.map((p) => create({ name: p.name })));
const inputs: RecvChannel<string>[] = [];
const runs = interpreters.map((interp, i) => {
  const { name, every, count } = producers[i]!;
  const [rx, tx] = createChannel<string>({ capacity: 4, name });
  inputs.push(rx);
  return interp.exec(
    `go.waitSync({ timeout: 30000 });
     for (let k = 0; k < count; k++) {
       if (every > 0) await new Promise((r) => setTimeout(r, every));
       await out.send(name);
     }
     out.close();`,
    { bind: { out: tx, every, count, name, go } },
  );
});

go.set();
const counts: Record<string, number> = { a: 0, b: 0, slow: 0 };
const WINDOW = 2000; // while both "a" and "b" still have plenty to send
let aInWindow = 0;
let whenSlowDone = 0;
let received = 0;
const open = [...inputs];
while (open.length > 0) {
  try {
    const { value } = await select(open, { timeout: 30_000 });
    counts[value as string]! += 1;
    received++;
    if (received <= WINDOW && value === "a") aInWindow++;
    if (value === "slow" && counts.slow === producers[2]!.count) whenSlowDone = received;
  } catch (err) {
    if (!(err instanceof ChannelClosedError)) throw err;
    for (let i = open.length - 1; i >= 0; i--) if (open[i]!.stats().closed) open.splice(i, 1);
  }
}
await Promise.all(runs);
const aShare = (100 * aInWindow) / WINDOW;
console.log(`received ${received} messages: a ${counts.a}, b ${counts.b}, slow ${counts.slow}`);
console.log(`of the first ${WINDOW} (both "a" and "b" always ready): a ${aShare.toFixed(1)}%, b and slow ${(100 - aShare).toFixed(1)}%`);
console.log(`all of "slow"'s messages were taken by message ${whenSlowDone} of ${received}: never starved by the busy ones`);
await Promise.all(interpreters.map((p) => p.close()));
