/**
 * The README's snippets run as written: each ```ts block is run in its own
 * Node process against this checkout (with "interpreters" pointing at the
 * source), and must exit 0 printing what its comments say.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";

const test = suite("readme");
const root = fileURLToPath(new URL("..", import.meta.url));
const readme = readFileSync(join(root, "README.md"), "utf8");
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
const entry = pathToFileURL(join(root, "src/index.ts")).href;
const dir = mkdtempSync(join(tmpdir(), "interpreters-readme-"));

/** What each snippet must print (in order), by snippet index. */
const expected: Record<number, string[]> = {
  0: ["false", "hello", "world", "true"],
  1: ["1", "4", "9"],
  2: ["true RangeError"],
  3: ["was moved into a message on channel", "pong"],
  4: ["true false", "value.handlers[2]"],
  5: ["{ index: 1, value: 'from fast' }", "0 offer"],
  6: ["20000"],
  7: ["bad input 1"],
  8: ["4", "16", "36", "square: 6 in, 6 out; evens: 6 in, 3 out"],
  9: ["parse-json { index: 1, preview: \"'oops'\" } SyntaxError"],
};

test("the README has the snippets this test expects", () => {
  assert.is(blocks.length, Object.keys(expected).length);
});

blocks.forEach((block, index) => {
  test(`README snippet ${index + 1} runs as written`, async () => {
    const file = join(dir, `snippet-${index}.mts`);
    writeFileSync(file, block.replaceAll('from "interpreters"', `from ${JSON.stringify(entry)}`));
    const { code, output } = await withTimeout(
      new Promise<{ code: number | null; output: string }>((resolve) => {
        const child = spawn(process.execPath, ["--import", "tsx", file], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
        let output = "";
        child.stdout.on("data", (d) => (output += d));
        child.stderr.on("data", (d) => (output += d));
        child.on("exit", (code) => resolve({ code, output }));
      }),
      60_000,
      `README snippet ${index + 1}`,
    );
    assert.is(code, 0, output);
    let from = 0;
    for (const text of expected[index] ?? []) {
      const at = output.indexOf(text, from);
      assert.ok(at >= 0, `snippet ${index + 1} should print ${JSON.stringify(text)} (in order); printed:\n${output}`);
      from = at + text.length;
    }
  });
});

test.run();
