/**
 * serveInspector() over HTTP, without a browser: loopback by default and
 * refusing another host without allowRemote, read-only, Host header
 * checked, /snapshot.json, server-sent events at >= 4 a second, a slow
 * client skipping frames; INTERPRETERS_INSPECT in a program that does not
 * call it (and that still ends on its own).
 */
import { spawn } from "node:child_process";
import { request } from "node:http";
import { fileURLToPath } from "node:url";
import { suite, assert } from "./_harness.js";
import { createChannel, serveInspector } from "../src/index.js";
import { parseInspectAddress } from "../src/inspect/auto.js";
import { isLoopback } from "../src/inspect/server.js";
import { snapshotFromJson } from "../src/inspect/types.js";

const test = suite("inspect-server");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function get(url: string, options: { method?: string; host?: string } = {}): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const req = request(
      { hostname: target.hostname, port: target.port, path: target.pathname, method: options.method ?? "GET", headers: options.host ? { Host: options.host } : {}, timeout: 10_000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => (body += chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error(`no answer from ${url}`)));
    req.end();
  });
}

/** Reads server-sent events from `url` for `ms`; returns the data of each. */
function readEvents(url: string, ms: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const frames: string[] = [];
    let buffer = "";
    const req = request({ hostname: target.hostname, port: target.port, path: "/events" }, (res) => {
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
          if (data) frames.push(data);
        }
      });
    });
    req.on("error", reject);
    req.end();
    setTimeout(() => {
      req.destroy();
      resolve(frames);
    }, ms);
  });
}

test("loopback by default; any other host refused without allowRemote, naming the option", async () => {
  const inspector = await serveInspector();
  try {
    assert.match(inspector.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  } finally {
    await inspector.close();
  }
  for (const host of ["0.0.0.0", "192.168.1.10", "::", "example.org"]) {
    await assert.rejects(() => serveInspector({ host }), RangeError, /allowRemote/);
  }
  await assert.rejects(() => serveInspector({ port: 70000 }), RangeError, /port/);
  await assert.rejects(() => serveInspector({ intervalMs: 5 }), RangeError, /intervalMs/);
  assert.ok(isLoopback("127.0.0.5") && isLoopback("::1") && isLoopback("localhost") && isLoopback("[::1]"));
  assert.not.ok(isLoopback("10.0.0.1") || isLoopback("0.0.0.0") || isLoopback("::"));
});

test("/snapshot.json, the page and its script; read-only; a foreign Host header is refused", async () => {
  const [rx, tx] = createChannel<number>({ capacity: Infinity, name: "unbounded" });
  tx.trySend(1);
  const inspector = await serveInspector();
  try {
    const snapshot = await get(`${inspector.url}snapshot.json`);
    assert.equal(snapshot.status, 200);
    assert.match(String(snapshot.headers["content-type"]), /application\/json/);
    assert.match(snapshot.body, /"capacity":"Infinity"/);
    const parsed = snapshotFromJson(snapshot.body);
    const c = parsed.channels.find((c) => c.name === "unbounded")!;
    assert.equal([c.capacity, c.length], [Infinity, 1]);
    const page = await get(inspector.url);
    assert.equal(page.status, 200);
    assert.match(page.body, /<script src="\/app\.js"><\/script>/);
    assert.match(String(page.headers["content-security-policy"]), /script-src 'self'/);
    assert.equal((await get(`${inspector.url}app.js`)).status, 200);
    assert.equal((await get(`${inspector.url}nothing-here`)).status, 404);
    for (const method of ["POST", "PUT", "DELETE"]) assert.equal((await get(`${inspector.url}snapshot.json`, { method })).status, 405);
    assert.equal((await get(`${inspector.url}snapshot.json`, { host: "attacker.example:80" })).status, 421);
    const port = new URL(inspector.url).port;
    assert.equal((await get(`${inspector.url}snapshot.json`, { host: `localhost:${port}` })).status, 200);
  } finally {
    await inspector.close();
  }
  rx.close();
});

test("server-sent events: at least 4 snapshots a second (10 by default)", async () => {
  const inspector = await serveInspector();
  try {
    const frames = await readEvents(inspector.url, 2000);
    assert.ok(frames.length >= 8, `${frames.length} frames in 2 s`);
    for (const frame of frames) assert.ok(Array.isArray(snapshotFromJson(frame).channels));
  } finally {
    await inspector.close();
  }
});

test("INTERPRETERS_INSPECT starts the page in a program that does not call it; the program still ends on its own", async () => {
  assert.equal(parseInspectAddress("127.0.0.1:7777"), { host: "127.0.0.1", port: 7777 });
  assert.equal(parseInspectAddress("[::1]:0"), { host: "::1", port: 0 });
  assert.equal(parseInspectAddress("9000"), { host: "127.0.0.1", port: 9000 });
  assert.throws(() => parseInspectAddress("nope"), RangeError, /INTERPRETERS_INSPECT/);
  // The program waits until the test has read its snapshot (a line on stdin), then ends without closing anything.
  const program = `
    import { createChannel } from "interpreters";
    const [rx, tx] = createChannel({ capacity: 3, name: "from-env" });
    tx.trySend("a");
    process.stdin.once("data", () => { process.stdin.destroy(); });
  `;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", program.replace('"interpreters"', JSON.stringify(new URL("../src/index.ts", import.meta.url).href))], {
    cwd: repoRoot,
    env: { ...process.env, INTERPRETERS_INSPECT: "127.0.0.1:0" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no inspector url on stderr: ${stderr}`)), 20_000);
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /inspector at (http:\/\/\S+)/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
  });
  const snapshot = snapshotFromJson((await get(`${url}snapshot.json`)).body);
  assert.equal(snapshot.channels.find((c) => c.name === "from-env")?.length, 1);
  child.stdin.write("done\n");
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the program did not end on its own with the inspector running")), 20_000);
    child.on("exit", (exitCode) => {
      clearTimeout(timer);
      resolve(exitCode);
    });
  });
  assert.equal(code, 0, stderr);
});

test.run();
