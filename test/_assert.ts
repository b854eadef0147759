/** Assertions: uvu's, plus `rejects`/`throws` that check an error's class and message. */
import * as uvuAssert from "uvu/assert";

type ErrorClass = abstract new (...args: never[]) => Error;

async function rejects(
  promiseOrFn: Promise<unknown> | (() => Promise<unknown>),
  cls: ErrorClass,
  message?: RegExp,
): Promise<Error> {
  let settled: unknown;
  try {
    await (typeof promiseOrFn === "function" ? promiseOrFn() : promiseOrFn);
  } catch (err) {
    settled = err;
  }
  return check(settled, cls, message, "promise did not reject");
}

function throws(fn: () => unknown, cls: ErrorClass, message?: RegExp): Error {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  return check(thrown, cls, message, "function did not throw");
}

function check(err: unknown, cls: ErrorClass, message: RegExp | undefined, none: string): Error {
  if (err === undefined) throw new uvuAssert.Assertion({ message: `${none}; expected ${cls.name}`, operator: "throws", generated: false, expects: cls.name, actual: "nothing" } as never);
  if (!(err instanceof cls)) {
    const e = err as Error;
    throw new Error(`expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}\n${e?.stack}`);
  }
  if (message && !message.test(err.message)) {
    throw new Error(`${cls.name} message ${JSON.stringify(err.message)} does not match ${message}`);
  }
  return err;
}

export const assert = { ...uvuAssert, rejects, throws };
