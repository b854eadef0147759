/**
 * The sans-IO HTTP/1.x request parser (examples/protocols/http-parser.ts):
 * - differential against llhttp, Node's own parser (undici's WASM build,
 *   test/fixtures/offload-llhttp.ts), on HTTP_DIFF_COUNT (default 100,000)
 *   byte streams: pipelined generated requests, half of them mutated
 *   (bytes flipped, inserted, deleted, duplicated, case-changed, cut), each
 *   fed in random pieces; the same requests (method, target, version,
 *   header fields, body, keep-alive, upgrade), and the same verdict (more
 *   data needed, upgraded, refused) for every stream. Divergences are
 *   allowed only where undici's llhttp 9.3 has bugs that llhttp 9.4 fixed
 *   (offload-http-gen.ts knownOracleBugs), and counted;
 * - fragmentation: every split of a pipelined stream gives the same events;
 * - limits (431, 413), keep-alive rules, 100-continue, Upgrade/CONNECT.
 *
 * $SEED replays; HTTP_DIFF_COUNT=1000000 for a long run.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { HttpRequestParser, type HttpEvent, type HttpRequest } from "../examples/protocols/http-parser.js";
import { parseWithLlhttp } from "./fixtures/offload-llhttp.js";
import { cut, difference, generateStream, knownOracleBugs, latin1Bytes, mutate, parseWithOurs } from "./fixtures/offload-http-gen.js";

const test = suite("http-parser");
const SEED = seedFromEnv();
const COUNT = Number(process.env.HTTP_DIFF_COUNT ?? 100_000);
console.log(`  http-parser: seed=${SEED} (replay with SEED=${SEED})`);

function requests(events: HttpEvent[]): HttpRequest[] {
  return events.filter((e) => e.kind === "request").map((e) => (e as { request: HttpRequest }).request);
}

function parse(text: string, limits = {}): HttpEvent[] {
  return new HttpRequestParser(limits).execute(latin1Bytes(text));
}

test(`differential against llhttp: ${COUNT} generated and mutated streams in random pieces`, () => {
  const random = rng(SEED);
  let accepted = 0;
  let messages = 0;
  let known = 0;
  const failures: string[] = [];
  const started = performance.now();
  for (let k = 0; k < COUNT; k++) {
    const stream = latin1Bytes(generateStream(random));
    const input = random() < 0.5 ? stream : mutate(random, stream);
    const pieces = cut(random, input);
    const oracle = parseWithLlhttp(pieces);
    if (oracle.end !== "error") accepted++;
    messages += oracle.messages.length;
    const diff = difference(parseWithOurs(pieces), oracle);
    if (!diff) continue;
    const neutral = knownOracleBugs(input);
    if (neutral && !difference(parseWithOurs([neutral]), parseWithLlhttp([neutral]))) {
      known++;
      continue;
    }
    if (failures.length < 5) failures.push(`stream ${k}: ${JSON.stringify(Buffer.from(input).toString("latin1"))}\n  ${diff}`);
    else failures.push("");
  }
  console.log(
    `  http-parser: ${COUNT} streams (${accepted} accepted whole by llhttp, ${messages} requests compared), ` +
      `${known} differences from undici's llhttp 9.3 bugs fixed in 9.4, ${failures.length} unexplained, ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  assert.is(failures.length, 0, `seed=${SEED}: ${failures.length} divergences from llhttp, first:\n${failures.filter(Boolean).join("\n")}`);
  assert.ok(accepted > COUNT / 4, "enough streams are accepted whole to compare requests");
}, { timeout: 300_000 });

const PIPELINE =
  "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Tab:\tv \t\r\n\r\n" +
  "POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello" +
  "\r\n" +
  "PUT /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3;x=\"y\"\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: t\r\n\r\n" +
  "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
  "GET /last HTTP/1.1\r\nConnection: close\r\n\r\n";

test("fragmentation: every split of a pipelined stream gives the same requests", () => {
  const whole = parse(PIPELINE, { maxHeadBytes: 1e9, maxBodyBytes: 1e9 });
  const reqs = requests(whole);
  assert.is(reqs.length, 5);
  assert.equal(
    reqs.map((r) => [r.method, r.target, Buffer.from(r.body).toString(), r.keepAlive]),
    [
      ["GET", "/a?b=1", "", true],
      ["POST", "/echo", "hello", true],
      ["PUT", "/c", "abc0123456789abcdef", true],
      ["GET", "/", "", true],
      ["GET", "/last", "", false],
    ],
  );
  assert.equal(reqs[0]!.headers, [
    ["Host", "x"],
    ["X-Tab", "v"],
  ]);
  assert.equal(reqs[2]!.headers.at(-1), ["Trailer", "t"]);
  const bytes = latin1Bytes(PIPELINE);
  const reference = JSON.stringify(whole, (_, v) => (v instanceof Uint8Array ? [...v] : v));
  for (let at = 0; at <= bytes.length; at++) {
    const parser = new HttpRequestParser();
    const events = [...parser.execute(bytes.subarray(0, at)), ...parser.execute(bytes.subarray(at))];
    assert.is(JSON.stringify(events, (_, v) => (v instanceof Uint8Array ? [...v] : v)), reference, `split at ${at}`);
  }
  const parser = new HttpRequestParser();
  const byteByByte = Array.from(bytes).flatMap((b) => parser.execute(Uint8Array.of(b)));
  assert.is(JSON.stringify(byteByByte, (_, v) => (v instanceof Uint8Array ? [...v] : v)), reference, "one byte at a time");
});

test("limits: a head over maxHeadBytes is 431 (even one that never ends), a body over maxBodyBytes is 413 (at once for Content-Length)", () => {
  const limits = { maxHeadBytes: 100, maxBodyBytes: 10 };
  assert.equal(parse(`GET / HTTP/1.1\r\nX: ${"a".repeat(200)}\r\n\r\n`, limits).at(-1), { kind: "error", status: 431, reason: "request head over 100 bytes" });
  // A slowloris: the head grows a byte at a time and never ends.
  const parser = new HttpRequestParser(limits);
  let last: HttpEvent[] = [];
  for (const b of latin1Bytes(`GET / HTTP/1.1\r\nX: ${"a".repeat(150)}`)) {
    last = parser.execute(Uint8Array.of(b));
    if (last.length > 0) break;
  }
  assert.equal(last.map((e) => e.kind === "error" && e.status), [431]);
  assert.ok(parser.dead);
  assert.equal(parse("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", limits).map((e) => e.kind === "error" && e.status), [413]);
  assert.equal(parse("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", limits).map((e) => e.kind), ["request"]);
  assert.equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n3\r\n", limits).map((e) => e.kind === "error" && e.status), [413]);
  assert.equal(parse("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").map((e) => e.kind === "error" && e.status), [400]);
  assert.equal(parse("GET / HTTP/1.1\r\nX : y\r\n\r\n").map((e) => e.kind === "error" && e.status), [400]);
});

test("keep-alive: HTTP/1.1 unless close, HTTP/1.0 only with keep-alive; nothing but CR/LF after a closing request", () => {
  const keep = (text: string) => requests(parse(text)).map((r) => r.keepAlive);
  assert.equal(keep("GET / HTTP/1.1\r\n\r\n"), [true]);
  assert.equal(keep("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"), [false]);
  assert.equal(keep("GET / HTTP/1.0\r\n\r\n"), [false]);
  assert.equal(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), [true]);
  assert.equal(parse("GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\n\r\n").map((e) => e.kind), ["request", "error"]);
  assert.equal(parse("GET / HTTP/1.0\r\n\r\n\r\n\r\n").map((e) => e.kind), ["request"]);
});

test("Expect: 100-continue is announced before the body; Upgrade and CONNECT end the HTTP stream", () => {
  const events = parse("POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
  assert.equal(events.map((e) => e.kind), ["continue"]);
  const upgrade = parse("GET /chat HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x00\x01binary");
  assert.equal(requests(upgrade).map((r) => r.upgrade), [true]);
  const connect = parse("CONNECT example.com:443 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
  assert.equal(requests(connect).map((r) => [r.method, r.target, r.upgrade]), [["CONNECT", "example.com:443", true]]);
});

test.run();
