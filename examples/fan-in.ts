/**
 * `node dist/examples/fan-in.js`: three producer interpreters at different
 * speeds, one consumer (main) taking from whichever is ready with select().
 * The choice among ready channels is random, so the fast producer cannot
 * starve the slow ones.
 */
import { ChannelClosedError, create, createChannel, select, type RecvChannel } from "interpreters";

const speeds = [{ name: "fast", every: 0 }, { name: "medium", every: 2 }, { name: "slow", every: 10 }];
const producers = await Promise.all(speeds.map((s) => create({ name: s.name })));
const inputs: RecvChannel<string>[] = [];
const runs = producers.map((producer, i) => {
  const [rx, tx] = createChannel<string>({ capacity: 4, name: speeds[i]!.name });
  inputs.push(rx);
  return producer.exec(
    `for (let k = 0; k < 50; k++) {
       if (every > 0) await new Promise((r) => setTimeout(r, every));
       await out.send(name + " #" + k);
     }
     out.close();`,
    { bind: { out: tx, every: speeds[i]!.every, name: speeds[i]!.name } },
  );
});

const counts = new Map<string, number>();
const firstTwenty: string[] = [];
const open = [...inputs];
while (open.length > 0) {
  try {
    const { value } = await select(open, { timeout: 30_000 });
    const from = String(value).split(" ")[0]!;
    counts.set(from, (counts.get(from) ?? 0) + 1);
    if (firstTwenty.length < 20) firstTwenty.push(String(value));
  } catch (err) {
    if (!(err instanceof ChannelClosedError)) throw err;
    for (let i = open.length - 1; i >= 0; i--) if (open[i]!.stats().closed) open.splice(i, 1);
  }
}
await Promise.all(runs);
console.log("first twenty received:", firstTwenty.join(", "));
console.log("received per producer:", Object.fromEntries(counts));
await Promise.all(producers.map((p) => p.close()));
