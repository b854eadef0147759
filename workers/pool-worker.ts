/**
 * The module tinypool loads in each thread of an InterpreterPool (its
 * `filename`; tinypool calls the export HANDLER_NAME for each task). It
 * turns the tinypool thread into an interpreter before the thread serves a
 * task:
 *
 * 1. asks the pool's owner for an identity (on the pool's BroadcastChannel;
 *    tinypool gives no per-thread data and owns the thread's parentPort
 *    listener, so the request goes out there);
 * 2. waits for the answer on parentPort, synchronously: the answer carries
 *    a MessagePort and must be taken before tinypool's parentPort listener,
 *    which expects only its own start-up message, could see it. tinypool is
 *    awaiting this module's import meanwhile, so the thread is not "ready"
 *    (gets no task) before it is an interpreter;
 * 3. puts the boot data and supervisor link into workerData, where the
 *    library looks for them as in any interpreter (src/control.ts,
 *    src/supervisor-link.ts), and only then loads the library.
 *
 * Nothing of the library may be imported statically here: it would load
 * before step 3 and start a world of its own. If anything fails, the thread
 * stays up and answers every task with the failure (`{ bootError }`), so
 * that callers get an error naming the cause instead of a thread tinypool
 * would keep restarting or a task that never settles.
 */
import { BroadcastChannel, parentPort, receiveMessageOnPort, threadId, workerData } from "node:worker_threads";
import { type Identity, IDENTITY_KIND, type PoolWorkerData, type TaskOutcome, type TaskPayload } from "../src/pool/protocol.js";
import { TaskTableView } from "../src/pool/task-table.js";

/** tinypool's workerData is `[tinypool's own, the pool's]`. */
const poolData = (workerData as unknown[])[1] as PoolWorkerData;

/** How long one wait for the identity lasts before the port is checked again anyway (ms). */
const IDENTITY_POLL_MS = 1000;

function askForIdentity(): Identity {
  const requests = new BroadcastChannel(poolData.requests);
  requests.postMessage({ threadId });
  requests.close();
  const table = new TaskTableView(poolData.table);
  for (;;) {
    // Read the epoch before looking: an identity posted after this read bumps it, so the wait returns at once.
    const seen = table.epoch();
    const received = receiveMessageOnPort(parentPort!);
    if (received) {
      const message = received.message as Identity;
      if (message?.kind === IDENTITY_KIND) return message;
      continue; // nothing else is ever posted here before the identity
    }
    table.waitForEpoch(seen, IDENTITY_POLL_MS);
  }
}

function describe(err: unknown): { name: string; message: string; stack: string } {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
  return { name: "Error", message: String(err), stack: `Error: ${String(err)}` };
}

let handler: (payload: TaskPayload) => Promise<TaskOutcome>;
try {
  const identity = askForIdentity();
  if ("error" in identity) {
    const bootError = identity.error;
    handler = async () => ({ bootError });
  } else {
    Object.assign(workerData as object, identity.workerData);
    const runner = await import("../src/pool/task-runner.js");
    handler = runner.startServing(identity, poolData);
  }
} catch (err) {
  const bootError = describe(err);
  bootError.message = `the pool thread could not become an interpreter: ${bootError.message}`;
  handler = async () => ({ bootError });
}

/** tinypool's entry point for each task (see protocol.ts). */
export function runPoolTask(payload: TaskPayload): Promise<TaskOutcome> {
  return handler(payload);
}
