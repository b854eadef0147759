/**
 * offload(): the main thread keeps the sockets, protocol interpreters see
 * bytes. Driven by real TCP clients on 127.0.0.1, with the fixture
 * protocols test/fixtures/offload-echo.ts (echo, plus commands) and
 * offload-sink.ts (a slow consumer).
 *
 * - bytes in order both ways: a seeded stress with random options (number
 *   of interpreters, capacity, windows), connections writing random-sized
 *   pieces, some answered through promises, clients that stop reading now
 *   and then; every byte echoed exactly once, in order;
 * - "pause": a flood into a slow consumer never has more than `capacity`
 *   reads in flight per interpreter nor more than a window per connection;
 *   a client that never reads its replies is stopped being read (the
 *   server's write buffer stays within the output window), and gets
 *   everything, in order, once it reads; many slow trickling connections
 *   cost a window each at most and do not hold up a fast one;
 * - "reject": while the interpreter is full, new data is answered with the
 *   module's overloaded() at once, after the connection's earlier replies;
 * - failures: a peer's FIN (replies still go out, then end() and close), a
 *   reset (forgotten on both sides), a handler that throws (only its
 *   connection closed, after failed()), an interpreter that dies (its
 *   connections closed after failed(), others untouched, replaced);
 * - close() ends everything (a child process exits by itself), bad options.
 *
 * Seeded: $SEED replays; the seed is printed.
 */
import net from "node:net";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, rng, seedFromEnv, withTimeout } from "./_harness.js";
import { list, offload, type Offload, type OffloadOptions } from "../src/index.js";

const test = suite("offload");
const SEED = seedFromEnv();
console.log(`  offload: seed=${SEED} (replay with SEED=${SEED})`);

const ECHO = new URL("./fixtures/offload-echo.ts", import.meta.url);
const SINK = new URL("./fixtures/offload-sink.ts", import.meta.url);

interface Served {
  port: number;
  offload: Offload;
  stop(): Promise<void>;
}

async function serve(options: Omit<OffloadOptions, "protocol"> & { protocol: URL }): Promise<Served> {
  const server = net.createServer();
  const served = offload(server, options);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  await withTimeout(served.ready, 30_000, "offload ready");
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    offload: served,
    async stop() {
      await withTimeout(served.close(), 20_000, "offload close");
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

  text(): string {
    return Buffer.concat(this.chunks).toString("latin1");
  }

  bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Waits until `ready()` holds (re-checked on every chunk and on close). */
  async until(ready: () => boolean, what: string, timeout = 20_000): Promise<void> {
    await withTimeout(
      (async () => {
        while (!ready()) {
          if (this.closed && !ready()) throw new Error(`closed while waiting for ${what}; got ${JSON.stringify(this.text().slice(-200))}`);
          await new Promise<void>((resolve) => this.#waiters.push(resolve));
        }
      })(),
      timeout,
      what,
    );
  }

  /** Sends `text` and waits for the reply to end with `expected`. */
  async ask(text: string, expected: RegExp, what = text): Promise<string> {
    const before = this.received;
    this.socket.write(text);
    await this.until(() => expected.test(this.bytes().subarray(before).toString("latin1")), `reply to ${what}`);
    return this.bytes().subarray(before).toString("latin1");
  }

  /** Writes, waiting for 'drain' when the socket says so. */
  async write(bytes: Uint8Array): Promise<void> {
    if (this.socket.write(bytes)) return;
    await new Promise<void>((resolve) => this.socket.once("drain", resolve));
  }
}

/** Polls `ready` every few ms (for states that no event announces, such as offload's stats). */
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

const pick = <T>(random: () => number, items: T[]): T => items[Math.floor(random() * items.length)]!;

// ---------------------------------------------------------------- order both ways

test("bytes in order both ways: seeded stress, random options, sync and async replies, readers that pause", async () => {
  const random = rng(SEED);
  for (let round = 0; round < 2; round++) {
    const options = {
      protocol: ECHO,
      interpreters: 1 + Math.floor(random() * 3),
      capacity: pick(random, [1, 2, 8, 64]),
      connectionWindow: pick(random, [1024, 16 * 1024, 128 * 1024]),
      outputWindow: pick(random, [4 * 1024, 64 * 1024, 256 * 1024]),
    };
    const where = `seed=${SEED} round ${round} ${JSON.stringify({ ...options, protocol: undefined })}`;
    const served = await serve(options);
    try {
      const runs = Array.from({ length: 10 }, async (_, c) => {
        const client = await Client.connect(served.port);
        const total = 20_000 + Math.floor(random() * 150_000);
        const data = randomBytes(random, total);
        if (random() < 0.5) await client.ask("!async", /ASYNC\n$/);
        const start = client.received;
        const pauses = random() < 0.4;
        let sent = 0;
        while (sent < total) {
          const n = Math.min(total - sent, 1 + Math.floor(random() * (random() < 0.5 ? 300 : 20_000)));
          await client.write(data.subarray(sent, sent + n));
          sent += n;
          if (random() < 0.2) await new Promise((resolve) => setImmediate(resolve));
          if (pauses && random() < 0.05) {
            client.socket.pause();
            setTimeout(() => client.socket.resume(), Math.floor(random() * 5));
          }
        }
        client.socket.resume();
        await client.until(() => client.received - start >= total, `connection ${c}: ${total} bytes echoed (${where})`);
        const echoed = client.bytes().subarray(start, start + total);
        if (!echoed.equals(data)) {
          let at = 0;
          while (echoed[at] === data[at]) at++;
          throw new Error(`connection ${c}: echo differs at byte ${at} of ${total} (${where})`);
        }
        client.socket.end();
        await client.until(() => client.text().endsWith("END\n"), `connection ${c}: END after FIN`);
        await withTimeout(client.whenClosed, 20_000, `connection ${c} closed by the server`);
      });
      await Promise.all(runs);
      await eventually(() => served.offload.stats().connections === 0, `every connection forgotten (${where})`);
      // And forgotten inside the interpreters too (this probe is the only one left).
      for (let k = 0; k < options.interpreters * 2; k++) {
        const probe = await Client.connect(served.port);
        assert.is(await probe.ask("!conns", /\d+\n$/), "1\n", `a probe sees only itself (${where})`);
        probe.socket.destroy();
        await eventually(() => served.offload.stats().connections === 0, "probe forgotten");
      }
      const stats = served.offload.stats();
      assert.is(stats.failed, 0);
      assert.is(stats.lost, 0);
    } finally {
      await served.stop();
    }
  }
}, { timeout: 120_000 });

// ---------------------------------------------------------------- pause

test("pause: a flood into a slow consumer keeps at most `capacity` reads per interpreter and a window per connection in flight", async () => {
  const capacity = 4;
  const connectionWindow = 64 * 1024;
  const served = await serve({ protocol: SINK, interpreters: 1, capacity, connectionWindow });
  try {
    const size = 6 * 1024 * 1024;
    let sawPaused = false;
    const sampler = setInterval(() => {
      const s = served.offload.stats();
      if (s.paused.full + s.paused.window > 0) sawPaused = true;
    }, 2);
    const floods = Array.from({ length: 3 }, async () => {
      const client = await Client.connect(served.port);
      const chunk = Buffer.alloc(64 * 1024, 7);
      for (let sent = 0; sent < size; sent += chunk.length) await client.write(chunk);
      client.socket.end();
      await client.until(() => client.text().endsWith("\n"), "the sink's total");
      assert.is(client.text(), `TOTAL ${size}\n`);
    });
    await withTimeout(Promise.all(floods), 90_000, "floods");
    clearInterval(sampler);
    const { peak } = served.offload.stats();
    assert.ok(peak.chunksInFlight <= capacity, `reads in flight peaked at ${peak.chunksInFlight} > capacity ${capacity}`);
    assert.ok(peak.bytesInFlight <= capacity * 64 * 1024, `bytes in flight peaked at ${peak.bytesInFlight}`);
    assert.ok(peak.connectionBytesInFlight <= connectionWindow + 64 * 1024, `one connection had ${peak.connectionBytesInFlight} bytes in flight`);
    assert.ok(sawPaused, "sockets were paused while the consumer was behind");
  } finally {
    await served.stop();
  }
}, { timeout: 120_000 });

test("pause: a client that never reads its replies stops being read; the server buffers an output window, then delivers all in order", async () => {
  const outputWindow = 64 * 1024;
  const served = await serve({ protocol: ECHO, interpreters: 1, outputWindow, connectionWindow: 64 * 1024 });
  try {
    const client = await Client.connect(served.port);
    client.socket.pause(); // never reads (for now)
    const random = rng(SEED + 1);
    const sent: Buffer[] = [];
    let total = 0;
    // Write until the server has not read anything for a while (its reading is paused).
    let lastBytesIn = -1;
    let stalled = 0;
    while (total < 256 * 1024 * 1024) {
      const chunk = randomBytes(random, 64 * 1024);
      sent.push(chunk);
      total += chunk.length;
      if (!client.socket.write(chunk)) {
        const drained = await Promise.race([
          new Promise<boolean>((resolve) => client.socket.once("drain", () => resolve(true))),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 300)),
        ]);
        if (!drained) {
          const bytesIn = served.offload.stats().bytesIn;
          if (bytesIn === lastBytesIn && ++stalled >= 3) break;
          if (bytesIn !== lastBytesIn) stalled = 0;
          lastBytesIn = bytesIn;
        }
      }
    }
    const stats = served.offload.stats();
    assert.ok(total < 256 * 1024 * 1024, "the server stopped reading");
    assert.ok(stats.bytesIn < 64 * 1024 * 1024, `the server read ${stats.bytesIn} bytes from a client that reads nothing`);
    assert.ok(stats.peak.writeBuffered <= outputWindow + 64 * 1024, `the server buffered ${stats.peak.writeBuffered} bytes of replies`);
    assert.ok(stats.paused.output + stats.paused.window > 0, "its socket is paused");
    // Now read: everything comes back, in order.
    client.socket.resume();
    await client.until(() => client.received >= total, `all ${total} bytes echoed`, 60_000);
    assert.ok(client.bytes().equals(Buffer.concat(sent)), "the echo is exactly what was sent");
    client.socket.destroy();
  } finally {
    await served.stop();
  }
}, { timeout: 120_000 });

test("pause: 200 trickling connections cost a window each at most and do not hold up a fast one", async () => {
  const served = await serve({ protocol: ECHO, interpreters: 2 });
  try {
    const slow = await Promise.all(Array.from({ length: 200 }, () => Client.connect(served.port)));
    let trickling = true;
    const trickle = (async () => {
      for (let round = 0; trickling && round < 400; round++) {
        for (const client of slow) client.socket.write("x");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();
    const fast = await Client.connect(served.port);
    for (let i = 0; i < 200; i++) assert.is(await fast.ask(`ping ${i}\n`, /\n$/), `ping ${i}\n`);
    trickling = false;
    await trickle;
    for (const client of slow) await client.until(() => client.received > 0 && client.text() === "x".repeat(client.received), "the trickle echoed");
    const stats = served.offload.stats();
    assert.is(stats.connections, 201);
    assert.ok(stats.peak.connectionBytesInFlight <= 128 * 1024);
    for (const client of [...slow, fast]) client.socket.destroy();
    await eventually(() => served.offload.stats().connections === 0, "all forgotten");
  } finally {
    await served.stop();
  }
}, { timeout: 90_000 });

// ---------------------------------------------------------------- reject

test("reject: while the interpreter is full, new data gets overloaded() at once, after the connection's earlier replies", async () => {
  const served = await serve({ protocol: ECHO, interpreters: 1, capacity: 2, overload: "reject" });
  try {
    const blocker = await Client.connect(served.port);
    const early = await Client.connect(served.port);
    assert.is(await early.ask("first\n", /\n$/), "first\n");
    const others = await Promise.all(Array.from({ length: 4 }, () => Client.connect(served.port)));
    blocker.socket.write("!sleep 3000"); // the interpreter is busy for 3 s: one read in flight
    await eventually(() => served.offload.stats().interpreters[0]!.chunksInFlight === 1, "the blocking read in flight");
    early.socket.write("second\n"); // the second read: now the interpreter is full
    await eventually(() => served.offload.stats().interpreters[0]!.full, "interpreter full");
    early.socket.write("third\n"); // refused: after "second\n" is answered
    for (const client of others) client.socket.write("hello\n");
    // Refused at once: answered and closed while the interpreter is still blocked.
    for (const client of others) {
      await withTimeout(client.whenClosed, 20_000, "a rejected connection closed");
      assert.is(client.text(), "OVERLOADED\n");
    }
    assert.not.ok(blocker.text().includes("SLEPT"), "the rejections came while the interpreter was still blocked");
    await withTimeout(early.whenClosed, 20_000, "the early connection closed");
    assert.is(early.text(), "first\nsecond\nOVERLOADED\n");
    await blocker.until(() => blocker.text() === "SLEPT\n", "the blocker's answer");
    assert.is(served.offload.stats().rejected, 5);
    blocker.socket.destroy();
  } finally {
    await served.stop();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- failures

test("peer closes: after a FIN the replies still go out, then end() and close; after a reset the connection is forgotten", async () => {
  const served = await serve({ protocol: ECHO, interpreters: 1 });
  try {
    const halfClosed = await Client.connect(served.port);
    halfClosed.socket.end("abc");
    await withTimeout(halfClosed.whenClosed, 20_000, "closed by the server after FIN");
    assert.is(halfClosed.text(), "abcEND\n");

    const reset = await Client.connect(served.port);
    assert.is(await reset.ask("xyz", /xyz$/), "xyz");
    reset.socket.resetAndDestroy();
    await eventually(() => served.offload.stats().connections === 0, "the reset connection forgotten");
    const probe = await Client.connect(served.port);
    assert.is(await probe.ask("!conns", /\n$/), "1\n", "the interpreter forgot it too");
    probe.socket.destroy();
  } finally {
    await served.stop();
  }
});

test("a handler that throws closes its own connection after failed(); the others on the same interpreter go on", async () => {
  const served = await serve({ protocol: ECHO, interpreters: 1 });
  try {
    const victim = await Client.connect(served.port);
    const neighbour = await Client.connect(served.port);
    assert.is(await neighbour.ask("before\n", /\n$/), "before\n");
    victim.socket.write("!throw");
    await withTimeout(victim.whenClosed, 20_000, "the thrower's connection closed");
    assert.match(victim.text(), /^FAILED thrown on connection \d+\n$/);
    assert.is(await neighbour.ask("after\n", /after\n$/), "after\n");
    const stats = served.offload.stats();
    assert.is(stats.failed, 1);
    assert.match(stats.lastError ?? "", /thrown on connection/);
    neighbour.socket.destroy();
  } finally {
    await served.stop();
  }
});

test("an interpreter that dies: its connections closed after failed(), the other interpreter's untouched, a replacement serves", async () => {
  const served = await serve({ protocol: ECHO, interpreters: 2 });
  try {
    const clients = await Promise.all(Array.from({ length: 6 }, () => Client.connect(served.port)));
    const where = await Promise.all(clients.map(async (client) => Number((await client.ask("!where", /\n$/)).trim())));
    const doomed = clients.filter((_, i) => where[i] === 0);
    const spared = clients.filter((_, i) => where[i] === 1);
    assert.ok(doomed.length > 0 && spared.length > 0, `connections on both interpreters: ${where}`);
    const oldId = served.offload.stats().interpreters[0]!.id;
    doomed[0]!.socket.write("!exit");
    for (const client of doomed) {
      await withTimeout(client.whenClosed, 20_000, "a connection of the dead interpreter closed");
      assert.match(client.text(), /LOST\n$/);
    }
    for (const client of spared) assert.is(await client.ask("alive\n", /alive\n$/).then((t) => t), "alive\n");
    await eventually(() => {
      const shard = served.offload.stats().interpreters[0]!;
      return shard.alive && shard.restarts === 1 && shard.id !== oldId;
    }, "the replacement started");
    // New connections go to both, the replacement included.
    const fresh = await Promise.all(Array.from({ length: 4 }, () => Client.connect(served.port)));
    const freshWhere = await Promise.all(fresh.map(async (client) => Number((await client.ask("!where", /\n$/)).trim())));
    assert.ok(freshWhere.includes(0), `the replacement takes connections: ${freshWhere}`);
    const stats = served.offload.stats();
    assert.is(stats.lost, doomed.length);
    for (const client of [...spared, ...fresh]) client.socket.destroy();
  } finally {
    await served.stop();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- the rest

test("close() ends connections and interpreters: nothing is left running", async () => {
  const before = new Set(list().map((i) => i.id));
  const served = await serve({ protocol: ECHO, interpreters: 2 });
  const client = await Client.connect(served.port);
  assert.is(await client.ask("hi\n", /\n$/), "hi\n");
  await served.stop();
  await withTimeout(client.whenClosed, 20_000, "the client's connection closed by close()");
  assert.equal(list().filter((i) => !before.has(i.id)).length, 0, "its interpreters are gone");
  // A process that uses offload() exits on its own once closed.
  const script = fileURLToPath(new URL("./fixtures/offload-exit.ts", import.meta.url));
  const child = spawn(process.execPath, ["--import", "tsx", script], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (d) => (output += d));
  child.stderr.on("data", (d) => (output += d));
  const code = await withTimeout(new Promise<number | null>((resolve) => child.on("exit", resolve)), 30_000, `the child exits by itself: ${output}`).catch((err) => {
    child.kill("SIGKILL");
    throw err;
  });
  assert.is(code, 0, output);
  assert.match(output, /echoed hello/);
}, { timeout: 60_000 });

test("bad options are refused; a protocol that cannot load makes `ready` reject", async () => {
  const server = net.createServer();
  assert.throws(() => offload(server, { protocol: ECHO, capacity: 0 }), RangeError, /capacity/);
  assert.throws(() => offload(server, { protocol: ECHO, interpreters: 1.5 }), RangeError, /interpreters/);
  assert.throws(() => offload(server, { protocol: ECHO, overload: "drop" as "pause" }), RangeError, /overload/);
  assert.throws(() => offload({} as net.Server, { protocol: ECHO }), TypeError, /net.Server/);
  assert.equal(server.listenerCount("connection"), 0, "nothing was attached");
  const missing = offload(server, { protocol: new URL("./fixtures/offload-missing.ts", import.meta.url), interpreters: 1 });
  await assert.rejects(withTimeout(missing.ready, 30_000, "ready"), Error);
  await missing.close();
  assert.equal(server.listenerCount("connection"), 0, "close() detached it");
});

test.run();
