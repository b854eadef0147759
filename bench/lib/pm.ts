/**
 * Main-thread side of the postMessage comparisons: starts pm-worker.ts in
 * a role and exposes its "ready" and result messages as promises (a worker
 * error or exit before its result rejects them).
 */
import { Worker, type MessagePort } from "node:worker_threads";

const WORKER_URL = new URL("./pm-worker.js", import.meta.url);

export interface PmWorker<R> {
  worker: Worker;
  /** Resolves on the worker's "ready" message (roles that send one). */
  ready: Promise<void>;
  result: Promise<R>;
  /** Other messages (P4: the echoes) go to this listener when set. */
  onOther?: (value: unknown) => void;
  terminate(): Promise<number>;
}

export function startPm<R>(role: string, opts: unknown, port?: MessagePort): PmWorker<R> {
  const worker = new Worker(WORKER_URL, {
    workerData: { role, port, opts },
    transferList: port ? [port] : [],
    name: `pm-${role}`,
  });
  let readyResolve!: () => void;
  let resultResolve!: (r: R) => void;
  let fail!: (err: Error) => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  const result = new Promise<R>((resolve, reject) => {
    resultResolve = resolve;
    fail = reject;
  });
  const handle: PmWorker<R> = {
    worker,
    ready,
    result,
    terminate: () => worker.terminate(),
  };
  worker.on("message", (message: unknown) => {
    if (message === "ready") readyResolve();
    else if (message !== null && typeof message === "object" && "result" in message) resultResolve((message as { result: R }).result);
    else handle.onOther?.(message);
  });
  worker.on("error", (err) => fail(err));
  worker.on("exit", (code) => fail(new Error(`postMessage worker (${role}) exited with code ${code} before its result`)));
  result.catch(() => {});
  // A worker that dies before "ready" rejects `ready` too.
  handle.ready = Promise.race([ready, result.then(() => undefined)]);
  handle.ready.catch(() => {});
  return handle;
}
