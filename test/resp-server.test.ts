/**
 * The RESP server example (`node dist/examples/resp-server.js`), its
 * keyspace sharded across 3 interpreters, against Debian's redis-server
 * started beside it (loopback, no persistence): redis-cli round-trips
 * every command with output identical to redis-server's (or, where they
 * must differ, of the right shape); redis-benchmark completes its suite at
 * -P 1 and -P 16 with no error; a seeded random command sequence across
 * shards gets exactly redis-server's replies; concurrent connections end
 * where they must.
 *
 * Needs `npm run build` first (npm test does it) and Debian's redis-tools
 * and redis-server. $SEED replays.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { RespConnection, run, show, startRedis, startServer, type Running } from "./fixtures/offload-servers.js";

const test = suite("resp-server");
const SEED = seedFromEnv();
console.log(`  resp-server: seed=${SEED} (replay with SEED=${SEED})`);
let ours: Running;
let redis: { port: number; stop(): Promise<void> };

test.before(async () => {
  [ours, redis] = await Promise.all([startServer("dist/examples/resp-server.js", ["--port", "0", "--interpreters", "3"]), startRedis()]);
});
test.after(async () => {
  await Promise.all([ours?.stop(), redis?.stop()]);
});

/** redis-cli with `lines` on stdin (one connection, one command a line), its output. */
async function cli(port: number, lines: string[]): Promise<string> {
  const { code, output } = await run("redis-cli", ["-p", String(port)], 60_000, lines.join("\n") + "\n");
  assert.is(code, 0, output);
  return output;
}

const SCRIPT = [
  "FLUSHALL",
  "PING",
  "PING hello",
  "PING a b",
  'ECHO "hi there"',
  "SET a 1",
  "GET a",
  "INCR a",
  "INCRBY a 41",
  "DECR a",
  "DECRBY a 2",
  "INCR fresh",
  "DECRBY fresh -9223372036854775808",
  "SET s notanumber",
  "INCR s",
  "INCRBY a x",
  "SET big 9223372036854775807",
  "INCR big",
  "SET k v EX 100",
  "SET k v2 NX",
  "SET k v3 XX",
  "GET k",
  "SET k2 v XX",
  "SET k v4 GET",
  "SET k v5 EX 0",
  "SET k v5 EX 10 PX 10",
  "SET k v5 EX 10 EX 20",
  "SET k v6 KEEPTTL",
  "SET k v7 NX GET",
  "SET k v8 PX 100000 XX",
  "SET k v9 FOO",
  "GET k",
  "MSET m1 a m2 b m3 c m4 d m5 e m6 f m7 g m8 h",
  "MGET m1 m2 nokey m3 m4 m5 m6 m7 m8 m1",
  "MSET odd",
  "MSET a b c",
  "EXISTS m1 m2 nokey m1 m8",
  "DEL m1 m2 nokey m2",
  "EXISTS m1 m2",
  "DBSIZE",
  "GET",
  "GET a b",
  "FOO bar baz",
  "get a",
  "SeT mixedcase yes",
  "SELECT 0",
  "SELECT x",
  "CLIENT SETNAME tester",
  "CLIENT GETNAME",
  "CLIENT SETNAME",
  "CLIENT NOSUCH",
  "CONFIG GET save",
  "CONFIG GET appendonly",
  "FLUSHALL SYNC",
  "DBSIZE",
  "SET after flush",
  "FLUSHDB",
  "DBSIZE",
  "FLUSHALL BAD",
  "QUIT",
];

test("prints its URL; redis-cli round-trips every command with output identical to redis-server's", async () => {
  assert.match(ours.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
  const [mine, theirs] = await Promise.all([cli(ours.port, SCRIPT), cli(redis.port, SCRIPT)]);
  const a = mine.split("\n");
  const b = theirs.split("\n");
  for (let k = 0; k < Math.max(a.length, b.length); k++) assert.is(a[k], b[k], `line ${k} of the outputs (ours, redis-server's); script:\n${SCRIPT.join("\n")}\nours:\n${mine}`);
  // One command per invocation, as people use it.
  for (const command of [["SET", "one", "1"], ["GET", "one"], ["MGET", "one", "two"], ["DEL", "one"]]) {
    const [x, y] = await Promise.all([run("redis-cli", ["-p", String(ours.port), ...command], 30_000), run("redis-cli", ["-p", String(redis.port), ...command], 30_000)]);
    assert.is(x.output, y.output, command.join(" "));
  }
});

test("redis-cli: the commands whose answers must differ answer in the right shape", async () => {
  const hello = (await cli(ours.port, ["HELLO 2"])).split("\n");
  assert.equal(hello.slice(0, 6), ["server", "redis", "version", "7.0.15", "proto", "2"]);
  assert.equal(hello.slice(8, 13), ["mode", "standalone", "role", "master", "modules"]);
  assert.match(await cli(ours.port, ["HELLO 3"]), /^NOPROTO/);
  assert.match(await cli(ours.port, ["CLIENT ID"]), /^\d+\n$/);
  assert.match(await cli(ours.port, ["CLIENT INFO"]), /^id=\d+ addr=127\.0\.0\.1:\d+ /);
  assert.match(await cli(ours.port, ["COMMAND COUNT"]), /^22\n$/);
  assert.match(await cli(ours.port, ["COMMAND INFO get"]), /^get\n2\n/);
  assert.match(await cli(ours.port, ["COMMAND DOCS get"]), /^get\nsummary\n/);
  assert.match(await cli(ours.port, ["INFO"]), /redis_version:7\.0\.15/);
  // One database (redis-server has 16 by default).
  assert.match(await cli(ours.port, ["SELECT 1"]), /^ERR DB index is out of range\n/);
});

test("redis-benchmark -t ping_inline,ping_mbulk,set,get,incr,mset -c 50 at -P 1 and -P 16: no error", async () => {
  for (const [pipeline, requests] of [
    [1, 5000],
    [16, 40_000],
  ] as const) {
    const { code, output } = await run(
      "redis-benchmark",
      ["-p", String(ours.port), "-t", "ping_inline,ping_mbulk,set,get,incr,mset", "-c", "50", "-n", String(requests), "-r", "1000", "-P", String(pipeline), "--csv"],
      180_000,
    );
    assert.is(code, 0, output);
    assert.not.match(output, /error/i, output);
    for (const name of ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"]) {
      const row = new RegExp(`^"${name.replace(/[()]/g, "\\$&")}","([0-9.]+)"`, "m").exec(output);
      assert.ok(row && Number(row[1]) > 0, `-P ${pipeline}: a ${name} row in\n${output}`);
    }
  }
  // What it wrote reads back: its SETs and MSETs store "xxx" (3 bytes of x).
  const client = await RespConnection.open(ours.port);
  const [size, value] = await client.send([["DBSIZE"], ["GET", "key:__rand_int__"]]);
  assert.ok(Number((size as { value: string }).value) > 0, "keys were written");
  assert.ok(show(value!) === "$xxx" || show(value!) === "$nil", show(value!));
  client.socket.destroy();
}, { timeout: 300_000 });

/** A random command over a small keyspace (shared by the shards), binary keys and values included. */
function randomCommand(random: () => number): string[] {
  const key = (): string => (random() < 0.1 ? `bin\x00\xff${Math.floor(random() * 4)}` : `key:${Math.floor(random() * 40)}`);
  const value = (): string => (random() < 0.3 ? String(Math.floor(random() * 200) - 100) : random() < 0.1 ? "\r\n\x00bin" : `v${Math.floor(random() * 1000)}`);
  const r = random();
  if (r < 0.2) return ["SET", key(), value(), ...(random() < 0.2 ? [["NX", "XX", "GET"][Math.floor(random() * 3)]!] : [])];
  if (r < 0.4) return ["GET", key()];
  if (r < 0.5) return ["INCR", key()];
  if (r < 0.55) return ["INCRBY", key(), String(Math.floor(random() * 1000) - 500)];
  if (r < 0.6) return ["DECR", key()];
  if (r < 0.67) return ["DEL", ...Array.from({ length: 1 + Math.floor(random() * 4) }, key)];
  if (r < 0.74) return ["EXISTS", ...Array.from({ length: 1 + Math.floor(random() * 4) }, key)];
  if (r < 0.84) return ["MGET", ...Array.from({ length: 1 + Math.floor(random() * 8) }, key)];
  if (r < 0.94) return ["MSET", ...Array.from({ length: 1 + Math.floor(random() * 6) }, () => [key(), value()]).flat()];
  if (r < 0.99) return ["DBSIZE"];
  return ["FLUSHALL"];
}

test("sharded keyspace: a seeded random command sequence, pipelined in random batches, gets exactly redis-server's replies", async () => {
  const random = rng(SEED);
  const a = await RespConnection.open(ours.port);
  const b = await RespConnection.open(redis.port);
  await Promise.all([a.send([["FLUSHALL"]]), b.send([["FLUSHALL"]])]);
  let compared = 0;
  while (compared < 3000) {
    const batch = Array.from({ length: 1 + Math.floor(random() * (random() < 0.5 ? 4 : 60)) }, () => randomCommand(random));
    const [x, y] = await Promise.all([a.send(batch), b.send(batch)]);
    for (let k = 0; k < batch.length; k++) {
      assert.is(show(x[k]!), show(y[k]!), `seed=${SEED}: command ${compared + k}: ${JSON.stringify(batch[k])}`);
    }
    compared += batch.length;
  }
  a.socket.destroy();
  b.socket.destroy();
}, { timeout: 120_000 });

test("sharded keyspace: concurrent connections' INCRs all count, and each reads back its own MSETs across shards", async () => {
  const random = rng(SEED + 1);
  const expected = new Map<string, number>();
  const connections = await Promise.all(Array.from({ length: 10 }, () => RespConnection.open(ours.port)));
  await connections[0]!.send([["FLUSHALL"]]);
  await Promise.all(
    connections.map(async (connection, c) => {
      for (let round = 0; round < 20; round++) {
        const incrs = Array.from({ length: 1 + Math.floor(random() * 30) }, () => {
          const key = `counter:${Math.floor(random() * 20)}`;
          expected.set(key, (expected.get(key) ?? 0) + 1);
          return ["INCR", key];
        });
        const pairs = Array.from({ length: 8 }, (_, k) => [`own:${c}:${k}`, `${c}-${round}-${k}`]);
        const replies = await connection.send([...incrs, ["MSET", ...pairs.flat()], ["MGET", ...pairs.map(([key]) => key!)]]);
        assert.is(show(replies.at(-2)!), "+OK");
        assert.is(show(replies.at(-1)!), `*[${pairs.map(([, value]) => `$${value}`).join(",")}]`);
      }
    }),
  );
  const keys = [...expected.keys()];
  const [values] = await connections[0]!.send([["MGET", ...keys]]);
  assert.is(show(values!), `*[${keys.map((key) => `$${expected.get(key)}`).join(",")}]`);
  for (const connection of connections) connection.socket.destroy();
}, { timeout: 120_000 });

test.run();
