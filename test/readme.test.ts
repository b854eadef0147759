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
/**
 * Each block, and what it must print: the texts of the HTML comment
 * `<!-- prints: a | b | c -->` right after it (invisible on a rendered
 * page), found in its output in that order. A block without one must
 * still exit 0.
 */
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```\n(?:<!-- prints: (.*?) -->\n)?/g)].map((m) => ({
  code: m[1]!,
  prints: m[2] ? m[2].split(" | ") : [],
}));
const entry = pathToFileURL(join(root, "src/index.ts")).href;
const dir = mkdtempSync(join(tmpdir(), "interpreters-readme-"));

test("the README has snippets, and most say what they print", () => {
  assert.ok(blocks.length >= 8, `${blocks.length} snippets`);
  assert.ok(blocks.filter((b) => b.prints.length > 0).length >= blocks.length / 2, "snippets with a prints comment");
});

blocks.forEach(({ code: block, prints }, index) => {
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
    for (const text of prints) {
      const at = output.indexOf(text, from);
      assert.ok(at >= 0, `snippet ${index + 1} should print ${JSON.stringify(text)} (in order); printed:\n${output}`);
      from = at + text.length;
    }
  });
});

test.run();
