/**
 * The published declarations, as a TypeScript user meets them: the package
 * is packed with `npm pack` (exactly what `npm publish` would ship), unpacked
 * into a small consumer project, and the consumer is checked with tsc under
 * `strict` and `skipLibCheck: false`, with Node's module resolution and with
 * a bundler's. The consumer also uses `@ts-expect-error` where a call must
 * not type-check (a wrong argument through `wrap<T>()`, a missing export, a
 * select case that does not exist): were those types `any`, tsc would
 * report the directives as unused.
 *
 * No network: the consumer's other dependencies (comlink, typed-emitter,
 * @types/node, ...) come from this checkout's node_modules, found by
 * module resolution through a parent folder. Needs `npm run build` first.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";

const test = suite("firstcontact-types");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc");

function run(command: string, args: string[], cwd: string, what: string): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, npm_config_update_notifier: "false" } });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    230_000,
    what,
  );
}

const CONSUMER_MAIN = `
import {
  create,
  createChannel,
  select,
  selectSync,
  DeadlockError,
  ExecutionFailed,
  type Remote,
} from "interpreters";
import type * as Worker from "./worker.js";

const interpreter = await create({ name: "consumer" });

// wrap<T>(): each export becomes an async function with the same parameters.
const remote: Remote<typeof Worker> = interpreter.wrap<typeof Worker>(new URL("./worker.js", import.meta.url));
const sum: number = await remote.add(1, 2);
const greeting: string = await remote.greet({ name: "Ada" });
const limit: number = await remote.LIMIT;
// @ts-expect-error: a string where a number is expected
await remote.add("1", 2);
// @ts-expect-error: the module has no such export
await remote.subtract(1, 2);
// @ts-expect-error: the result is a number, not a string
const wrongResult: string = await remote.add(1, 2);

// select: the result is typed from its cases.
const [numbers, numbersTx] = createChannel<number>({ capacity: 1 });
const [names] = createChannel<string>({ capacity: 1 });
const got = await select([numbers, names, [numbersTx, 5]], { timeout: 10 });
if (got.index === 0) {
  const n: number = got.value;
}
if (got.index === 1) {
  const s: string = got.value;
  // @ts-expect-error: case 1 carries strings
  const notANumber: number = got.value;
}
if (got.index === 2) {
  const nothing: undefined = got.value;
}
// @ts-expect-error: there are three cases
if (got.index === 3) {
}
const many = [numbers, numbers];
const fromArray = selectSync(many, { timeout: 10 });
const index: number = fromArray.index;
const value: number = fromArray.value;

// exec options.
await interpreter.exec("1", { bind: { n: 1 }, release: "failed" });
// @ts-expect-error: not a release mode
await interpreter.exec("1", { release: "always" });

try {
  await interpreter.exec("throw 1");
} catch (err) {
  if (err instanceof ExecutionFailed && err.cause instanceof DeadlockError) console.log(err.cause.cycle.length);
}
await interpreter.close();
export { sum, greeting, limit, wrongResult, index, value };
`;

const CONSUMER_WORKER = `
export function add(a: number, b: number): number {
  return a + b;
}
export async function greet(person: { name: string }): Promise<string> {
  return "hello " + person.name;
}
export const LIMIT = 10;
`;

const COMPILER_OPTIONS = {
  target: "ES2022",
  lib: ["ES2022"],
  strict: true,
  skipLibCheck: false,
  noEmit: true,
  types: ["node"],
};

let workspace = "";
let consumer = "";

test.before(async () => {
  workspace = mkdtempSync(join(tmpdir(), "interpreters-consumer-"));
  // The consumer's dependencies other than the package: resolved through this parent folder.
  symlinkSync(join(repoRoot, "node_modules"), join(workspace, "node_modules"), "dir");
  const packed = await run("npm", ["pack", "--silent", "--pack-destination", workspace], repoRoot, "npm pack");
  assert.is(packed.code, 0, packed.output);
  const tarball = readdirSync(workspace).find((name) => name.endsWith(".tgz"));
  assert.ok(tarball, `npm pack made no tarball: ${packed.output}`);
  consumer = join(workspace, "consumer");
  const unpacked = join(consumer, "node_modules", "interpreters");
  mkdirSync(unpacked, { recursive: true });
  const untar = await run("tar", ["xzf", join(workspace, tarball!), "-C", unpacked, "--strip-components=1"], workspace, "tar");
  assert.is(untar.code, 0, untar.output);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
  writeFileSync(join(consumer, "main.ts"), CONSUMER_MAIN);
  writeFileSync(join(consumer, "worker.ts"), CONSUMER_WORKER);
});

test.after(() => {
  if (workspace) rmSync(workspace, { recursive: true, force: true });
});

const resolutions: Array<{ what: string; module: string; moduleResolution: string }> = [
  { what: "Node's resolution (NodeNext)", module: "NodeNext", moduleResolution: "NodeNext" },
  { what: "a bundler's resolution", module: "ESNext", moduleResolution: "Bundler" },
];

for (const { what, module, moduleResolution } of resolutions) {
  test(`the packed package's declarations check under strict, skipLibCheck: false, with ${what}; wrap<T>() and select are typed`, async () => {
    const config = `tsconfig.${moduleResolution.toLowerCase()}.json`;
    writeFileSync(join(consumer, config), JSON.stringify({ compilerOptions: { ...COMPILER_OPTIONS, module, moduleResolution }, files: ["main.ts", "worker.ts"] }));
    const { code, output } = await run(process.execPath, [tsc, "-p", config], consumer, `tsc -p ${config}`);
    assert.is(code, 0, `tsc reported:\n${output}`);
  }, { timeout: 240_000 });
}

test.run();
