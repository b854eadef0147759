/**
 * The sans-IO RESP2 parser (examples/protocols/resp-parser.ts):
 * - differential against the npm package redis-parser on RESP_DIFF_COUNT
 *   (default 100,000) streams of values (every type, nested arrays,
 *   binary bulk strings, nulls), half of them mutated, fed in random
 *   pieces: where ours accepts a stream, redis-parser reads exactly the
 *   same values; where ours refuses one, redis-parser read the same values
 *   before it and either refuses too (a bad type byte) or reads bytes it
 *   does not check (counted by class: redis-parser skips line endings and
 *   reads digits unchecked, offload-resp-gen.ts LAX_CLASSES);
 * - the server side: multibulk and inline commands (Redis's sdssplitargs
 *   quoting), empty commands, limits and Redis's error messages, any
 *   fragmentation.
 *
 * $SEED replays; RESP_DIFF_COUNT=1000000 for a long run.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { NEED_MORE, RespError, RespParser, splitArgs, type RespCommand } from "../examples/protocols/resp-parser.js";
import { generateResp, LAX_CLASSES, mutateResp, parseOurs, parseTheirs } from "./fixtures/offload-resp-gen.js";
import { cut } from "./fixtures/offload-http-gen.js";

const test = suite("resp-parser");
const SEED = seedFromEnv();
const COUNT = Number(process.env.RESP_DIFF_COUNT ?? 100_000);
console.log(`  resp-parser: seed=${SEED} (replay with SEED=${SEED})`);

test(`differential against redis-parser: ${COUNT} generated and mutated streams in random pieces`, () => {
  const random = rng(SEED);
  const classes = new Map<string, number>(LAX_CLASSES.map(([name]) => [name, 0]));
  let bothRefused = 0;
  let accepted = 0;
  let values = 0;
  const failures: string[] = [];
  const started = performance.now();
  for (let k = 0; k < COUNT; k++) {
    const valid = generateResp(random);
    const input = random() < 0.5 ? valid : mutateResp(random, valid);
    const pieces = cut(random, input);
    const ours = parseOurs(pieces);
    const theirs = parseTheirs(pieces);
    let problem: string | undefined;
    if (input === valid && ours.error) problem = `ours refused a generated stream: ${ours.error}`;
    else if (!ours.error) {
      accepted++;
      values += ours.values.length;
      if (theirs.error) problem = `redis-parser refused (${theirs.error}); ours did not`;
      else if (ours.values.join("|") !== theirs.values.join("|")) problem = `values differ:\n  ours   ${ours.values.join("|")}\n  theirs ${theirs.values.join("|")}`;
    } else {
      const before = theirs.values.slice(0, ours.values.length);
      if (before.join("|") !== ours.values.join("|")) problem = `values before our error (${ours.error}) differ:\n  ours   ${ours.values.join("|")}\n  theirs ${before.join("|")}`;
      else if (/invalid type byte/.test(ours.error)) {
        if (theirs.error && theirs.values.length === ours.values.length) bothRefused++;
        else problem = `ours refused a type byte (${ours.error}); redis-parser ${theirs.error ?? "did not"}`;
      } else {
        const lax = LAX_CLASSES.find(([, pattern]) => pattern.test(ours.error!));
        if (lax) classes.set(lax[0], classes.get(lax[0])! + 1);
        else problem = `ours refused (${ours.error}) for no reason redis-parser is known to skip`;
      }
    }
    if (problem) failures.push(`stream ${k} ${JSON.stringify(Buffer.from(input).toString("latin1").slice(0, 300))}: ${problem}`);
  }
  console.log(
    `  resp-parser: ${COUNT} streams, ${accepted} accepted (${values} values identical), ${bothRefused} refused by both (type byte), ` +
      [...classes].map(([name, n]) => `${n} where redis-parser does not check ${name}`).join(", ") +
      `; ${failures.length} unexplained, ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  assert.is(failures.length, 0, `seed=${SEED}: first divergences:\n${failures.slice(0, 5).join("\n")}`);
  assert.ok(accepted > COUNT / 3);
}, { timeout: 300_000 });

/** All commands in `text`, fed whole and split at every byte. */
function commands(text: string): Array<string[] | null | string> {
  const bytes = Buffer.from(text, "latin1");
  const read = (parser: RespParser, out: Array<string[] | null | string>): void => {
    for (;;) {
      let command: RespCommand | null | typeof NEED_MORE;
      try {
        command = parser.readCommand();
      } catch (err) {
        out.push(`error: ${(err as RespError).message}`);
        return;
      }
      if (command === NEED_MORE) return;
      out.push(command === null ? null : command.args.map((a) => Buffer.from(a).toString("latin1")));
    }
  };
  const whole: Array<string[] | null | string> = [];
  const parser = new RespParser();
  parser.push(bytes);
  read(parser, whole);
  for (let at = 1; at < bytes.length; at++) {
    const split = new RespParser();
    const got: Array<string[] | null | string> = [];
    split.push(bytes.subarray(0, at));
    read(split, got);
    if (got.some((g) => typeof g === "string")) continue; // an error seen early is fine
    split.push(bytes.subarray(at));
    read(split, got);
    assert.equal(got, whole, `split at ${at}`);
  }
  return whole;
}

test("commands: multibulk, inline (Redis's quoting), empty ones, pipelined, split anywhere", () => {
  assert.equal(commands("*2\r\n$3\r\nGET\r\n$3\r\nk\x00y\r\nPING\r\n*0\r\n\r\nSET  'a b' \"c\\x41\\n\"\r\n*3\r\n$4\r\nMSET\r\n$0\r\n\r\n$1\r\nv\r\n"), [
    ["GET", "k\x00y"],
    ["PING"],
    null,
    null,
    ["SET", "a b", "cA\n"],
    ["MSET", "", "v"],
  ]);
  assert.equal(commands("PING\n"), [["PING"]]);
  assert.equal(commands("*-1\r\nECHO hi\r\n"), [null, ["ECHO", "hi"]]);
});

test("commands: errors with Redis's messages", () => {
  assert.equal(commands("*2\r\n:3\r\n"), ["error: Protocol error: expected '$', got ':'"]);
  assert.equal(commands("*x\r\n"), ["error: Protocol error: invalid multibulk length"]);
  assert.equal(commands("*2000000\r\n"), ["error: Protocol error: invalid multibulk length"]);
  assert.equal(commands("*1\r\n$-1\r\n"), ["error: Protocol error: invalid bulk length"]);
  assert.equal(commands("*1\r\n$01\r\na\r\n"), ["error: Protocol error: invalid bulk length"]);
  assert.equal(commands("*1\r\n$1\r\nab\r\n"), ["error: Protocol error: expected CR LF after bulk data"]);
  assert.equal(commands('SET "a\r\n'), ["error: Protocol error: unbalanced quotes in request"]);
  const parser = new RespParser();
  parser.push(Buffer.alloc(70 * 1024, 0x61));
  assert.throws(() => parser.readCommand(), RespError, /too big inline request/);
});

test("sdssplitargs: quotes, escapes, a closing quote must end the argument, NUL ends the line", () => {
  const split = (s: string) => splitArgs(Buffer.from(s, "latin1"))?.map((a) => Buffer.from(a).toString("latin1"));
  assert.equal(split(`a "b c" 'd e' "\\x4a\\n\\t\\\\" '\\'' ""`), ["a", "b c", "d e", "J\n\t\\", "'", ""]);
  assert.equal(split(`"a"b`), undefined);
  assert.equal(split(`'a`), undefined);
  assert.equal(split(`a\x00 b`), ["a"]);
  assert.equal(split(` \t `), []);
});

test.run();
