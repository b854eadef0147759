/**
 * `npx interpreters top`: one frame with --once (channels with fill bars,
 * waits, a deadlock in capitals, a name's escape sequences shown, not
 * obeyed); frames streamed on a pipe until stopped; a bad or unreachable
 * URL said so with exit codes 2 and 1.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { suite, assert } from "./_harness.js";
import { configureDeadlockDetection, create, createChannel, type Interpreter, serveInspector } from "../src/index.js";
import { inspectorBase } from "../src/cli/top.js";
import { bar, printable } from "../src/inspect/text.js";

const test = suite("top");
const CLI = join(fileURLToPath(new URL("..", import.meta.url)), "dist/src/cli/index.js");
configureDeadlockDetection({ mode: "report", after: 60_000 });

function top(args: string[], until?: (stdout: string) => boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, "top", ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`top ${args.join(" ")} did not end; stdout: ${stdout}; stderr: ${stderr}`));
    }, 30_000);
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
      if (until?.(stdout)) child.kill("SIGTERM");
    });
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("--once: one frame with fill bars, waits and a deadlock; escape sequences in names are shown, not obeyed", async () => {
  const [fillRx, fillTx] = createChannel<number>({ capacity: 4, name: "seen-by-top" });
  fillTx.trySend(1);
  fillTx.trySend(2);
  const [evilRx] = createChannel<number>({ capacity: 1, name: "evil\x1b[2Jname" });
  const [aRx, aTx] = createChannel<number>({ capacity: 0, name: "to-A" });
  const [bRx, bTx] = createChannel<number>({ capacity: 0, name: "to-B" });
  const interpreters: Interpreter[] = [await create({ name: "A" }), await create({ name: "B" })];
  void interpreters[0]!.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: aRx, peer: bTx } }).catch(() => {});
  void interpreters[1]!.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: bRx, peer: aTx } }).catch(() => {});
  const inspector = await serveInspector();
  try {
    let frame = "";
    const deadline = performance.now() + 15_000;
    // The deadlock is listed once both waits have stood still a moment.
    while (!/DEADLOCK/.test(frame)) {
      if (performance.now() > deadline) throw new Error(`no DEADLOCK in: ${frame}`);
      const { code, stdout, stderr } = await top([inspector.url, "--once"]);
      assert.equal(code, 0, stderr);
      frame = stdout;
    }
    assert.match(frame, /seen-by-top\s+4\s+██████░░░░░░\s+2\/4/);
    assert.match(frame, /evil\\x1b\[2Jname/);
    assert.not.ok(frame.includes("\x1b"), "no raw escape on a pipe");
    assert.match(frame, /DEADLOCK for .*"A" recv channel \d+ "to-A" → \d+ "B" recv channel \d+ "to-B"/);
    assert.match(frame, /WAIT-FOR/);
    assert.match(frame, /recv channel \d+ "to-A" for/);
  } finally {
    await inspector.close();
    await Promise.all(interpreters.map((i) => i.terminate()));
    fillRx.close();
    evilRx.close();
  }
});

test("following /events on a pipe: plain frames until stopped; the snapshot.json URL works too", async () => {
  const inspector = await serveInspector();
  try {
    const frames = (text: string) => (text.match(/^interpreters top/gm) ?? []).length;
    const { code, stdout } = await top([`${inspector.url}snapshot.json`], (out) => frames(out) >= 2);
    assert.equal(code, 0);
    assert.ok(frames(stdout) >= 2);
    assert.match(stdout, /INTERPRETERS \(\d+\)/);
  } finally {
    await inspector.close();
  }
});

test("a bad URL exits 2, an unreachable one exits 1, each saying why", async () => {
  const bad = await top(["ftp://example/"]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /ftp: is not supported/);
  const none = await top([]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /give one URL/);
  const unreachable = await top(["http://127.0.0.1:1/", "--once"]);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /cannot read http:\/\/127\.0\.0\.1:1\/snapshot\.json/);
  assert.equal(inspectorBase("127.0.0.1:7777").href, "http://127.0.0.1:7777/");
  assert.equal(inspectorBase("http://127.0.0.1:7777/events").href, "http://127.0.0.1:7777/");
  assert.equal(printable("a\u0007b\u009bc"), "a\\x07b\\x9bc");
  assert.equal(bar(0.5, 4), "██░░");
});

test.run();
