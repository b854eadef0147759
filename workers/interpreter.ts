/**
 * An interpreter's side of the control protocol (src/interpreter.ts is the
 * creator's side): runs exec/call/prepareMain/wrap requests and replies.
 * How code is loaded and run here, and how its failures are told, is
 * src/module-loading.ts (shared with the pool's threads).
 */
import { parentPort } from "node:worker_threads";
import * as Comlink from "comlink/dist/esm/comlink.mjs";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { addRunning, describeSlot, mySlot, PartyState, setSlotState } from "../src/control.js";
import type { ControlReply, ControlRequest, ReleaseBound } from "../src/interpreter.js";
import type { ModuleBase } from "../src/module-specifier.js";
import { closeAll, CWD_BASE, endsIn, errorRecordOf, importModule, runCall, runExec } from "../src/module-loading.js";
import { decodeFromPost, encodeForPost } from "../src/transfer.js";
import "../src/index.js";

const port = parentPort!;

function reply(message: ControlReply, transfer: Array<import("node:worker_threads").TransferListItem> = []): void {
  port.postMessage(message, transfer);
}

function setGlobals(bindings: unknown): void {
  if (bindings === null || typeof bindings !== "object") return;
  for (const [name, value] of Object.entries(bindings)) {
    (globalThis as Record<string, unknown>)[name] = value;
  }
}

async function runExecRequest(bind: unknown, source: string, base: ModuleBase, release: ReleaseBound | undefined): Promise<void> {
  const ends = release ? endsIn(bind) : [];
  setGlobals(bind);
  let failed = false;
  try {
    await runExec(source, base);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Released before the reply, so that a creator who sees the exec settle sees the ends released.
    if (release === "settled" || (release === "failed" && failed)) {
      const closeError = closeAll(ends);
      if (closeError !== undefined && !failed) throw closeError;
    }
  }
}

async function handle(request: ControlRequest): Promise<void> {
  try {
    switch (request.type) {
      case "exec":
        addRunning(1);
        try {
          await runExecRequest(decodeFromPost(request.bind), request.source, request.base ?? CWD_BASE, request.release);
        } finally {
          addRunning(-1);
        }
        reply({ type: "reply", req: request.req, ok: true });
        return;
      case "call": {
        addRunning(1);
        let result: unknown;
        try {
          const label = request.label ?? request.module;
          result = await runCall(request.module, request.base, label, request.exportName, decodeFromPost(request.args) as unknown[]);
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
        let namespace: Record<string, unknown>;
        try {
          namespace = await importModule(request.module, request.base, request.label ?? request.module);
        } catch (err) {
          request.port.close(); // nothing will answer on it: the creator rejects every call with this error
          throw err;
        }
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
    reply({ type: "reply", req: request.req, ok: false, error: errorRecordOf(err) });
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
