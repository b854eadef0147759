/**
 * `node dist/examples/deadlock.js`: two interpreters that each wait for the
 * other (a classic request/response written the wrong way round). Instead
 * of hanging, both fail with DeadlockError naming the cycle.
 */
import { create, createChannel } from "interpreters";

const parser = await create({ name: "parser" });
const writer = await create({ name: "writer" });
const [requestsRx, requestsTx] = createChannel<string>({ capacity: 8, name: "requests" });
const [repliesRx, repliesTx] = createChannel<string>({ capacity: 0, name: "replies" });

// The parser waits for a reply before sending any request; the writer waits
// for a request before replying. Neither can go first.
const started = performance.now();
const results = await Promise.allSettled([
  parser.exec(`const reply = replies.recvSync(); requests.sendSync("next");`, { bind: { replies: repliesRx, requests: requestsTx } }),
  writer.exec(`const request = requests.recvSync(); replies.sendSync("ok");`, { bind: { requests: requestsRx, replies: repliesTx } }),
]);
const elapsed = performance.now() - started;
for (const [i, result] of results.entries()) {
  const who = i === 0 ? "parser" : "writer";
  if (result.status === "rejected") {
    const err = result.reason as { remote?: { name: string; message: string } };
    console.log(`${who}: ${err.remote?.name}\n  ${err.remote?.message}\n`);
  } else {
    console.log(`${who}: finished (unexpected)`);
  }
}
console.log(`reported after ${elapsed.toFixed(0)} ms (detection time: 1 s by default; configureDeadlockDetection({ after, mode }) changes it)`);
await parser.close();
await writer.close();
