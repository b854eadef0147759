/**
 * What a new user trips over first (issue 12): wrap() of a module that
 * fails to load, module specifiers (URLs, relative strings, what they
 * resolve against, what errors say), TypeScript modules in interpreters,
 * errors crossing back from exec (SyntaxError locations, library error
 * classes with their fields), exec's `release` option, the `npm start` demo,
 * and a test run's output free of expected warnings. Types are in
 * firstcontact-types.test.ts.
 *
 * Tests that start Node child processes use the built package (dist/): run
 * `npm run build` first (`npm test` does).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import * as library from "../src/index.js";
import {
  ChannelClosedError,
  create,
  createChannel,
  DeadlockError,
  ExecutionFailed,
  InterpretersError,
  NotShareableError,
  TaskGroup,
  type Interpreter,
} from "../src/index.js";

const test = suite("firstcontact");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const thisFile = import.meta.url;
const syntaxErrorModule = new URL("./fixtures/firstcontact-syntax-error.js", import.meta.url);
const throwingModule = new URL("./fixtures/firstcontact-throws.js", import.meta.url);

async function withInterpreter<T>(name: string, body: (interpreter: Interpreter) => Promise<T>): Promise<T> {
  const interpreter = await create({ name });
  try {
    return await body(interpreter);
  } finally {
    await interpreter.terminate();
  }
}

/** Per test that starts a Node process: generous, the machine is shared (its own child's deadline is a bit shorter). */
const CHILD_TIMEOUT = 180_000;

function runNode(args: string[], what: string, options: { env?: Record<string, string>; command?: string; timeout?: number } = {}): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(options.command ?? process.execPath, args, {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, FORCE_COLOR: "0", ...options.env },
      });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    options.timeout ?? CHILD_TIMEOUT - 10_000,
    what,
  );
}

// ---------------------------------------------------------------------------
// 1. wrap() settles

test("wrap of a module that is missing, does not parse or throws while loading: every call rejects with ExecutionFailed carrying the import error", async () => {
  await withInterpreter("wrapper", async (interpreter) => {
    const missing = interpreter.wrap<{ anything(): Promise<number> }>("./fixtures/firstcontact-missing.js");
    const notFound = (await assert.rejects(missing.anything(), ExecutionFailed)) as ExecutionFailed;
    assert.is((notFound.cause as { code?: string }).code, "ERR_MODULE_NOT_FOUND");
    assert.match(notFound.message, /firstcontact-missing\.js/);

    const broken = interpreter.wrap<{ add(a: number, b: number): number }>(syntaxErrorModule);
    const before = broken.add(1, 2); // sent before the import has failed
    const first = (await assert.rejects(before, ExecutionFailed)) as ExecutionFailed;
    assert.instance(first.cause, SyntaxError);
    assert.match(first.message, /firstcontact-syntax-error\.js:4:14/);
    const later = (await assert.rejects(broken.add(3, 4), ExecutionFailed)) as ExecutionFailed; // sent after
    assert.is(later, first);

    const throwing = interpreter.wrap<{ anything(): number }>(throwingModule);
    const refused = (await assert.rejects(throwing.anything(), ExecutionFailed)) as ExecutionFailed;
    assert.instance(refused.cause, RangeError);
    assert.match(refused.message, /this module refuses to load/);

    // The interpreter is unharmed, and call() on the same modules rejects the same way.
    assert.is(await interpreter.call<number>(new URL("./fixtures/module.ts", import.meta.url), "default", 2, 2), 4);
    await assert.rejects(interpreter.call(syntaxErrorModule, "add", 1, 2), ExecutionFailed, /firstcontact-syntax-error\.js:4:14/);
  });
});

// ---------------------------------------------------------------------------
// 3. Module specifiers

test("relative specifiers resolve against the calling file (this test file), not the working directory; URLs work everywhere", async () => {
  assert.not.ok(process.cwd().endsWith("/test"), "the test runs from the repository root, not test/");
  await withInterpreter("resolver", async (interpreter) => {
    assert.is(await interpreter.call<number>("./fixtures/module.ts", "default", 2, 3), 5);
    assert.is(await interpreter.call<number>(new URL("./fixtures/module.ts", import.meta.url), "default", 2, 4), 6);
    assert.is(await interpreter.call<number>(fileURLToPath(new URL("./fixtures/module.ts", import.meta.url)), "default", 2, 5), 7);
    const remote = interpreter.wrap<typeof import("./fixtures/module.js")>("./fixtures/module.ts");
    assert.is(await remote.default(1, 1), 2);
    const [rx, tx] = createChannel<number>({ capacity: 4 });
    await interpreter.exec(
      `
      import add from "./fixtures/module.ts";
      import { fail } from ${JSON.stringify(new URL("./fixtures/module.ts", import.meta.url).href)};
      out.sendSync(add(20, 1));
      out.sendSync(typeof fail === "function" ? 1 : 0);
    `,
      { bind: { out: tx } },
    );
    assert.is(await rx.recv({ timeout: 10_000 }), 21);
    assert.is(await rx.recv({ timeout: 10_000 }), 1);
    // Code run by exec resolves against the file that sent it, in nested interpreters too.
    await interpreter.exec(`
      import { create } from "interpreters";
      const child = await create({ name: "grandchild" });
      try {
        out.sendSync(await child.call("./fixtures/module.ts", "default", 40, 2));
      } finally {
        await child.close();
      }
    `);
    assert.is(await rx.recv({ timeout: 10_000 }), 42);
  });
});

test("an unresolvable specifier's error names the specifier and the base, never a library-internal file", async () => {
  await withInterpreter("resolver", async (interpreter) => {
    const relative = (await assert.rejects(interpreter.call("./fixtures/no-such-module.js", "x"), ExecutionFailed)) as ExecutionFailed;
    assert.match(relative.message, /"\.\/fixtures\/no-such-module\.js"/);
    assert.ok(relative.message.includes(`${thisFile} (the calling file)`), relative.message);
    assert.ok(relative.message.includes(new URL("./fixtures/no-such-module.js", import.meta.url).href), relative.message);

    const bare = (await assert.rejects(interpreter.call("no-such-package-for-firstcontact", "x"), ExecutionFailed)) as ExecutionFailed;
    assert.match(bare.message, /"no-such-package-for-firstcontact"/);
    assert.ok(bare.message.includes(`${thisFile} (the calling file)`), bare.message);

    const fromExec = (await assert.rejects(interpreter.exec(`import "./fixtures/no-such-module.js";`), ExecutionFailed)) as ExecutionFailed;
    assert.ok(fromExec.message.includes(fileURLToPath(thisFile)), fromExec.message); // Node's "imported from <the calling file>"

    for (const err of [relative, bare, fromExec]) {
      assert.not.match(err.message, /workers[/\\]interpreter/, "names a library-internal file");
      assert.not.match(err.message, /data:text/, "names a data: URL");
    }
  });
});

// ---------------------------------------------------------------------------
// 5. Errors across exec

test("a SyntaxError in exec source says its line and column; a link error its line", async () => {
  await withInterpreter("parser", async (interpreter) => {
    const err = (await assert.rejects(interpreter.exec("const a = 1;\nlet b = 2\nsyntax error here (\n"), ExecutionFailed)) as ExecutionFailed;
    assert.is(err.remote.name, "SyntaxError");
    assert.match(err.message, /line 3, column 8 of the exec source/);
    assert.instance(err.cause, SyntaxError);
    assert.match(err.remote.stack, /> 3 \| syntax error here \(\n\s+\|\s{8}\^/);
    assert.not.match(err.remote.stack, /data:text/);

    const link = (await assert.rejects(interpreter.exec("// two lines\n// of comments\nimport { nope } from 'node:fs';"), ExecutionFailed)) as ExecutionFailed;
    assert.match(link.message, /does not provide an export named 'nope' \(line 3 of the exec source\)/);

    // A SyntaxError thrown at run time is left as it is (its stack has its place).
    const runtime = (await assert.rejects(interpreter.exec(`\n\nJSON.parse("{");`), ExecutionFailed)) as ExecutionFailed;
    assert.not.match(runtime.message, /of the exec source/);
    assert.match(runtime.remote.stack, /\[exec-\d+\]:3:/);
  });
});

/** Constructor arguments for each library error class that takes more than a message (others: the message alone). */
function argumentsFor(name: string, message: string): unknown[] {
  switch (name) {
    case "DeadlockError":
      return [message, [{ interpreter: { id: 7, name: "seven" }, op: "recv", channel: { id: 3, name: "jobs" } }]];
    case "NotShareableError":
      return [message, "value.handlers[2]"];
    case "ExecutionFailed":
      return [{ name: "TypeError", message: "inner", stack: "TypeError: inner\n    at somewhere" }, "exec in interpreter 9"];
    case "StageFailed":
      return [message, { stage: "parse", worker: 1, item: { index: 4, preview: "{ id: 4 }" }, remote: { name: "Error", message: "bad item", stack: "Error: bad item" } }];
    default:
      return [message];
  }
}

test("every library error class thrown in an interpreter reaches main as ExecutionFailed whose cause is an instance of that class with its fields", async () => {
  const classes = Object.entries(library).filter(
    (entry): entry is [string, new (...args: unknown[]) => InterpretersError] =>
      typeof entry[1] === "function" && (entry[1] === InterpretersError || entry[1].prototype instanceof InterpretersError),
  );
  assert.ok(classes.length >= 11, `found ${classes.map(([name]) => name).join(", ")}`);
  await withInterpreter("thrower", async (interpreter) => {
    for (const [name, ErrorClass] of classes) {
      const args = argumentsFor(name, `a ${name} for the test`);
      const expected = new ErrorClass(...args);
      const err = (await assert.rejects(
        interpreter.exec(`import * as library from "interpreters"; throw new library[name](...args);`, { bind: { name, args } }),
        ExecutionFailed,
      )) as ExecutionFailed;
      assert.instance(err.cause, ErrorClass, `${name}: cause is a ${(err.cause as Error)?.constructor?.name}`);
      const cause = err.cause as InterpretersError;
      assert.is(cause.name, name);
      assert.is(cause.code, expected.code);
      assert.is(cause.message, expected.message);
      assert.equal({ ...cause }, { ...expected }, `${name}: its fields`);
      assert.is(err.remote.name, name);
      assert.match(cause.stack ?? "", new RegExp(`^${name}: `));
    }
  });
});

test("errors that really happen inside an interpreter keep their class and fields: a deadlock's cycle, a value's path, a nested exec's cause", async () => {
  await withInterpreter("stuck", async (interpreter) => {
    const deadlock = (await assert.rejects(
      interpreter.exec(`
        import { createChannel } from "interpreters";
        const [rx, tx] = createChannel({ capacity: 0, name: "to-myself" });
        rx.recvSync(); // its only sender is this interpreter, which is waiting here
      `),
      ExecutionFailed,
    )) as ExecutionFailed;
    assert.instance(deadlock.cause, DeadlockError);
    const cycle = (deadlock.cause as DeadlockError).cycle;
    assert.ok(cycle.length >= 1, JSON.stringify(cycle));
    assert.is(cycle[0]!.interpreter.name, "stuck");
    assert.is(cycle[0]!.channel?.name, "to-myself");

    const notShareable = (await assert.rejects(
      interpreter.exec(`import { createChannel } from "interpreters"; createChannel()[1].trySend({ ok: 1, handler: () => 1 });`),
      ExecutionFailed,
    )) as ExecutionFailed;
    assert.instance(notShareable.cause, NotShareableError);
    assert.is((notShareable.cause as NotShareableError).path, "value.handler");

    const nested = (await assert.rejects(
      interpreter.exec(`
        import { create } from "interpreters";
        const child = await create({ name: "inner" });
        try { await child.exec("throw new TypeError('deep down')"); } finally { await child.close(); }
      `),
      ExecutionFailed,
    )) as ExecutionFailed;
    assert.instance(nested.cause, ExecutionFailed);
    assert.instance((nested.cause as ExecutionFailed).cause, TypeError);
    assert.is(((nested.cause as ExecutionFailed).cause as Error).message, "deep down");

    const builtIn = (await assert.rejects(interpreter.exec(`throw new RangeError("out of range")`), ExecutionFailed)) as ExecutionFailed;
    assert.instance(builtIn.cause, RangeError);
    const notAnError = (await assert.rejects(interpreter.exec(`throw "just a string"`), ExecutionFailed)) as ExecutionFailed;
    assert.is((notAnError.cause as Error).message, "just a string");
  });
});

// ---------------------------------------------------------------------------
// 6. exec({ release })

test("exec release 'failed': a stage that throws releases its ends, so upstream and downstream see it instead of hanging", async () => {
  await withInterpreter("stage", async (stage) => {
    const [inputRx, inputTx] = createChannel<number>({ capacity: 0, name: "input" });
    const [outputRx, outputTx] = createChannel<number>({ capacity: 0, name: "output" });
    const running = stage.exec(
      `
      for (const n of input) {
        if (n === 3) throw new RangeError("cannot take 3");
        output.sendSync(n * 10);
      }
      output.close();
    `,
      { bind: { input: inputRx, output: outputTx }, release: "failed" },
    );
    const received: number[] = [];
    const draining = (async () => {
      for await (const value of outputRx) received.push(value);
    })();
    const feeding = (async () => {
      for (let n = 1; n <= 5; n++) await inputTx.send(n, { timeout: 20_000 });
    })();
    feeding.catch(() => {}); // asserted below
    const failure = (await assert.rejects(running, ExecutionFailed)) as ExecutionFailed;
    assert.instance(failure.cause, RangeError);
    await draining; // the output end was released: the stream ends instead of hanging
    assert.equal(received, [10, 20]);
    await assert.rejects(feeding, ChannelClosedError, /every receive handle/); // no receiver left upstream
    assert.is(outputRx.stats().senders, 0);
    assert.is(inputTx.stats().receivers, 0);
  });
});

test("exec release 'settled' closes bound ends (however deep in bind) on success too; 'failed' leaves them on success; ends moved on are left alone", async () => {
  await withInterpreter("settler", async (interpreter) => {
    const [aRx, aTx] = createChannel<string>({ capacity: 4, name: "a" });
    const [bRx, bTx] = createChannel<string>({ capacity: 4, name: "b" });
    const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 1, name: "carrier" });
    const [keptRx, keptTx] = createChannel<string>({ capacity: 4, name: "kept" });
    await interpreter.exec(`ends.list[0].sendSync("a"); ends.byName.get("b").sendSync("b"); carrier.sendSync(kept);`, {
      bind: { ends: { list: [aTx], byName: new Map([["b", bTx]]) }, carrier: carrierTx, kept: keptTx },
      release: "settled",
    });
    assert.is(aRx.stats().senders, 0);
    assert.is(bRx.stats().senders, 0);
    assert.equal([aRx.recvSync({ timeout: 1000 }), bRx.recvSync({ timeout: 1000 })], ["a", "b"]);
    const moved = (await carrierRx.recv({ timeout: 10_000 })) as typeof keptTx; // moved on by the code: still open
    moved.trySend("still open");
    assert.is(await keptRx.recv({ timeout: 10_000 }), "still open");

    const [cRx, cTx] = createChannel<string>({ capacity: 4, name: "c" });
    await interpreter.exec(`c.sendSync("c");`, { bind: { c: cTx }, release: "failed" });
    assert.is(cRx.stats().senders, 1, "a successful exec with release: 'failed' keeps its ends");

    const [dRx, dTx] = createChannel<string>({ capacity: 4, name: "d" });
    await assert.rejects(interpreter.exec(`1`, { bind: { d: dTx }, release: "always" as never }), TypeError, /release must be/);
    assert.ok(dTx.trySend("nothing was sent: the end is still here"));
    dRx.close();
  });
});

test("a TaskGroup surfaces a failing stage without release: its interpreters are terminated and the first error is rethrown", async () => {
  const [inputRx, inputTx] = createChannel<number>({ capacity: 0, name: "group-input" });
  const err = (await assert.rejects(
    TaskGroup.run(async (group) => {
      const stage = await group.create({ name: "group-stage" });
      group.spawn(() => stage.exec(`for (const n of input) if (n === 2) throw new RangeError("two");`, { bind: { input: inputRx } }));
      group.spawn(async (signal) => {
        for (let n = 1; n <= 5; n++) await inputTx.send(n, { signal });
      });
    }),
    ExecutionFailed,
  )) as ExecutionFailed;
  assert.instance(err.cause, RangeError);
});

// ---------------------------------------------------------------------------
// Child processes against the built package: TypeScript in interpreters (4),
// no calling file (3), the demo (7), a test file's output (8)

test("under tsx (node --import tsx), interpreters call, wrap and import .ts modules (built package)", async () => {
  const { code, output } = await runNode(["--import", "tsx", "test/fixtures/firstcontact-tsx-main.ts"], "node --import tsx main.ts");
  assert.is(code, 0, output);
  assert.match(output, /call: dark x2/);
  assert.match(output, /wrap: light x3/);
  assert.match(output, /exec: ok/);
}, { timeout: CHILD_TIMEOUT });

test("under the tsx command, interpreters call, wrap and import .ts modules (built package)", async () => {
  const tsx = fileURLToPath(new URL("../node_modules/.bin/tsx", import.meta.url));
  const { code, output } = await runNode(["test/fixtures/firstcontact-tsx-main.ts"], "tsx main.ts", { command: tsx });
  assert.is(code, 0, output);
  assert.match(output, /call: dark x2/);
  assert.match(output, /exec: ok/);
}, { timeout: CHILD_TIMEOUT });

test("without a TypeScript loader, a .ts module fails with an error that says how to make it work; with no calling file known, the error says what a relative specifier resolved against", async () => {
  const script = `
    const { create } = await import("interpreters");
    const interpreter = await create();
    try {
      await interpreter.call(new URL("./test/fixtures/firstcontact-typed.ts", "file://" + process.cwd() + "/"), "describe", "dark", 1);
    } catch (err) { console.log("TS:", err.message); }
    try {
      await interpreter.exec('import "./test/fixtures/firstcontact-typed.ts";');
    } catch (err) { console.log("EXEC TS:", err.message); }
    try {
      await interpreter.call("./no-such-file.js", "x");
    } catch (err) { console.log("RELATIVE:", err.message); }
    await interpreter.close();
  `;
  // CommonJS -e code: its frames have no file, so no calling file is known.
  const { code, output } = await runNode(["-e", `(async () => { ${script} })()`], "node -e (no loader)");
  assert.is(code, 0, output);
  assert.match(output, /TS: .*firstcontact-typed\.ts.*no TypeScript loader.*node --import tsx/);
  assert.match(output, /EXEC TS: .*firstcontact-typed\.ts.*no TypeScript loader/);
  assert.match(output, /RELATIVE: .*"\.\/no-such-file\.js", resolved against file:\/\/.*\(the current directory: no calling file is known; pass a URL/);
}, { timeout: CHILD_TIMEOUT });

test("npm start's demo: a rendezvous explained, channels beside postMessage in the same run, every message checked", async () => {
  const { code, output } = await runNode(["dist/examples/index.js"], "the demo", { env: { DEMO_SECONDS: "0.2", DEMO_REPEATS: "1" } });
  assert.is(code, 0, output);
  assert.match(output, /waitingSenders=1, length=1/);
  assert.match(output, /length=1\s+its message is in the channel/);
  assert.match(output, /waitingSenders=1\s+its sender is blocked in sendSync until a receiver takes it/);
  for (const row of ["channel, capacity 0", "channel, capacity 16", "channel, capacity Infinity", "postMessage (MessageChannel)"]) {
    assert.match(output, new RegExp(`${row.replace(/[()]/g, "\\$&")}\\s+[\\d,]+\\s+[\\d.]+x\\s+[\\d,]+\\s+[\\d,]+\\s+yes`), `row "${row}" in:\n${output}`);
  }
}, { timeout: CHILD_TIMEOUT });

test("the corruption tests' expected supervisor warnings are captured by their assertions, not printed", async () => {
  const { code, output } = await runNode(["--import", "tsx", "test/_entry.ts", "test/corruption.test.ts"], "corruption.test.ts");
  assert.is(code, 0, output);
  assert.match(output, /Passed:\s+\d+/);
  assert.not.match(output, /supervisor cannot clean up|Warning: interpreters|--trace-warnings/, output);
}, { timeout: CHILD_TIMEOUT });

test.run();
