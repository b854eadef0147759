/**
 * Interpreter lifecycle, creator's side: create / list / current / main,
 * and the Interpreter class (exec, call, prepareMain, wrap, close,
 * terminate). The interpreter's side is workers/interpreter.ts; they speak
 * the control protocol below over the Worker's message port.
 *
 * Lifecycle of a party slot (control.ts): the creator claims it
 * (STARTING), the worker marks it LIVE when it is ready, and after the
 * worker's thread is gone the supervisor releases every channel end it held
 * and frees the slot. `terminate()` and `close()` resolve, and 'exit' is
 * emitted, only after that release, so that a caller that awaited them
 * never sees the dead interpreter's ends still counted.
 *
 * An idle interpreter is unref'd: it never keeps the process alive. It is
 * ref'd while a request to it (exec, call, ...) is pending.
 */
import { EventEmitter } from "node:events";
import { MessageChannel, type ResourceLimits, type Worker } from "node:worker_threads";
import type * as TypedEmitterTypes from "typed-emitter";
// comlink's ESM build (its package's main is UMD). Its types stay out of this
// module's declarations: they need the DOM library (see wrap-types.ts).
import * as Comlink from "comlink/dist/esm/comlink.mjs";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import {
  bootDataFor,
  claimSlot,
  control,
  describeSlot,
  liveSlots,
  myId,
  mySlot,
  nextInterpreterId,
  P_STATE,
  PartyState,
  slotId,
  slotName,
  slotRunning,
  slotState,
  slotWord,
  WORKER_DATA_KEY,
} from "./control.js";
import { type ErrorRecord, ExecutionFailed, executionFailedFrom, InterpreterClosedError, InterpretersError } from "./errors.js";
import { callerBase, type ModuleBase, resolveModule } from "./module-specifier.js";
import type { Remote } from "./wrap-types.js";
import { spawnWorker } from "./spawn.js";
import { ensureSupervisor, postToSupervisor } from "./supervisor-link.js";
import { decodeFromPost, encodeForPost, type PostedValue } from "./transfer.js";
import { holdProcess } from "./waiting.js";

/** Values that may cross into an interpreter (see isShareable). */
export type Shareable = unknown;

/** When `exec` releases the ends it bound (ExecOptions.release). */
export type ReleaseBound = "settled" | "failed";

/**
 * Requests from creator to interpreter. `module` is an absolute URL or a
 * bare specifier; `base` is what a bare specifier (and exec's imports)
 * resolve against, `label` how errors name the module (module-specifier.ts).
 */
export type ControlRequest =
  | { type: "exec"; req: number; source: string; bind: PostedValue; base?: ModuleBase; release?: ReleaseBound }
  | { type: "call"; req: number; module: string; exportName: string; args: PostedValue; creatorSlot: number; base?: ModuleBase; label?: string }
  | { type: "prepareMain"; req: number; bind: PostedValue }
  | { type: "wrap"; req: number; module: string; port: import("node:worker_threads").MessagePort; base?: ModuleBase; label?: string }
  | { type: "close"; req: number };

/** Messages from interpreter to creator. */
export type ControlReply =
  | { type: "ready" }
  | { type: "reply"; req: number; ok: true; value?: PostedValue }
  | { type: "reply"; req: number; ok: false; error: ErrorRecord };

export type InterpreterEvents = {
  exit: (code: number) => void;
  error: (error: ExecutionFailed) => void;
};

export interface CreateOptions {
  name?: string;
  resourceLimits?: ResourceLimits;
  /** Replaces process.env in the interpreter (default: a copy of this thread's). */
  env?: Record<string, string>;
  /** Aborting terminates the interpreter (or cancels its creation). */
  signal?: AbortSignal;
}

export interface ExecOptions {
  /** Globals to set in the interpreter first; channel ends among them move there. */
  bind?: Record<string, Shareable>;
  /**
   * Close the channel ends found in `bind` (however deep in it) when the
   * code settles: `"settled"` whether it succeeds or throws, `"failed"` only
   * if it throws. Ends the code has already closed or moved on are left as
   * they are. They are closed before `exec` settles, so a peer waiting on
   * them is woken: a sender upstream fails with ChannelClosedError (no
   * receivers left) instead of hanging, a receiver downstream sees the
   * channel end. Default: ends bound stay open, held by the interpreter,
   * until its code closes them or it exits.
   */
  release?: ReleaseBound;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: unknown): void;
  what: string;
}

type TypedEmitter<Events extends TypedEmitterTypes.EventMap> = TypedEmitterTypes.default<Events>;
const Emitter = EventEmitter as unknown as new () => TypedEmitter<InterpreterEvents>;

/** Interpreters created by this thread, by slot. */
const created = new Map<number, Interpreter>();
/** Views of interpreters this thread did not create, by id. */
const views = new Map<number, Interpreter>();

/**
 * An isolated interpreter: a worker thread with its own V8 isolate, its
 * own globals and module graph. It shares nothing with others but the
 * channels (and shared buffers) passed to it.
 *
 * Events: 'exit' (code) once it is gone and its ends are released;
 * 'error' (ExecutionFailed) when it dies of an uncaught error.
 */
export class Interpreter extends Emitter {
  /** 0 for the main interpreter. */
  readonly id: number;
  readonly name: string;
  readonly #slot: number;
  readonly #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextRequest = 1;
  #exited = false;
  #exitCode: number | undefined;
  #crash: ExecutionFailed | undefined;
  readonly #gone: Promise<void>;
  #markGone!: () => void;

  /** @internal Use create(), current(), main() or list(). */
  constructor(id: number, name: string, slot: number, worker?: Worker) {
    super();
    this.id = id;
    this.name = name;
    this.#slot = slot;
    this.#worker = worker;
    this.#gone = new Promise((resolve) => (this.#markGone = resolve));
    if (worker) this.#attach(worker);
  }

  /** True while code is running in it through exec or call. */
  isRunning(): boolean {
    if (this.#exited) return false;
    return slotState(this.#slot) === PartyState.LIVE && slotId(this.#slot) === this.id && slotRunning(this.#slot) > 0;
  }

  #describe(): string {
    return this.id === 0 ? "the main interpreter" : `interpreter ${this.id} "${this.name}"`;
  }

  #attach(worker: Worker): void {
    worker.on("message", (message: ControlReply) => this.#onReply(message));
    worker.on("error", (err: Error) => {
      this.#crash = new ExecutionFailed(
        { name: err?.name ?? "Error", message: err?.message ?? String(err), stack: err?.stack ?? "" },
        `uncaught in ${this.#describe()}`,
        { cause: err },
      );
      if (this.listenerCount("error") > 0) this.emit("error", this.#crash);
    });
    worker.on("exit", (code) => void this.#onExit(code));
  }

  #onReply(message: ControlReply): void {
    if (message.type !== "reply") return;
    const pending = this.#pending.get(message.req);
    if (!pending) return;
    this.#pending.delete(message.req);
    this.#refCount();
    if (message.ok) pending.resolve(message.value);
    else pending.reject(executionFailedFrom(message.error, `${pending.what} in ${this.#describe()}`));
  }

  async #onExit(code: number): Promise<void> {
    this.#exited = true;
    this.#exitCode = code;
    created.delete(this.#slot);
    try {
      postToSupervisor({ type: "exited", slot: this.#slot, id: this.id });
    } catch {
      // no supervisor: nothing to release
    }
    await waitForRelease(this.#slot, this.id);
    const reason = (what: string): Error =>
      this.#crash ?? new InterpreterClosedError(`${this.#describe()} exited (code ${code}) while ${what} was pending`);
    for (const pending of this.#pending.values()) pending.reject(reason(pending.what));
    this.#pending.clear();
    this.#markGone();
    this.emit("exit", code);
  }

  #refCount(): void {
    if (!this.#worker) return;
    if (this.#pending.size > 0) this.#worker.ref();
    else this.#worker.unref();
  }

  #request(request: ControlRequest, what: string, transfer: Array<import("node:worker_threads").TransferListItem> = []): Promise<unknown> {
    const worker = this.#worker;
    if (!worker) {
      return Promise.reject(
        new InterpretersError(
          `${what} on ${this.#describe()}: only the interpreter that created it can run code in it (this is ${describeSlot(mySlot)})`,
        ),
      );
    }
    if (this.#exited) return Promise.reject(new InterpreterClosedError(`${what} on ${this.#describe()}: it has exited (code ${this.#exitCode}); create a new interpreter`));
    return new Promise((resolve, reject) => {
      this.#pending.set(request.req, { resolve, reject, what });
      this.#refCount();
      worker.postMessage(request, transfer);
    });
  }

  #checkUsable(what: string): void {
    if (this.#exited) throw new InterpreterClosedError(`${what} on ${this.#describe()}: it has exited (code ${this.#exitCode}); create a new interpreter`);
  }

  /**
   * Sets globals in the interpreter (each value moved or copied as by a
   * channel). Rejects with NotShareableError (nothing is sent) or
   * InterpreterClosedError.
   */
  async prepareMain(bindings: Record<string, Shareable>): Promise<void> {
    this.#checkUsable("prepareMain");
    const bind = encodeForPost(bindings, this.#slot, `to ${this.#describe()}`);
    await this.#request({ type: "prepareMain", req: this.#nextRequest++, bind }, "prepareMain");
  }

  /**
   * Runs `source` in the interpreter as an ES module body (top-level await
   * and `import` work; `import ... from "interpreters"` is this library).
   * Its imports resolve as they would in the file that called `exec`
   * (relative ones against it, bare ones from its node_modules), or against
   * the current directory when no calling file is known. Each name in
   * `bind` becomes a global there first; `release` closes the ends bound
   * when the code settles (see ExecOptions).
   *
   * Resolves when the module has finished evaluating. Rejects with
   * ExecutionFailed if it throws: `.remote` is the error's name, message
   * and stack, `.cause` the error itself rebuilt here (an instance of the
   * library's own class with its fields, e.g. a DeadlockError with its
   * `.cycle`; or of the built-in class); a SyntaxError in the source says
   * its line and column. Rejects with InterpreterClosedError if the
   * interpreter dies meanwhile, NotShareableError (nothing sent) for a
   * value in `bind` that cannot cross, TypeError for bad arguments.
   */
  async exec(source: string, options?: ExecOptions): Promise<void> {
    if (typeof source !== "string") throw new TypeError(`exec: source must be a string, got ${typeof source}`);
    const release = options?.release;
    if (release !== undefined && release !== "settled" && release !== "failed") {
      throw new TypeError(`exec: release must be "settled" or "failed", got ${JSON.stringify(release)}`);
    }
    this.#checkUsable("exec");
    const base = /\bimport\b/.test(source) ? callerBase() : undefined;
    const bind = encodeForPost(options?.bind ?? {}, this.#slot, `to ${this.#describe()}`);
    await this.#request({ type: "exec", req: this.#nextRequest++, source, bind, base, release }, "exec");
  }

  /**
   * Imports `module` in the interpreter and calls its export `exportName`
   * (default: "default") with `args`; resolves with the (awaited) result,
   * which crosses back like a channel message.
   *
   * `module` is a URL (`new URL("./worker.js", import.meta.url)`), an
   * absolute path, or a specifier resolved as an `import` in the calling
   * file would resolve it (relative ones against that file; against the
   * current directory when no calling file is known). A `.ts` module works
   * when the main program runs under tsx.
   *
   * Rejects with ExecutionFailed if the module cannot be imported (the
   * message names the specifier and what it was resolved against), the
   * call throws (`.cause` is the error, rebuilt here as for exec) or the
   * export is not a function; NotShareableError (nothing sent) for an
   * argument that cannot cross; InterpreterClosedError if it dies meanwhile.
   */
  async call<R = unknown>(module: string | URL, exportName = "default", ...args: Shareable[]): Promise<R> {
    this.#checkUsable("call");
    const target = resolveModule(module, "call");
    const posted = encodeForPost(args, this.#slot, `to ${this.#describe()}`);
    const value = (await this.#request(
      { type: "call", req: this.#nextRequest++, module: target.module, exportName, args: posted, creatorSlot: mySlot, base: target.base, label: target.label },
      `call of ${exportName} from ${target.specifier}`,
    )) as PostedValue;
    return decodeFromPost(value) as R;
  }

  /**
   * A comlink proxy to `module`'s exports in the interpreter: the RPC
   * control plane (calls are structured-cloned postMessages, not channels).
   * `T` is the module's type (`typeof import("./worker.js")`): each function
   * export becomes an async function with the same parameters (comlink's
   * `Remote<T>`, see Remote). `module` is resolved as for `call`.
   *
   * Returns at once; the module is imported in the background. Every call
   * through the proxy settles: if the import fails, each call (pending or
   * later) rejects with the same ExecutionFailed (the import error as
   * `.cause`, the specifier and what it was resolved against in the
   * message); calls pending when the interpreter dies reject with
   * InterpreterClosedError (or the ExecutionFailed it died of).
   */
  wrap<T>(module: string | URL): Remote<T> {
    this.#checkUsable("wrap");
    const target = resolveModule(module, "wrap");
    const { port1, port2 } = new MessageChannel();
    const exposed = this.#request(
      { type: "wrap", req: this.#nextRequest++, module: target.module, port: port2, base: target.base, label: target.label },
      `wrap of ${target.specifier}`,
      [port2],
    );
    // Settles only if the import fails (or the interpreter dies first): then every call must fail with it.
    const importFailed = exposed.then(
      () => new Promise<never>(() => {}),
      (err: unknown) => {
        port1.close();
        throw err;
      },
    );
    const died = this.#gone.then(() => {
      throw this.#crash ?? new InterpreterClosedError(`${this.#describe()} exited while a call through wrap(${target.specifier}) was pending`);
    });
    const broken = Promise.race([importFailed, died]);
    broken.catch(() => {});
    port1.unref();
    const remote = Comlink.wrap(nodeEndpoint(port1));
    return guardRemote(remote, broken, () => this.#worker?.ref(), () => this.#refCount()) as Remote<T>;
  }

  /**
   * Graceful stop: waits for running exec/call to finish, then the
   * interpreter exits and its ends are released. Resolves once it is gone.
   */
  async close(): Promise<void> {
    if (!this.#worker) throw new InterpretersError(`close on ${this.#describe()}: only its creator can close it`);
    if (this.#exited) return this.#gone;
    const release = holdProcess(); // until the exit event: the worker is unref'd
    try {
      await this.#request({ type: "close", req: this.#nextRequest++ }, "close").catch(() => {});
      await this.#gone;
    } finally {
      release();
    }
  }

  /** Hard stop: ends it now; its ends are released before this resolves. */
  async terminate(): Promise<void> {
    if (!this.#worker) throw new InterpretersError(`terminate on ${this.#describe()}: only its creator can terminate it`);
    const release = holdProcess();
    try {
      if (!this.#exited) await this.#worker.terminate();
      await this.#gone;
    } finally {
      release();
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#worker && !this.#exited) await this.close();
  }

  /** @internal Waits for the worker's ready message. */
  _ready(): Promise<void> {
    const worker = this.#worker!;
    return new Promise((resolve, reject) => {
      const onMessage = (message: ControlReply): void => {
        if (message.type === "ready") {
          cleanup();
          resolve();
        }
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(this.#crash ?? new InterpreterClosedError(`${this.#describe()} exited (code ${code}) while starting`));
      };
      const cleanup = (): void => {
        worker.off("message", onMessage);
        worker.off("exit", onExit);
      };
      worker.on("message", onMessage);
      worker.on("exit", onExit);
    });
  }
}

/** Waits (without blocking) until the supervisor has released slot `slot` of interpreter `id`. */
async function waitForRelease(slot: number, id: number): Promise<void> {
  const release = holdProcess();
  try {
    await waitForState(slot, id);
  } finally {
    release();
  }
}

async function waitForState(slot: number, id: number): Promise<void> {
  const word = slotWord(slot, P_STATE);
  const deadline = performance.now() + 10_000;
  for (;;) {
    const state = Atomics.load(control, word);
    if (state === PartyState.FREE || slotId(slot) !== id) return;
    const remaining = deadline - performance.now();
    if (remaining <= 0) return; // the supervisor is gone (process shutting down): do not hang
    const wait = Atomics.waitAsync(control, word, state, remaining);
    if (wait.async) await wait.value;
  }
}

/** Wraps a comlink proxy so that each call also rejects when `broken` does (the import failed, or the interpreter died). */
function guardRemote(remote: unknown, broken: Promise<never>, hold: () => void, release: () => void): unknown {
  return new Proxy(remote as object, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof property === "symbol") return value;
      if (property === "then") {
        if (typeof value !== "function") return value;
        return (onFulfilled: (v: unknown) => unknown, onRejected: (e: unknown) => unknown) =>
          Promise.race([{ then: (value as (...a: unknown[]) => unknown).bind(target) } as PromiseLike<unknown>, broken]).then(onFulfilled, onRejected);
      }
      return guardRemote(value, broken, hold, release);
    },
    apply(target, thisArg, args) {
      hold();
      const call = Promise.race([Reflect.apply(target as (...a: unknown[]) => unknown, thisArg, args) as Promise<unknown>, broken]);
      void call.finally(release).catch(() => {});
      return call;
    },
  });
}

/**
 * Creates an interpreter and resolves once it is ready to run code.
 * Rejects with InterpreterClosedError (or ExecutionFailed) if it dies while
 * starting, or the signal's reason if aborted. Works in any interpreter;
 * the new one ends when its creator ends.
 */
export async function create(options: CreateOptions = {}): Promise<Interpreter> {
  const signal = options.signal;
  signal?.throwIfAborted();
  const id = nextInterpreterId();
  const name = options.name ?? `interpreter-${id}`;
  if (typeof name !== "string") throw new TypeError(`create: name must be a string, got ${typeof name}`);
  ensureSupervisor();
  const slot = claimSlot(id, name);
  const { port1: toSupervisor, port2: supervisorSide } = new MessageChannel();
  postToSupervisor({ type: "attach", slot, id, port: supervisorSide });
  const worker = spawnWorker(
    "interpreter",
    { [WORKER_DATA_KEY]: bootDataFor(slot, id, name), [`${WORKER_DATA_KEY}Supervisor`]: toSupervisor },
    [toSupervisor],
    name,
    { resourceLimits: options.resourceLimits, env: options.env },
  );
  const interpreter = new Interpreter(id, name, slot, worker);
  created.set(slot, interpreter);
  const onAbort = (): void => void interpreter.terminate();
  signal?.addEventListener("abort", onAbort, { once: true });
  interpreter.once("exit", () => signal?.removeEventListener("abort", onAbort));
  try {
    await interpreter._ready();
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    throw err;
  }
  worker.unref();
  if (signal?.aborted) {
    await interpreter.terminate();
    throw signal.reason;
  }
  return interpreter;
}

function viewOf(slot: number): Interpreter {
  const id = slotId(slot);
  const mine = created.get(slot);
  if (mine && mine.id === id) return mine;
  let view = views.get(id);
  if (!view) views.set(id, (view = new Interpreter(id, slotName(slot), slot)));
  return view;
}

/** Every live interpreter of the process (main included), in slot order. */
export function list(): Interpreter[] {
  const live = liveSlots().map(viewOf);
  // Forget views of interpreters that are gone (they would pile up otherwise).
  for (const id of views.keys()) if (!live.some((i) => i.id === id)) views.delete(id);
  return live;
}

let currentInterpreter: Interpreter | undefined;
/** The interpreter this code runs in. */
export function current(): Interpreter {
  return (currentInterpreter ??= new Interpreter(myId, slotName(mySlot), mySlot));
}

/** The main interpreter (id 0). */
export function main(): Interpreter {
  return mySlot === 0 ? current() : viewOf(0);
}
