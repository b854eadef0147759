/**
 * Review of overflow policies (channel-ops.ts SendOp.onFull, ring.ts
 * dropOldest): exactly once (each message dropped or delivered, never both,
 * never lost uncounted), order, and a send that must drop many messages.
 */
import { suite, assert } from "./_harness.js";
import { createChannel } from "../src/index.js";

const test = suite("review-overflow");

test("drop-oldest: a large message that needs many small ones dropped to fit goes in (no journal overflow), drops counted exactly", () => {
  const [rx, tx] = createChannel<number | Uint8Array>({ capacity: Infinity, overflow: "drop-oldest", bufferBytes: 4096, maxBufferBytes: 4096, name: "many-small" });
  let sent = 0;
  while (rx.stats().bytes + 24 <= 4096) {
    tx.sendSync(sent++);
  }
  assert.ok(sent > 100, `${sent} small messages fill the ring`);
  const big = new Uint8Array(3000).fill(7);
  tx.sendSync(big);
  const stats = rx.stats();
  const received: Array<number | Uint8Array> = [];
  for (let got = rx.tryRecv(); got.ok; got = rx.tryRecv()) received.push(got.value);
  const numbers = received.filter((v): v is number => typeof v === "number");
  assert.equal(received[received.length - 1], big, "the large message arrives last");
  assert.equal(numbers, Array.from({ length: numbers.length }, (_, i) => sent - numbers.length + i), "the newest small ones remain, in order");
  assert.is(stats.dropped, sent - numbers.length, "every small message not received was counted as dropped");
  assert.is(rx.stats().sent, sent + 1);
});

test.run();
