/**
 * Review of reused channel ids (registry.ts allocateChannelId, the
 * supervisor's freeChannelIds): two live channels never share an id, also
 * across the moment the supervisor starts (main used ids of its own until
 * then). Each case runs in a child process: it uses up the id space.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";

const test = suite("review-ids");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function runNode(script: string, what: string): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    what,
  );
}

test("ids run out while main is alone, then an interpreter starts: main and the interpreter never hand out the same id to two live channels", async () => {
  const script = `
    import { create, createChannel } from "./src/index.ts";
    import { setNextChannelIdForTesting, MAX_ID } from "./src/control.ts";
    setNextChannelIdForTesting(MAX_ID - 1);
    const live = [createChannel({ name: "last-fresh" }), createChannel({ name: "main-reused" })]; // the second reuses an id of main's own
    const worker = await create({ name: "maker" });
    const [idsRx, idsTx] = createChannel();
    live.push([idsRx, idsTx]);
    // The interpreter makes 5 channels and keeps them open; main makes 5 more.
    const running = worker.exec("import { createChannel } from '" + new URL("./src/index.ts", "file://" + process.cwd() + "/").href + "'; globalThis.kept = []; for (let i = 0; i < 5; i++) { const pair = createChannel(); kept.push(pair); out.sendSync(pair[0].id); }", { bind: { out: idsTx.clone() } });
    const theirs = [];
    for (let i = 0; i < 5; i++) theirs.push(await idsRx.recv({ timeout: 10000 }));
    await running;
    for (let i = 0; i < 5; i++) live.push(createChannel({ name: "main-" + i }));
    const ours = live.map(([rx]) => rx.id);
    const shared = ours.filter((id) => theirs.includes(id));
    console.log("main:", ours.join(","), "interpreter:", theirs.join(","));
    if (shared.length > 0) { console.log("ids of two live channels:", shared.join(",")); process.exit(3); }
    // And the channels work across: main sends an end of its newest channel to the interpreter.
    const [rx, tx] = live[live.length - 1];
    await worker.exec("t.sendSync('from the interpreter'); t.close();", { bind: { t: tx } });
    if ((await rx.recv({ timeout: 10000 })) !== "from the interpreter") process.exit(4);
    await worker.close();
    console.log("ok");
  `;
  const { code, output } = await runNode(script, "id space child");
  assert.is(code, 0, output);
  assert.match(output, /ok/);
});

test.run();
