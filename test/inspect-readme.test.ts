/**
 * The README's sections on the inspector and the lab run as written: each
 * ```js block of "## Seeing a running system" and "## The buffer-semantics
 * lab" runs in its own Node process against this checkout and prints what
 * its comments say. (test/readme.test.ts runs the ```ts blocks of the
 * tour; these sections are kept apart so that each layer tests its own.)
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";

const test = suite("inspect-readme");
const root = fileURLToPath(new URL("..", import.meta.url));
const readme = readFileSync(join(root, "README.md"), "utf8");

function section(heading: string): string {
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README has no "${heading}"`);
  const next = readme.indexOf("\n## ", start + heading.length + 2);
  return readme.slice(start, next < 0 ? undefined : next);
}

const blocks = [...section("## Seeing a running system").matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
/** What each block must print, in order. */
const expected = [["3 of 8", "recv false", "true"]];

test("the inspector section has the snippets this test expects", () => {
  assert.is(blocks.length, expected.length);
  assert.match(section("## The buffer-semantics lab"), /npx interpreters lab/);
});

blocks.forEach((block, index) => {
  test(`inspector snippet ${index + 1} runs as written`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "interpreters-readme-"));
    try {
      const file = join(dir, `snippet-${index}.mjs`);
      writeFileSync(file, block.replaceAll('from "interpreters"', `from ${JSON.stringify(pathToFileURL(join(root, "src/index.ts")).href)}`));
      const { code, output } = await withTimeout(
        new Promise<{ code: number | null; output: string }>((resolve) => {
          const child = spawn(process.execPath, ["--import", "tsx", file], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
          let output = "";
          child.stdout.on("data", (d) => (output += d));
          child.stderr.on("data", (d) => (output += d));
          child.on("exit", (exitCode) => resolve({ code: exitCode, output }));
        }),
        60_000,
        `inspector snippet ${index + 1}`,
      );
      assert.is(code, 0, output);
      let from = 0;
      for (const text of expected[index] ?? []) {
        const at = output.indexOf(text, from);
        assert.ok(at >= 0, `snippet ${index + 1} should print ${JSON.stringify(text)} (in order); printed:\n${output}`);
        from = at + text.length;
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test.run();
