/**
 * This thread's line to the supervisor: a MessagePort that carries
 * registrations to it (channels, shared objects, new interpreters) and,
 * for synchronous fetches, its answers back.
 *
 * The supervisor is a hidden worker (workers/supervisor.ts) started by the
 * main thread when the first interpreter is created. It never runs user
 * code and never blocks, so it can always answer a fetch and always notice
 * an interpreter's death (its port closes), even while every other thread,
 * the main thread included, is blocked in a synchronous wait.
 *
 * A fetch is synchronous, so that a receiver blocked in `recvSync` can
 * resolve a channel end inside the message it took: post the request, then
 * `Atomics.wait` on this party's fetch flag (control.ts) until the
 * supervisor has posted the answer and set the flag, then read the answer
 * with `receiveMessageOnPort`. The port has no listener, so nothing else
 * consumes its messages.
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, type Worker, workerData } from "node:worker_threads";
import { control, controlBuffer, isSupervisor, mySlot, P_POSTED, slotWord, SUPERVISOR_SLOT, WORKER_DATA_KEY, WORD_SUPERVISOR_STARTED } from "./control.js";
import { type DeadlockParty, InterpretersError } from "./errors.js";
import type { Token } from "./ring.js";
import { spawnWorker } from "./spawn.js";

const FETCH_FIELD = 3;
/**
 * How long a fetch may take before the supervisor is presumed gone (ms): a
 * backstop only. The supervisor answers a fetch as soon as it has handled
 * every registration posted before it (see `registrationsPosted`), at
 * once for an id it knows or that can never be registered; it never
 * blocks, so that takes as long as its queue of messages, microseconds to
 * milliseconds.
 */
const FETCH_TIMEOUT_MS = 10_000;

export type SupervisorRequest =
  | { type: "channel"; id: number; buffer: SharedArrayBuffer }
  | { type: "object"; id: number; token: Token; buffer: SharedArrayBuffer }
  /** Generation `gen` of channel `id`'s data area (ring.ts, grow). */
  | { type: "data"; id: number; token: Token; gen: number; buffer: SharedArrayBuffer }
  /** `token` is the capability (ring.ts TOKEN, or the object's): without it nothing is handed out. */
  | { type: "fetch"; kind: FetchKind; id: number; gen?: number; token: Token; slot: number }
  /** Up to `count` channel ids no live channel has (after the 2^31 - 1 fresh ones ran out; registry.ts). */
  | { type: "ids"; count: number; slot: number }
  | { type: "attach"; slot: number; id: number; port: MessagePort }
  | { type: "exited"; slot: number; id: number };

/** What a fetch asks for: a channel's memory, a shared object, or a generation of a channel's data area. */
export type FetchKind = "channel" | "object" | "data";

/** What the supervisor posts to a party: fetch answers and deadlock verdicts. */
export type SupervisorMessage =
  | { kind: "fetch"; buffer: SharedArrayBuffer | null; ids?: number[] }
  | { kind: "verdict"; mode: "throw" | "report"; message: string; cycle: DeadlockParty[] };

/** Messages read from the port while looking for another kind. */
const inbox: SupervisorMessage[] = [];

/** Takes the oldest message of `kind` from the port (or the inbox); undefined if none has arrived. */
export function takeFromSupervisor<K extends SupervisorMessage["kind"]>(kind: K): Extract<SupervisorMessage, { kind: K }> | undefined {
  const queued = inbox.findIndex((message) => message.kind === kind);
  if (queued >= 0) return inbox.splice(queued, 1)[0] as Extract<SupervisorMessage, { kind: K }>;
  if (!port) return undefined;
  for (;;) {
    const message = receiveMessageOnPort(port)?.message as SupervisorMessage | undefined;
    if (!message) return undefined;
    if (message.kind === kind) return message as Extract<SupervisorMessage, { kind: K }>;
    inbox.push(message);
  }
}

let port: MessagePort | undefined = (workerData as Record<string, unknown> | null)?.[`${WORKER_DATA_KEY}Supervisor`] as MessagePort | undefined;
let supervisorWorker: Worker | undefined;
const linkedCallbacks: Array<() => void> = [];
if (port) port.unref();

export function isSupervisorLinked(): boolean {
  return port !== undefined;
}

/** Runs `callback` once this thread is linked (at once if it is). */
export function onSupervisorLinked(callback: () => void): void {
  if (port) callback();
  else linkedCallbacks.push(callback);
}

export function postToSupervisor(request: SupervisorRequest): void {
  if (!port) throw new InterpretersError("internal error: no supervisor link in this thread");
  // Counted before posting: a fetch posted later by anyone (after this
  // thread sent an end or object whose registration this is) finds the
  // count raised, so the supervisor knows to wait for this message.
  if (request.type === "channel" || request.type === "object" || request.type === "data") Atomics.add(control, slotWord(mySlot, P_POSTED), 1);
  const transfer = request.type === "attach" ? [request.port] : [];
  port.postMessage(request, transfer);
}

/**
 * Starts the supervisor (main thread only; a no-op once started or in
 * other threads, which are linked from birth).
 */
export function ensureSupervisor(): void {
  if (port || isSupervisor) return;
  const channel = new MessageChannel();
  supervisorWorker = spawnWorker("supervisor", {
    [WORKER_DATA_KEY]: { control: controlBuffer, slot: SUPERVISOR_SLOT, id: -1, name: "supervisor" },
    [`${WORKER_DATA_KEY}MainPort`]: channel.port2,
  }, [channel.port2], "interpreters supervisor");
  supervisorWorker.unref();
  supervisorWorker.on("error", (err) => {
    process.emitWarning(`interpreters: the supervisor failed: ${String(err)}`);
  });
  port = channel.port1;
  port.unref();
  Atomics.store(control, WORD_SUPERVISOR_STARTED, 1);
  for (const callback of linkedCallbacks.splice(0)) callback();
}

/**
 * Asks the supervisor for the buffer of channel or object `id` and waits
 * (synchronously, at most FETCH_TIMEOUT_MS) for the answer. Returns null
 * when the supervisor does not know the id, or when this thread has no
 * supervisor (only the main thread ever ran).
 */
export function fetchFromSupervisor(kind: FetchKind, id: number, what: { token: Token; gen?: number }): SharedArrayBuffer | null {
  if (!port) return null;
  const request: SupervisorRequest =
    what.gen === undefined ? { type: "fetch", kind, id, token: what.token, slot: mySlot } : { type: "fetch", kind, id, gen: what.gen, token: what.token, slot: mySlot };
  return askSupervisor(request, `${kind} ${id}`).buffer;
}

/** Asks the supervisor for `count` reusable channel ids (see registry.ts); none without a supervisor. */
export function fetchFreeChannelIds(count: number): number[] {
  if (!port) return [];
  return askSupervisor({ type: "ids", count, slot: mySlot }, `${count} free channel ids`).ids ?? [];
}

/**
 * Posts `request` and waits (synchronously, at most FETCH_TIMEOUT_MS) for
 * the answer. Woken by the supervisor's notify after it posted the answer;
 * re-checks this party's fetch flag.
 */
function askSupervisor(request: SupervisorRequest, what: string): Extract<SupervisorMessage, { kind: "fetch" }> {
  const flag = slotWord(mySlot, FETCH_FIELD);
  Atomics.store(control, flag, 0);
  postToSupervisor(request);
  const deadline = performance.now() + FETCH_TIMEOUT_MS;
  while (Atomics.load(control, flag) === 0) {
    const remaining = deadline - performance.now();
    if (remaining <= 0) {
      throw new InterpretersError(
        `the supervisor did not answer a fetch of ${what} within ${FETCH_TIMEOUT_MS} ms; it answers at once unless it has died (a bug: please report it with what ran before)`,
      );
    }
    Atomics.wait(control, flag, 0, remaining);
  }
  const answer = takeFromSupervisor("fetch");
  if (!answer) throw new InterpretersError(`the supervisor flagged an answer for ${what} but none arrived`);
  return answer;
}

/** Registrations party `slot` has posted to the supervisor, ever (wrapping int32). */
export function registrationsPosted(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_POSTED));
}

/** The supervisor's side of a fetch: post the answer, then raise the flag. */
export function answerFetch(target: MessagePort, slot: number, buffer: SharedArrayBuffer | null, ids?: number[]): void {
  target.postMessage((ids ? { kind: "fetch", buffer, ids } : { kind: "fetch", buffer }) satisfies SupervisorMessage);
  const flag = slotWord(slot, FETCH_FIELD);
  Atomics.store(control, flag, 1);
  Atomics.notify(control, flag);
}
