/**
 * An interpreter's side of the control protocol (src/interpreter.ts is the
 * creator's side): runs exec/call/prepareMain/wrap requests and replies.
 *
 * `exec` source runs as an ES module from a data: URL. A module resolve
 * hook, registered on first use, makes `import ... from "interpreters"`
 * mean this very library (the same module instance as ours, so errors are
 * instances of the same classes), and resolves relative and bare specifiers
 * against the current directory, as code in a file there would.
 */
import { register } from "node:module";
import { parentPort } from "node:worker_threads";
import { pathToFileURL } from "node:url";
import * as Comlink from "comlink/dist/esm/comlink.mjs";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { addRunning, describeSlot, mySlot, PartyState, setSlotState } from "../src/control.js";
import { errorToRecord } from "../src/errors.js";
import type { ControlReply, ControlRequest } from "../src/interpreter.js";
import { libraryEntryUrl } from "../src/spawn.js";
import { decodeFromPost, encodeForPost } from "../src/transfer.js";
import "../src/index.js";

const port = parentPort!;

const RESOLVE_HOOK = `
export async function resolve(specifier, context, nextResolve) {
  if (specifier === "interpreters") return { url: ${JSON.stringify(libraryEntryUrl)}, shortCircuit: true };
  if (context.parentURL?.startsWith("data:") && !specifier.startsWith("data:") && !specifier.startsWith("node:")) {
    return nextResolve(specifier, { ...context, parentURL: ${JSON.stringify(pathToFileURL(process.cwd() + "/").href)} });
  }
  return nextResolve(specifier, context);
}`;

let hookRegistered = false;
function ensureResolveHook(): void {
  if (hookRegistered) return;
  hookRegistered = true;
  register(`data:text/javascript,${encodeURIComponent(RESOLVE_HOOK)}`);
}

let execCount = 0;

function reply(message: ControlReply, transfer: Array<import("node:worker_threads").TransferListItem> = []): void {
  port.postMessage(message, transfer);
}

function setGlobals(bindings: unknown): void {
  if (bindings === null || typeof bindings !== "object") return;
  for (const [name, value] of Object.entries(bindings)) {
    (globalThis as Record<string, unknown>)[name] = value;
  }
}

async function runExec(source: string): Promise<void> {
  // The hook costs a loader thread (~50-100 ms) the first time: only code that imports needs it.
  if (/\bimport\b/.test(source)) ensureResolveHook();
  // A comment makes every source a distinct URL, so the same text can run twice.
  const body = `${source}\n//# sourceURL=interpreters-exec-${++execCount}`;
  await import(`data:text/javascript;charset=utf-8,${encodeURIComponent(body)}`);
}

async function runCall(module: string, exportName: string, args: unknown[]): Promise<unknown> {
  if (!module.includes(":")) ensureResolveHook(); // a bare specifier, resolved from the current directory
  const namespace = (await import(module)) as Record<string, unknown>;
  const target = namespace[exportName];
  if (typeof target !== "function") {
    throw new TypeError(`call: export "${exportName}" of ${module} is ${target === undefined ? "missing" : `a ${typeof target}, not a function`}`);
  }
  return await (target as (...a: unknown[]) => unknown)(...args);
}

async function handle(request: ControlRequest): Promise<void> {
  try {
    switch (request.type) {
      case "exec":
        addRunning(1);
        try {
          setGlobals(decodeFromPost(request.bind));
          await runExec(request.source);
        } finally {
          addRunning(-1);
        }
        reply({ type: "reply", req: request.req, ok: true });
        return;
      case "call": {
        addRunning(1);
        let result: unknown;
        try {
          result = await runCall(request.module, request.exportName, decodeFromPost(request.args) as unknown[]);
        } finally {
          addRunning(-1);
        }
        const value = encodeForPost(result, request.creatorSlot, `to ${describeSlot(request.creatorSlot)}`);
        reply({ type: "reply", req: request.req, ok: true, value });
        return;
      }
      case "prepareMain":
        setGlobals(decodeFromPost(request.bind));
        reply({ type: "reply", req: request.req, ok: true });
        return;
      case "wrap": {
        const namespace = await import(request.module);
        Comlink.expose(namespace, nodeEndpoint(request.port));
        reply({ type: "reply", req: request.req, ok: true });
        return;
      }
      case "close":
        await whenIdle();
        reply({ type: "reply", req: request.req, ok: true });
        // Ends are released by the supervisor when this thread is gone.
        setImmediate(() => process.exit(0));
        return;
    }
  } catch (err) {
    reply({ type: "reply", req: request.req, ok: false, error: errorToRecord(err) });
  }
}

let running = 0;
let idleWaiters: Array<() => void> = [];
function whenIdle(): Promise<void> {
  if (running === 0) return Promise.resolve();
  return new Promise((resolve) => idleWaiters.push(resolve));
}

port.on("message", (request: ControlRequest) => {
  if (request.type === "close") {
    void handle(request);
    return;
  }
  running++;
  void handle(request).finally(() => {
    if (--running === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  });
});

setSlotState(mySlot, PartyState.LIVE);
reply({ type: "ready" });
