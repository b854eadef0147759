/**
 * A broker restart in the middle of a run, with file storage: the
 * nats-server is killed (SIGKILL, a crash) while a sender and a receiver
 * are busy, and started again on the same port and store directory. The
 * bridges reconnect; publishes and pulls in flight are retried (with the
 * same message ids); no message whose send completed is lost, none reaches
 * the receiver twice (the per-sender sequence check drops a redelivery),
 * and the channel still closes and drains at the end.
 *
 * Runs for capacity 7 and Infinity, one restart each (REMOTE_RESTARTS=n for
 * more per run).
 */
import { suite, assert } from "./_harness.js";
import { connectChannel, remoteChannelStats } from "../src/index.js";
import { natsMissing, startNats, type NatsServer } from "../bench/remote-nats.js";
import { check, describe } from "./fixtures/remote-check.js";

const test = suite("remote-restart");
const missing = natsMissing();
const RESTARTS = Number(process.env.REMOTE_RESTARTS ?? 1);
let server: NatsServer;

test.before(async () => {
  if (!missing) server = await startNats();
});
test.after(async () => {
  await server?.stop();
});

for (const capacity of [7, Infinity]) {
  const name = `capacity ${capacity}: the broker killed and restarted ${RESTARTS}x mid-run (file storage): lost 0, every message once`;
  if (missing) {
    test(`${name} [SKIPPED: ${missing}]`, () => {});
    continue;
  }
  test(
    name,
    async () => {
      const channel = `restart-${capacity}-${process.pid}`;
      // Two server lists, so sender and receiver have bridges (connections) of their own, as two processes would.
      // A short ackWait: messages delivered when the broker died come back after it (30 s by default).
      const [, tx] = await connectChannel<string>(server.url, channel, { capacity, role: "send", ackWait: 3000 });
      const [rx] = await connectChannel<string>([server.url, server.url], channel, { role: "recv", ackWait: 3000 });
      const count = 300 + 150 * RESTARTS;
      let sent = 0;
      const sending = (async () => {
        for (let i = 0; i < count; i++) {
          await tx.send(`S:${i}`, { timeout: 60_000 });
          sent++;
        }
        tx.close();
      })();
      const received: string[] = [];
      const receiving = (async () => {
        for await (const value of rx) received.push(value);
      })();
      const t0 = Date.now();
      const phases: string[] = [];
      // Slow? Say where it stands (a hang must explain itself in CI's log).
      const watchdog = setInterval(() => {
        void Promise.all([remoteChannelStats(tx), remoteChannelStats(rx)]).then(([s, r]) =>
          console.log(`    [${Date.now() - t0} ms] sent ${sent}, received ${received.length}; ${phases.join(", ")}; sender ${JSON.stringify(s.send)}; receiver ${JSON.stringify(r.recv)} ${JSON.stringify(r.stream)} ${JSON.stringify(r.state)} ${r.warnings.join(" / ")}`),
        );
      }, 20_000);
      for (let r = 1; r <= RESTARTS; r++) {
        const at = Math.floor((count * r) / (RESTARTS + 1));
        while (received.length < at) await new Promise((resolve) => setTimeout(resolve, 5));
        phases.push(`restart at ${Date.now() - t0} ms`);
        await server.restart();
        phases.push(`up at ${Date.now() - t0} ms`);
      }
      await sending;
      phases.push(`sent at ${Date.now() - t0} ms`);
      await receiving;
      clearInterval(watchdog);
      phases.push(`drained at ${Date.now() - t0} ms`);
      const verdict = check({ S: sent }, [received]);
      const stats = await remoteChannelStats(rx);
      const sendStats = await remoteChannelStats(tx);
      console.log(`    capacity ${capacity}: ${describe(verdict)}; publishes retried ${sendStats.send!.failedAttempts}, duplicates suppressed ${stats.recv!.duplicatesSuppressed}, redelivered ${stats.recv!.redelivered}; ${phases.join(", ")}`);
      assert.is(verdict.lost.length, 0, describe(verdict));
      assert.is(verdict.unexpected.length, 0, describe(verdict));
      assert.is(verdict.duplicates, 0, describe(verdict));
      rx.close();
    },
    { timeout: 120_000 },
  );
}

test.run();
