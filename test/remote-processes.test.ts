/**
 * Remote channels across processes (test/fixtures/remote-party.ts), with
 * the test's own nats-server on 127.0.0.1:
 *
 * 1. The matrix: channels of capacity 1, 7 and Infinity, two sender and two
 *    receiver processes on each (one sender sending with sendSync from an
 *    interpreter), every message received exactly once, each sender's
 *    messages in order at every receiver; every process exits on its own.
 * 2. A receiver process killed while it holds messages: they are delivered
 *    to another receiver after ackWait (at-least-once; lost = 0).
 * 3. A sender process killed without closing: the channel closes for the
 *    receivers once its lease has run out, as if it had closed its end.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, connectChannel, remoteChannelStats } from "../src/index.js";
import { natsMissing, startNats, type NatsServer } from "../bench/remote-nats.js";
import { spawnParty } from "./fixtures/remote-spawn.js";
import { check, describe } from "./fixtures/remote-check.js";

const test = suite("remote-processes");
const missing = natsMissing();
let server: NatsServer;

test.before(async () => {
  if (!missing) server = await startNats();
});
test.after(async () => {
  await server?.stop();
});

function remoteTest(name: string, body: () => Promise<void>, timeout = 120_000): void {
  if (missing) test(`${name} [SKIPPED: ${missing}]`, () => {});
  else test(name, body, { timeout });
}

remoteTest("capacities 1, 7, Infinity: 2 sender and 2 receiver processes, every message once, per-sender order, everyone exits", async () => {
  const channels = [1, 7, Infinity].map((capacity) => ({ name: `matrix-${capacity}-${process.pid}`, capacity }));
  const count = 80;
  const senders = [
    spawnParty({ servers: server.url, role: "send", channels, tag: "A", count, mode: "async" }),
    spawnParty({ servers: server.url, role: "send", channels, tag: "B", count, mode: "interpreter" }),
  ];
  const receivers = [0, 1].map((r) => spawnParty({ servers: server.url, role: "recv", channels, tag: `R${r}` }));
  const everyone = [...senders, ...receivers];
  await Promise.all(everyone.map((p) => Promise.race([p.ready, p.done])));
  for (const s of senders) s.go(); // every sender is connected: the first to finish cannot close the channel on the other
  const reports = await Promise.all(everyone.map((p) => p.done));
  const codes = await Promise.all(everyone.map((p) => p.exited));
  assert.equal(codes, [0, 0, 0, 0], "every process exited on its own, with code 0");
  for (const { name, capacity } of channels) {
    const got = reports.slice(2).map((r) => r.received![name]!);
    const verdict = check({ A: count, B: count }, got);
    assert.ok(verdict.lost.length === 0 && verdict.unexpected.length === 0 && verdict.duplicates === 0 && verdict.orderViolations === 0, `capacity ${capacity}: ${describe(verdict)}`);
  }
});

remoteTest("a receiver process killed while holding messages: another receiver gets them after ackWait (lost = 0)", async () => {
  const name = `killed-receiver-${process.pid}`;
  const ackWait = 2000;
  const [, tx] = await connectChannel<string>(server.url, name, { role: "send", ackWait });
  // Slow (200 ms per message): when it reports one, its bridge has long pulled and offered the next.
  const victim = spawnParty({ servers: server.url, role: "recv", channels: [{ name }], tag: "victim", delayMs: 200, stream: true, ackWait });
  await victim.ready;
  const count = 300;
  for (let i = 0; i < count; i++) await tx.send(`S:${i}`);
  await victim.gotAtLeast(name, 5);
  victim.kill();
  await victim.exited;
  const diedWith = [...(victim.got.get(name) ?? [])];
  tx.close();
  const [rx] = await connectChannel<string>(server.url, name, { role: "recv" });
  const survivor: string[] = [];
  const started = Date.now();
  for await (const value of rx) survivor.push(value);
  const verdict = check({ S: count }, [diedWith, survivor]);
  assert.is(verdict.lost.length, 0, describe(verdict));
  assert.is(verdict.unexpected.length, 0, describe(verdict));
  const stats = await remoteChannelStats(rx);
  assert.ok(stats.recv!.redelivered > 0, `the survivor got messages the victim had pulled (redelivered ${stats.recv!.redelivered}); ${describe(verdict)}`);
  console.log(`    killed receiver: it received ${diedWith.length}; the survivor ${survivor.length} (${stats.recv!.redelivered} redelivered) in ${Date.now() - started} ms; ${describe(verdict)}`);
});

remoteTest("a sender process killed without closing: the channel closes once its lease runs out", async () => {
  const name = `killed-sender-${process.pid}`;
  const lease = 2000;
  const [rx] = await connectChannel<string>(server.url, name, { role: "recv", lease, capacity: 7 });
  const sender = spawnParty({ servers: server.url, role: "send", channels: [{ name, capacity: 7 }], tag: "K", count: 3, hang: true, lease, waitForGo: false });
  for (let i = 0; i < 3; i++) assert.is(await rx.recv({ timeout: 30_000 }), `K:${i}`);
  sender.kill();
  await sender.exited;
  const killedAt = Date.now();
  await assert.rejects(rx.recv({ timeout: 30_000 }), ChannelClosedError);
  const after = Date.now() - killedAt;
  assert.ok(after < lease * 4, `closed ${after} ms after the kill (lease ${lease} ms)`);
  rx.close();
});

test.run();
