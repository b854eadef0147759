/**
 * The type of what `Interpreter.wrap<T>()` returns. It is comlink's
 * `Remote<T>` for what a module exports (functions, classes, values),
 * written here because comlink's own declarations need the DOM library
 * (`MessagePort`, `Transferable`, `EventListenerOrEventListenerObject`):
 * a Node project that does not include it, checking declarations
 * (`skipLibCheck: false`), would fail on them.
 */

/**
 * `T` as seen through a `wrap()` proxy: for `T = typeof import("./worker.js")`,
 * each export `name` of the module becomes:
 * - a function: an async function with the same parameters, resolving to
 *   its (awaited) result;
 * - a class: a constructor whose `new` resolves to a Remote of the instance;
 * - anything else: a promise of its value.
 */
export type Remote<T> = { readonly [Name in keyof T]: RemoteMember<T[Name]> };

/** One export as seen through a `wrap()` proxy (see Remote). */
export type RemoteMember<Member> = Member extends (...args: infer Args) => infer Result
  ? (...args: Args) => Promise<Awaited<Result>>
  : Member extends new (...args: infer Args) => infer Instance
    ? new (...args: Args) => Promise<Remote<Instance>>
    : Promise<Awaited<Member>>;
