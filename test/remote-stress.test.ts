/**
 * Seeded stress of remote channels in one process: per round, a channel of
 * random capacity (1, 2, 7, 16 or Infinity), 1-3 sender and 1-3 receiver
 * connections (each with a bridge and a NATS connection of its own, as
 * separate processes would have), messages of random sizes (0 B to 24 KiB),
 * random pauses, sends with random timeouts (a send that times out is
 * withdrawn and must never be received), receives with random timeouts,
 * tryRecv, and one sender in an interpreter using sendSync. Every message
 * whose send completed is received exactly once, each sender's messages in
 * order at every receiver, and nothing else.
 *
 * The seed comes from $SEED (else a fresh one) and starts every failure
 * message. REMOTE_STRESS_ROUNDS=n runs more rounds (default 2).
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { connectChannel, create, TimeoutError, type RecvChannel, type SendChannel } from "../src/index.js";
import { natsMissing, startNats, type NatsServer } from "../bench/remote-nats.js";
import { check, describe } from "./fixtures/remote-check.js";

const test = suite("remote-stress");
const missing = natsMissing();
const ROUNDS = Number(process.env.REMOTE_STRESS_ROUNDS ?? 2);
const seed = seedFromEnv();
let server: NatsServer;

test.before(async () => {
  if (!missing) server = await startNats();
});
test.after(async () => {
  await server?.stop();
});

const title = `seeded: random capacities, sizes, pauses and timeouts, 1-3 senders and 1-3 receivers, ${ROUNDS} rounds: every completed send received once, in per-sender order`;
if (missing) {
  test(`${title} [SKIPPED: ${missing}]`, () => {});
} else {
  test(
    title,
    async () => {
      const random = rng(seed);
      const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
      for (let round = 1; round <= ROUNDS; round++) {
        const capacity = pick([1, 2, 7, 16, Infinity]);
        const senderCount = 1 + Math.floor(random() * 3);
        const receiverCount = 1 + Math.floor(random() * 3);
        const perSender = 40 + Math.floor(random() * 80);
        const name = `stress-${process.pid}-${seed}-${round}`;
        const where = `seed=${seed} round ${round} (capacity ${capacity}, ${senderCount} senders, ${receiverCount} receivers, ${perSender} each)`;
        // Distinct server lists: a bridge (and a NATS connection) per connection, as separate processes have.
        const servers = (k: number): string[] => Array.from({ length: k + 1 }, () => server.url);
        const senders: Array<SendChannel<string>> = [];
        const receivers: Array<RecvChannel<string>> = [];
        for (let s = 0; s < senderCount; s++) senders.push((await connectChannel<string>(servers(s), name, { capacity, role: "send" }))[1]);
        for (let r = 0; r < receiverCount; r++) receivers.push((await connectChannel<string>(servers(senderCount + r), name, { capacity, role: "recv" }))[0]);

        const completed: Record<string, number> = {};
        const withdrawn: string[] = [];
        const sending = senders.map(async (tx, s) => {
          const tag = `S${s}`;
          const value = (i: number): string => `${tag}:${i}:${"x".repeat(random() < 0.1 ? Math.floor(random() * 24_576) : Math.floor(random() * 64))}`;
          if (s === 0 && random() < 0.5) {
            // In an interpreter, with sendSync (the end moves there).
            const values = Array.from({ length: perSender }, (_, i) => value(i));
            const interpreter = await create({ name: `sync sender ${where}` });
            await interpreter.exec(`for (const v of values) tx.sendSync(v); tx.close();`, { bind: { tx, values } });
            await interpreter.close();
            completed[tag] = perSender;
            return;
          }
          let next = 0;
          for (let attempt = 0; next < perSender; attempt++) {
            const v = value(next);
            const timeout = random() < 0.15 ? Math.floor(random() * 20) : undefined;
            try {
              await tx.send(v, { timeout });
              next++;
              completed[tag] = next;
            } catch (err) {
              if (!(err instanceof TimeoutError)) throw err;
              withdrawn.push(v.slice(0, v.indexOf(":", tag.length + 1))); // retried under the same number
            }
            if (random() < 0.05) await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 5)));
          }
          tx.close();
        });
        const got: string[][] = receivers.map(() => []);
        const receiving = receivers.map(async (rx, r) => {
          for (;;) {
            const how = random();
            if (how < 0.1) {
              const attempt = rx.tryRecv();
              if (attempt.ok) got[r]!.push(attempt.value);
              else if (attempt.closed) break;
              else await new Promise((resolve) => setTimeout(resolve, 1));
              continue;
            }
            try {
              got[r]!.push(await rx.recv({ timeout: how < 0.3 ? Math.floor(random() * 30) : 30_000 }));
            } catch (err) {
              if (err instanceof TimeoutError) continue;
              break; // ChannelClosedError: closed and drained
            }
            if (random() < 0.05) await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 5)));
          }
          rx.close();
        });
        await Promise.all(sending);
        await Promise.all(receiving);
        const values = got.map((list) => list.map((v) => v.slice(0, v.indexOf(":", v.indexOf(":") + 1))));
        const verdict = check(completed, values);
        const ok = verdict.lost.length === 0 && verdict.unexpected.length === 0 && verdict.duplicates === 0 && verdict.orderViolations === 0;
        assert.ok(ok, `${where}: ${describe(verdict)}${verdict.duplicated.length ? `; duplicated ${verdict.duplicated.slice(0, 5).join(", ")}` : ""}`);
        console.log(`    ${where}: ${describe(verdict)}; ${withdrawn.length} sends timed out and were retried`);
      }
    },
    { timeout: 60_000 * Math.max(1, ROUNDS) },
  );
}

test.run();
