/**
 * `node dist/bench/legs.js`: where a single offloaded task's latency goes.
 * Main sends a request to one interpreter (async send), which receives it
 * (recvSync) and replies (sendSync); main awaits the reply. Each leg is
 * timed on the process-wide clock (performance.timeOrigin + now(), the same
 * in every thread): main's send to the interpreter's receive, the
 * interpreter's reply to main's receive, and the whole round. A diagnostic
 * for P6's latency, not part of the table.
 */
import { create, createChannel } from "../src/index.js";

const ROUNDS = 5000;
const interp = await create({ name: "echo" });
const [requests, requestsTx] = createChannel<number>({ name: "requests" });
const [replies, repliesTx] = createChannel<[number, number, number]>({ name: "replies" });
const running = interp.exec(
  `for (const m of r) { const got = performance.timeOrigin + performance.now(); t.sendSync([m, got, performance.timeOrigin + performance.now()]); } t.close();`,
  { bind: { r: requests, t: repliesTx } },
);
const clock = (): number => performance.timeOrigin + performance.now();
const there: number[] = [];
const back: number[] = [];
const total: number[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const start = clock();
  await requestsTx.send(i);
  const [echoed, received, replied] = await replies.recv({ timeout: 10_000 });
  const end = clock();
  if (echoed !== i) throw new Error(`reply ${echoed} for request ${i}`);
  there.push((received - start) * 1000);
  back.push((end - replied) * 1000);
  total.push((end - start) * 1000);
}
const quantile = (values: number[], q: number): string => values.sort((a, b) => a - b)[Math.floor((values.length - 1) * q)]!.toFixed(1);
for (const [leg, values] of [["main -> interpreter", there], ["interpreter -> main", back], ["round", total]] as const) {
  console.log(`${leg}: p50 ${quantile(values, 0.5)} µs, p90 ${quantile(values, 0.9)} µs, p99 ${quantile(values, 0.99)} µs, max ${quantile(values, 1)} µs`);
}
requestsTx.close();
await running;
await interp.close();
