/**
 * offload() on an InterpreterPool (`interpreters: pool`): one protocol
 * shard per pool slot, each a long-running pool task. Driven by real TCP
 * clients on 127.0.0.1 with the fixture protocols
 * test/fixtures/offload-echo.ts and offload-bound.ts.
 *
 * - many connections on a pool of 2: every byte echoed exactly once, in
 *   order (seeded), both shards serving on the pool's own interpreters;
 * - a shard whose thread dies (process.exit in the protocol): only its
 *   connections are closed, after failed(); the shard comes back as a new
 *   pool task on a new thread and takes connections;
 * - close() leaves the pool usable and idle, with no interpreter of
 *   offload's own; past its timeout it aborts a stuck shard's task (the
 *   pool ends that thread) and the pool still serves;
 * - bind with a channel end and a string: globals while the shard's task
 *   runs, gone afterwards; every clone of the end released;
 * - a closed pool, or a maxQueue that refuses the shards, makes `ready`
 *   reject with an error naming the pool.
 *
 * Seeded: $SEED replays; the seed is printed.
 */
import net from "node:net";
import { suite, assert, rng, seedFromEnv, withTimeout } from "./_harness.js";
import { ChannelClosedError, ChannelFullError, createChannel, InterpreterClosedError, InterpreterPool, list, offload, type Offload, type OffloadOptions } from "../src/index.js";

const test = suite("offload-pool");
const SEED = seedFromEnv();
console.log(`  offload-pool: seed=${SEED} (replay with SEED=${SEED})`);

const ECHO = new URL("./fixtures/offload-echo.ts", import.meta.url);
const BOUND = new URL("./fixtures/offload-bound.ts", import.meta.url);
const TASKS = new URL("./fixtures/pool-tasks.ts", import.meta.url);

interface Served {
  port: number;
  offload: Offload;
  stop(timeout?: number): Promise<void>;
}

async function serve(options: OffloadOptions): Promise<Served> {
  const server = net.createServer();
  const served = offload(server, options);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    await withTimeout(served.ready, 30_000, "offload ready");
  } catch (err) {
    await served.close();
    await new Promise((resolve) => server.close(resolve));
    throw err;
  }
  return {
    port: (server.address() as net.AddressInfo).port,
    offload: served,
    async stop(timeout?: number) {
      await withTimeout(served.close(timeout === undefined ? undefined : { timeout }), 20_000, "offload close");
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A TCP client that collects what it receives. */
class Client {
  readonly socket: net.Socket;
  readonly chunks: Buffer[] = [];
  received = 0;
  closed = false;
  readonly whenClosed: Promise<void>;
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.received += chunk.length;
      this.#poke();
    });
    socket.on("error", () => {});
    this.whenClosed = new Promise((resolve) =>
      socket.on("close", () => {
        this.closed = true;
        this.#poke();
        resolve();
      }),
    );
  }

  static connect(port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => resolve(new Client(socket)));
      socket.once("error", reject);
    });
  }

  #poke(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  text(): string {
    return this.bytes().toString("latin1");
  }

  /** Waits until `ready()` holds (re-checked on every chunk and on close). */
  async until(ready: () => boolean, what: string, timeout = 20_000): Promise<void> {
    await withTimeout(
      (async () => {
        while (!ready()) {
          if (this.closed) throw new Error(`closed while waiting for ${what}; got ${JSON.stringify(this.text().slice(-200))}`);
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
        }
      })(),
      timeout,
      what,
    );
  }

  /** Sends `text` and waits for the reply to match `expected`; returns the reply. */
  async ask(text: string, expected: RegExp, what = text): Promise<string> {
    const before = this.received;
    this.socket.write(text);
    await this.until(() => expected.test(this.bytes().subarray(before).toString("latin1")), `reply to ${what}`);
    return this.bytes().subarray(before).toString("latin1");
  }

  async write(bytes: Uint8Array): Promise<void> {
    if (this.socket.write(bytes)) return;
    await new Promise<void>((resolve) => this.socket.once("drain", resolve));
  }
}

/** Polls `ready` every few ms (for states no event announces, such as stats()). */
async function eventually(ready: () => boolean, what: string, timeout = 20_000): Promise<void> {
  await withTimeout(
    (async () => {
      while (!ready()) await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    timeout,
    what,
  );
}

/** Random bytes without '!' (which starts the echo fixture's commands). */
function randomBytes(random: () => number, n: number): Buffer {
  const bytes = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) {
    const b = Math.floor(random() * 256);
    bytes[i] = b === 0x21 ? 0x22 : b;
  }
  return bytes;
}

/** Which shard a connection is on (the echo fixture's "!where"). */
async function whereIs(client: Client): Promise<number> {
  return Number((await client.ask("!where", /\n$/)).trim());
}

/** Interpreters alive now that did not exist in `before`. */
function newInterpreters(before: Set<number>): string[] {
  return list()
    .filter((i) => !before.has(i.id))
    .map((i) => i.name);
}

// ---------------------------------------------------------------- order

test("echo on a pool of 2: many connections, every byte back exactly once and in order, both shards on the pool's interpreters", async () => {
  const random = rng(SEED);
  const pool = new InterpreterPool({ name: "echo-pool", maxInterpreters: 2 });
  try {
    const served = await serve({ protocol: ECHO, interpreters: pool, capacity: 8, connectionWindow: 16 * 1024, outputWindow: 32 * 1024 });
    try {
      const shards = served.offload.stats().interpreters;
      assert.is(shards.length, 2, "one shard per pool slot");
      const names = new Map(list().map((i) => [i.id, i.name]));
      for (const shard of shards) assert.match(names.get(shard.id) ?? "?", /^echo-pool-\d+$/, `shard ${shard.index} runs on a pool interpreter`);
      assert.not.ok(list().some((i) => i.name.startsWith("offload-")), "offload created no interpreter of its own");
      const seen = new Set<number>();
      const runs = Array.from({ length: 24 }, async (_, c) => {
        const client = await Client.connect(served.port);
        seen.add(await whereIs(client));
        if (random() < 0.5) await client.ask("!async", /ASYNC\n$/);
        const start = client.received;
        const total = 5_000 + Math.floor(random() * 80_000);
        const data = randomBytes(random, total);
        for (let sent = 0; sent < total; ) {
          const n = Math.min(total - sent, 1 + Math.floor(random() * (random() < 0.5 ? 200 : 12_000)));
          await client.write(data.subarray(sent, sent + n));
          sent += n;
          if (random() < 0.2) await new Promise((resolve) => setImmediate(resolve));
        }
        await client.until(() => client.received - start >= total, `connection ${c}: ${total} bytes echoed (seed=${SEED})`);
        const echoed = client.bytes().subarray(start);
        if (!echoed.equals(data)) {
          let at = 0;
          while (echoed[at] === data[at]) at++;
          throw new Error(`connection ${c}: echo differs at byte ${at} of ${total} (got ${echoed.length}; seed=${SEED})`);
        }
        client.socket.end();
        await client.until(() => client.text().endsWith("END\n"), `connection ${c}: END after FIN`);
        await withTimeout(client.whenClosed, 20_000, `connection ${c} closed by the server`);
      });
      await Promise.all(runs);
      assert.equal([...seen].sort(), [0, 1], "both shards served connections");
      await eventually(() => served.offload.stats().connections === 0, "every connection forgotten");
      const stats = served.offload.stats();
      assert.is(stats.failed, 0);
      assert.is(stats.lost, 0);
      assert.is(pool.stats().busy, 2, "each shard holds one pool interpreter while it serves");
    } finally {
      await served.stop();
    }
  } finally {
    await pool.close();
  }
}, { timeout: 120_000 });

// ---------------------------------------------------------------- death

test("a shard whose thread dies: only its connections closed after failed(), the shard comes back as a new pool task", async () => {
  const pool = new InterpreterPool({ name: "death-pool", maxInterpreters: 2 });
  try {
    const served = await serve({ protocol: ECHO, interpreters: pool });
    try {
      const clients = await Promise.all(Array.from({ length: 6 }, () => Client.connect(served.port)));
      const where = await Promise.all(clients.map(whereIs));
      const doomed = clients.filter((_, i) => where[i] === 0);
      const spared = clients.filter((_, i) => where[i] === 1);
      assert.ok(doomed.length > 0 && spared.length > 0, `connections on both shards: ${where}`);
      const oldId = served.offload.stats().interpreters[0]!.id;
      doomed[0]!.socket.write("!exit");
      for (const client of doomed) {
        await withTimeout(client.whenClosed, 20_000, "a connection of the dead shard closed");
        assert.match(client.text(), /LOST\n$/);
      }
      for (const client of spared) assert.is(await client.ask("alive\n", /alive\n$/), "alive\n");
      await eventually(() => {
        const shard = served.offload.stats().interpreters[0]!;
        return shard.alive && shard.restarts === 1 && shard.id !== oldId && shard.id !== 0;
      }, "shard 0 serves again");
      const newId = served.offload.stats().interpreters[0]!.id;
      assert.ok(list().some((i) => i.id === newId && i.name.startsWith("death-pool-")), "on a new interpreter of the pool");
      assert.not.ok(list().some((i) => i.id === oldId), "the dead one is gone");
      const fresh = await Promise.all(Array.from({ length: 4 }, () => Client.connect(served.port)));
      const freshWhere = await Promise.all(fresh.map(whereIs));
      assert.ok(freshWhere.includes(0), `the restarted shard takes connections: ${freshWhere}`);
      for (const client of fresh) assert.is(await client.ask("again\n", /again\n$/), "again\n");
      const stats = served.offload.stats();
      assert.is(stats.lost, doomed.length);
      assert.is(stats.interpreters[1]!.restarts, 0, "the other shard was untouched");
      for (const client of [...spared, ...fresh]) client.socket.destroy();
    } finally {
      await served.stop();
    }
  } finally {
    await pool.close();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- close

test("close() leaves the pool usable and idle; no interpreter is left but the pool's", async () => {
  const before = new Set(list().map((i) => i.id));
  const pool = new InterpreterPool({ name: "close-pool", maxInterpreters: 2 });
  const served = await serve({ protocol: ECHO, interpreters: pool });
  const client = await Client.connect(served.port);
  assert.is(await client.ask("hi\n", /\n$/), "hi\n");
  await served.stop();
  await withTimeout(client.whenClosed, 20_000, "the client's connection closed by close()");
  const stats = pool.stats();
  assert.is(stats.busy, 0, "no task of offload still runs");
  assert.is(stats.queued, 0);
  const left = newInterpreters(before);
  assert.ok(left.length <= 2, `at most the pool's 2 interpreters: ${left}`);
  for (const name of left) assert.match(name, /^close-pool-\d+$/, "only the pool's interpreters");
  assert.is(await withTimeout(pool.call<number>(TASKS, "square", 7), 20_000, "a pool call after offload's close"), 49);
  await withTimeout(pool.close(), 20_000, "pool close");
  assert.equal(newInterpreters(before), [], "closing the pool ends them all");
}, { timeout: 60_000 });

test("close() past its timeout aborts a stuck shard's task (the pool ends that thread); the pool still serves", async () => {
  const pool = new InterpreterPool({ name: "stuck-pool", maxInterpreters: 2 });
  try {
    const served = await serve({ protocol: ECHO, interpreters: pool });
    const stuck = await Client.connect(served.port);
    const stuckShard = await whereIs(stuck);
    const stuckId = served.offload.stats().interpreters[stuckShard]!.id;
    // Blocks that thread synchronously for 60 s: only ending the thread stops it.
    stuck.socket.write("!sleep 60000");
    await eventually(() => served.offload.stats().interpreters[stuckShard]!.chunksInFlight === 1, "the blocking read handed over");
    await served.stop(500);
    await withTimeout(stuck.whenClosed, 20_000, "the stuck connection destroyed");
    assert.not.ok(stuck.text().includes("SLEPT"), "closed without waiting for the sleep");
    assert.not.ok(list().some((i) => i.id === stuckId), "the stuck thread was ended");
    assert.is(await withTimeout(pool.call<number>(TASKS, "square", 9), 20_000, "a pool call after the abort"), 81);
    assert.is(pool.stats().busy, 0);
  } finally {
    await pool.close();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- bind

test("bind with a channel end works on the pool: globals while the shard runs, gone after, every clone released", async () => {
  const pool = new InterpreterPool({ name: "bind-pool", maxInterpreters: 2 });
  try {
    const [eventsRx, eventsTx] = createChannel<string>({ capacity: Infinity, name: "offload-pool events" });
    const served = await serve({ protocol: BOUND, interpreters: pool, bind: { prefix: "P:", events: eventsTx } });
    const clients = await Promise.all(Array.from({ length: 6 }, () => Client.connect(served.port)));
    const expected: string[] = [];
    for (const [c, client] of clients.entries()) {
      assert.is(await client.ask(`hello ${c}`, new RegExp(`hello ${c}$`)), `P:hello ${c}`);
      expected.push(`hello ${c}`);
    }
    const events: string[] = [];
    for (let i = 0; i < clients.length; i++) events.push(await withTimeout(eventsRx.recv(), 20_000, "an event on the bound channel"));
    const shards = new Set(events.map((e) => e.split(":")[0]));
    assert.equal([...shards].sort(), ["0", "1"], `both shards sent on their clone of the end: ${events}`);
    assert.equal(events.map((e) => e.split(":").slice(2).join(":")), expected);
    for (const client of clients) client.socket.destroy();
    await served.stop();
    // offload closed our end, and every clone (describe's, each shard's) was released with its task:
    // the channel is closed for its receiver once drained.
    const tail = await withTimeout(
      eventsRx.recv().then(
        (value) => ({ value }),
        (err: unknown) => ({ err }),
      ),
      20_000,
      "the events channel closed",
    );
    assert.ok("err" in tail && tail.err instanceof ChannelClosedError, `every clone released: ${JSON.stringify(tail)}`);
    eventsRx.close();
    // The bound globals were removed from the pool's threads (both threads asked at once).
    const probe = "data:text/javascript," + encodeURIComponent(`
      export default async function (arrived, go) { arrived.sendSync(1); await go.recv(); return typeof globalThis.prefix + "/" + typeof globalThis.events; }
    `);
    const [arrivedRx, arrivedTx] = createChannel<number>({ capacity: Infinity });
    const [goRx, goTx] = createChannel<number>({ capacity: Infinity });
    const answers = [0, 1].map(() => pool.call<string>(probe, "default", arrivedTx.clone(), goRx.clone()));
    for (let i = 0; i < 2; i++) await withTimeout(arrivedRx.recv(), 20_000, "a probe task started");
    goTx.sendSync(1);
    goTx.sendSync(1);
    assert.equal(await withTimeout(Promise.all(answers), 20_000, "probe answers"), ["undefined/undefined", "undefined/undefined"]);
    for (const end of [arrivedRx, arrivedTx, goRx, goTx]) end.close();
  } finally {
    await pool.close();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- refusals

test("a closed pool, or a maxQueue that refuses a shard's task, makes `ready` reject naming the pool; offload never closes the pool", async () => {
  const closedPool = new InterpreterPool({ name: "gone-pool", maxInterpreters: 1 });
  await closedPool.close();
  const server = net.createServer();
  const refused = offload(server, { protocol: ECHO, interpreters: closedPool });
  const closedError = await withTimeout(refused.ready, 20_000, "ready").then(() => undefined, (err: unknown) => err as Error & { cause?: unknown });
  assert.match(closedError?.message ?? "", /offload "offload": shard 0 could not start on pool "gone-pool".*the pool is closed/);
  assert.instance(closedError?.cause, InterpreterClosedError);
  await withTimeout(refused.close(), 20_000, "close of a refused offload");
  assert.is(server.listenerCount("connection"), 0);

  // One slot, no queue, and a task of the user's holds the slot: the describe task is refused.
  const busyPool = new InterpreterPool({ name: "full-pool", maxInterpreters: 1, maxQueue: 0 });
  const [blockRx, blockTx] = createChannel<unknown>({ capacity: 1 });
  const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
  const blocker = busyPool.call(TASKS, "block", blockRx, startedTx);
  await withTimeout(startedRx.recv(), 20_000, "the user's task started");
  const full = offload(server, { protocol: ECHO, interpreters: busyPool });
  const fullError = await withTimeout(full.ready, 20_000, "ready").then(() => undefined, (err: unknown) => err as Error & { cause?: unknown });
  assert.match(fullError?.message ?? "", /could not start on pool "full-pool".*maxQueue 0.*leave it room/);
  assert.instance(fullError?.cause, ChannelFullError);
  await withTimeout(full.close(), 20_000, "close of a refused offload");
  blockTx.sendSync("go");
  await withTimeout(blocker, 20_000, "the user's task ends");
  assert.is(await withTimeout(busyPool.call<number>(TASKS, "square", 3), 20_000, "the pool still serves"), 9);
  blockTx.close();
  startedRx.close();
  await busyPool.close();
  assert.throws(() => offload(server, { protocol: ECHO, interpreters: {} as unknown as number }), TypeError, /InterpreterPool/);
}, { timeout: 60_000 });

test.run();
