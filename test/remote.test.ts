/**
 * Remote channels (connectChannel over NATS JetStream) in one process:
 * the channel matrix's semantics at capacities 1, 7 and Infinity (FIFO,
 * exactly once, close with buffered messages, timeouts, try*), backpressure
 * (the broker never holds more than n; a blocked send resumes after a
 * receive), sync calls in interpreters and on the main thread, select, close
 * seen from other connections, bad input refused.
 *
 * Several connectChannel calls in one process are separate members of the
 * channel, as other processes would be (test/remote-processes.test.ts runs
 * real ones). The test starts its own nats-server (JetStream, file storage
 * in a temp dir, a free port on 127.0.0.1) and kills it at the end; without
 * nats-server installed every test is skipped, saying so.
 */
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { suite, assert } from "./_harness.js";
import {
  ChannelClosedError,
  connectChannel,
  create,
  createChannel,
  InterpretersError,
  MessageTooLargeError,
  remoteChannelStats,
  removeChannel,
  select,
  type SendChannel,
  TimeoutError,
} from "../src/index.js";
import { freePort, natsMissing, startNats, tempDir, type NatsServer } from "../bench/remote-nats.js";

const test = suite("remote");
const missing = natsMissing();
const CAPACITIES = [1, 7, Infinity];

let server: NatsServer;
let url: string;
let nc: NatsConnection;
let jsm: JetStreamManager;
/** Holds this process's bridge open between tests (each test's channels close; a new bridge costs a second or two). */
let keeper: SendChannel<unknown> | undefined;
let serial = 0;
const unique = (what: string): string => `${what}-${process.pid}-${++serial}`;

test.before(async () => {
  if (missing) return;
  server = await startNats();
  url = server.url;
  nc = await connect({ servers: url });
  jsm = await jetstreamManager(nc);
  [, keeper] = await connectChannel(url, unique("keeper"), { role: "send" });
});

test.after(async () => {
  keeper?.close();
  await nc?.close();
  await server?.stop();
});

/** Resolves once `condition()` holds, looking again on every macrotask turn (no fixed sleeps). */
async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition never held within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function storedIn(name: string): Promise<number> {
  return (await jsm.streams.info(`ICH_${name}`)).state.messages;
}

function remoteTest(name: string, body: () => Promise<void>, timeout = 60_000): void {
  if (missing) {
    test(`${name} [SKIPPED: ${missing}]`, () => {});
    return;
  }
  test(name, body, { timeout });
}

remoteTest("bad input is refused before anything connects", async () => {
  await assert.rejects(connectChannel(url, "x", { capacity: 0 }), RangeError, /capacity 0 \(rendezvous\) is not supported.*use capacity 1/);
  for (const capacity of [-1, 1.5, NaN, "3"]) await assert.rejects(connectChannel(url, "x", { capacity: capacity as number }), RangeError, /capacity must be/);
  for (const name of ["a.b", "", "a b", 5]) await assert.rejects(connectChannel(url, name as string), RangeError, /channel name must be/);
  await assert.rejects(connectChannel([], "x"), TypeError, /servers must be/);
  await assert.rejects(connectChannel(url, "x", { role: "sender" as "send" }), RangeError, /role must be/);
  await assert.rejects(connectChannel(url, "x", { replicas: 0 }), RangeError, /replicas must be/);
  await assert.rejects(connectChannel(url, "x", { timeout: -5 }), RangeError, /timeout must be/);
  const nobody = `nats://127.0.0.1:${await freePort()}`;
  const started = Date.now();
  await assert.rejects(connectChannel(nobody, "x", { timeout: 1000 }), InterpretersError, /cannot reach a NATS server at .* within 1000 ms.*is nats-server running/);
  assert.ok(Date.now() - started < 10_000, "the unreachable server was reported within the timeout");
  const plain = await startNats({ noJetStream: true });
  try {
    await assert.rejects(connectChannel(plain.url, "x", { timeout: 2000 }), InterpretersError, /has no JetStream .*start it with -js/);
  } finally {
    await plain.stop();
  }
});

for (const capacity of CAPACITIES) {
  const label = `capacity ${capacity}`;

  remoteTest(`${label}: FIFO for one sender, every message once, then closed and drained`, async () => {
    const [rx, tx] = await connectChannel<number>(url, unique("fifo"), { capacity });
    const received: number[] = [];
    const consumer = (async () => {
      for await (const value of rx) received.push(value);
    })();
    for (let i = 0; i < 200; i++) await tx.send(i, { timeout: 20_000 });
    tx.close();
    await consumer;
    assert.equal(received, Array.from({ length: 200 }, (_, i) => i));
    await assert.rejects(rx.recv({ timeout: 5000 }), ChannelClosedError, /every send handle is closed and the channel is drained/);
    assert.equal(rx.tryRecv(), { ok: false, closed: true });
    rx.close();
  });

  remoteTest(`${label}: messages stored before the senders close reach a receiver that connects later, then ChannelClosedError`, async () => {
    const name = unique("later");
    const [, tx] = await connectChannel<string>(url, name, { capacity, role: "send" });
    const n = Math.min(5, capacity);
    for (let i = 0; i < n; i++) await tx.send(`m${i}`);
    tx.close();
    await until(async () => (await storedIn(name)) === n, `${n} messages stored`);
    const [rx] = await connectChannel<string>(url, name, { role: "recv" });
    for (let i = 0; i < n; i++) assert.is(await rx.recv({ timeout: 10_000 }), `m${i}`);
    await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError);
    rx.close();
  });

  remoteTest(`${label}: recv times out on an empty channel, tryRecv finds nothing, and a late message is still delivered`, async () => {
    const [rx, tx] = await connectChannel<number>(url, unique("timeout"), { capacity });
    const started = performance.now();
    await assert.rejects(rx.recv({ timeout: 200 }), TimeoutError, /timed out after 200 ms/);
    assert.ok(performance.now() - started >= 190);
    assert.equal(rx.tryRecv(), { ok: false, closed: false });
    const later = rx.recv({ timeout: 20_000 });
    await tx.send(42);
    assert.is(await later, 42);
    tx.close();
    rx.close();
  });
}

for (const capacity of [1, 7]) {
  remoteTest(`capacity ${capacity}: the broker never holds more than ${capacity}; a send blocks when it is full and resumes after a receive`, async () => {
    const name = unique("backpressure");
    const [rx, tx] = await connectChannel<number>(url, name, { capacity });
    let most = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        most = Math.max(most, await storedIn(name));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    })();
    // capacity sends fill the broker; one more is taken by this process's bridge, which retries it.
    for (let i = 0; i <= capacity; i++) await tx.send(i, { timeout: 20_000 });
    await until(async () => (await storedIn(name)) === capacity, `the broker holds ${capacity}`);
    await assert.rejects(tx.send(-1, { timeout: 300 }), TimeoutError); // withdrawn: nobody will receive -1
    assert.is(tx.trySend(-2), false);
    assert.is(await storedIn(name), capacity);
    const blocked = tx.send(capacity + 1, { timeout: 20_000 });
    let resumed = false;
    void blocked.then(() => (resumed = true));
    assert.is(await rx.recv({ timeout: 10_000 }), 0);
    await blocked; // resumes after the receive made room
    assert.ok(resumed);
    for (let i = 1; i <= capacity + 1; i++) assert.is(await rx.recv({ timeout: 10_000 }), i);
    tx.close();
    await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError);
    sampling = false;
    await sampler;
    assert.ok(most <= capacity, `the broker held ${most} > ${capacity}`);
    const stats = await remoteChannelStats(tx);
    assert.ok(stats.send!.fullRetries > 0, "sends were retried while the stream was full");
    assert.is(stats.send!.stored, capacity + 2);
    rx.close();
  });
}

remoteTest("sync calls inside interpreters and on the main thread; ends move into interpreters", async () => {
  const [rx, tx] = await connectChannel<number>(url, unique("sync"), { capacity: 7 });
  const [outRx, outTx] = createChannel<number[]>();
  const producer = await create({ name: "producer" });
  const consumer = await create({ name: "consumer" });
  const producing = producer.exec(`for (let i = 0; i < 100; i++) tx.sendSync(i); tx.close();`, { bind: { tx } });
  const consuming = consumer.exec(`const got = []; for (const v of rx) got.push(v); out.sendSync(got); out.close();`, { bind: { rx, out: outTx } });
  assert.equal(await outRx.recv({ timeout: 30_000 }), Array.from({ length: 100 }, (_, i) => i));
  await Promise.all([producing, consuming]);
  await Promise.all([producer.close(), consumer.close()]);

  // The main thread may block: the bridge does the I/O on its own thread.
  const [rx2, tx2] = await connectChannel<string>(url, unique("main-sync"), { capacity: 1 });
  tx2.sendSync("a", { timeout: 10_000 });
  tx2.sendSync("b", { timeout: 10_000 });
  assert.is(rx2.recvSync({ timeout: 10_000 }), "a");
  assert.is(await rx2.recv({ timeout: 10_000 }), "b");
  assert.throws(() => rx2.recvSync({ timeout: 50 }), TimeoutError);
  tx2.close();
  assert.throws(() => rx2.recvSync({ timeout: 10_000 }), ChannelClosedError);
  rx2.close();
});

remoteTest("select waits on remote ends like on local ones", async () => {
  const [aRx, aTx] = await connectChannel<string>(url, unique("select-a"), { capacity: 7 });
  const [bRx, bTx] = await connectChannel<string>(url, unique("select-b"));
  const chosen = select([aRx, bRx], { timeout: 10_000 });
  await bTx.send("from b");
  assert.equal(await chosen, { index: 1, value: "from b" });
  await aTx.send("from a");
  assert.equal(await select([aRx, bRx], { timeout: 10_000 }), { index: 0, value: "from a" });
  for (const end of [aRx, aTx, bRx, bTx]) end.close();
});

remoteTest("every receive end closing fails the senders everywhere; the channel stays closed for later connections", async () => {
  const name = unique("no-receivers");
  const [, tx] = await connectChannel<number>(url, name, { capacity: 7, role: "send" });
  const [rx] = await connectChannel<number>(url, name, { role: "recv" });
  await tx.send(1);
  assert.is(await rx.recv({ timeout: 10_000 }), 1);
  rx.close();
  // The sender's bridge learns it from the broker; sends already taken may still be stored, then sends fail.
  let failed: unknown;
  for (let i = 0; i < 10_000 && !failed; i++) {
    await tx.send(i, { timeout: 20_000 }).catch((err: unknown) => (failed = err));
  }
  assert.instance(failed, ChannelClosedError);
  assert.match((failed as Error).message, /every receive handle (is|was) closed/);
  assert.is((await remoteChannelStats(tx)).state.recvClosed, true);
  const [lateRx, lateTx] = await connectChannel<number>(url, name);
  await assert.rejects(lateTx.send(1, { timeout: 10_000 }), ChannelClosedError);
  await assert.rejects(lateRx.recv({ timeout: 10_000 }), ChannelClosedError);
  tx.close();
  lateRx.close();
  lateTx.close();
});

remoteTest("a channel whose senders all closed is closed for later connections too", async () => {
  const name = unique("closed");
  const [rx, tx] = await connectChannel<number>(url, name, { capacity: 7 });
  await tx.send(1);
  tx.close();
  assert.is(await rx.recv({ timeout: 10_000 }), 1);
  await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError);
  const [lateRx, lateTx] = await connectChannel<number>(url, name);
  await assert.rejects(lateRx.recv({ timeout: 10_000 }), ChannelClosedError);
  await assert.rejects(lateTx.send(2, { timeout: 10_000 }), ChannelClosedError);
  for (const end of [rx, lateRx, lateTx]) end.close();
});

remoteTest("options that disagree with the channel are refused; left out, the channel is taken as it is", async () => {
  const name = unique("options");
  const [rx, tx] = await connectChannel<number>(url, name, { capacity: 7 });
  await assert.rejects(connectChannel(url, name, { capacity: 8 }), InterpretersError, /already exists with capacity 7 \(asked 8\)/);
  await assert.rejects(connectChannel(url, name, { storage: "memory" }), InterpretersError, /storage "file" \(asked "memory"\)/);
  const [rx2, tx2] = await connectChannel<number>(url, name);
  assert.is((await remoteChannelStats(tx2)).capacity, 7);
  for (const end of [rx, tx, rx2, tx2]) end.close();
});

remoteTest("values that cannot cross machines are dropped with a warning and counted; too large fails at once", async () => {
  const [rx, tx] = await connectChannel<unknown>(url, unique("refused"));
  const [, localTx] = createChannel();
  await tx.send({ shared: new SharedArrayBuffer(8) });
  await tx.send({ end: localTx }); // moved into the message, then closed by the bridge
  await tx.send("plain");
  assert.is(await rx.recv({ timeout: 10_000 }), "plain");
  const stats = await remoteChannelStats(tx);
  assert.is(stats.send!.refused, 2);
  assert.match(stats.warnings.join("\n"), /SharedArrayBuffer/);
  assert.match(stats.warnings.join("\n"), /channel end: it cannot cross machines/);
  await assert.rejects(tx.send(new Uint8Array(2 * 1024 * 1024)), MessageTooLargeError);
  tx.close();
  rx.close();
});

remoteTest("removeChannel: the ends still connected close, and the name starts afresh", async () => {
  const name = unique("removed");
  const [rx, tx] = await connectChannel<number>(url, name, { capacity: 7 });
  await tx.send(1);
  assert.is(await removeChannel(url, name), true);
  let sendFailed: unknown;
  for (let i = 0; i < 10_000 && !sendFailed; i++) await tx.send(i, { timeout: 20_000 }).catch((err: unknown) => (sendFailed = err));
  assert.instance(sendFailed, ChannelClosedError);
  let recvFailed: unknown;
  for (let i = 0; i < 10_000 && !recvFailed; i++) await rx.recv({ timeout: 20_000 }).catch((err: unknown) => (recvFailed = err));
  assert.instance(recvFailed, ChannelClosedError);
  rx.close();
  tx.close();
  const [rx2, tx2] = await connectChannel<string>(url, name, { capacity: 3 });
  assert.is((await remoteChannelStats(tx2)).capacity, 3);
  await tx2.send("again");
  assert.is(await rx2.recv({ timeout: 10_000 }), "again");
  rx2.close();
  tx2.close();
  assert.is(await removeChannel(url, unique("never-made")), false);
});

remoteTest("the README's snippet for remote channels runs as written", async () => {
  const root = fileURLToPath(new URL("..", import.meta.url));
  const readme = readFileSync(`${root}README.md`, "utf8");
  const section = readme.slice(readme.indexOf("## Channels across machines"));
  const snippet = /```typescript\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(snippet, "the section has a typescript snippet");
  const file = `${tempDir("remote-readme-")}/snippet.mts`;
  writeFileSync(file, snippet!.replaceAll('from "interpreters"', `from ${JSON.stringify(pathToFileURL(`${root}src/index.ts`).href)}`));
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", file], { cwd: root, env: { ...process.env, NATS_URL: url }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d));
    child.stderr.on("data", (d: Buffer) => (output += d));
    child.once("exit", (code) => resolve({ code, output }));
  });
  assert.is(code, 0, output);
  assert.match(output, /sum of squares 385/);
});

test.run();
