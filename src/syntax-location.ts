/**
 * Where a SyntaxError is. V8 reports a syntax error in an ES module without
 * its line or column (Node keeps them in a field JavaScript cannot read and
 * prints them only when the error ends the process), so a SyntaxError from
 * `exec` source, or from a module `call` or `wrap` imports, would say what
 * is wrong but not where. This parses the same text again with acorn (an
 * ECMAScript parser that reports positions) to find the place; V8's message
 * is kept. acorn is loaded only when a SyntaxError happens.
 */
import { createRequire } from "node:module";

/** A place in source text: line and column, both 1-based as editors show them. */
export interface SourcePlace {
  line: number;
  column: number;
  /** A few lines around the place with a caret under it. */
  frame: string;
}

const require = createRequire(import.meta.url);

/**
 * The place of the first syntax error in `source` parsed as an ES module,
 * or undefined when acorn finds none (the error came from elsewhere: a
 * module it imports, or linking) or cannot be loaded.
 */
export function locateSyntaxError(source: string): SourcePlace | undefined {
  let parse: (input: string, options: object) => unknown;
  try {
    ({ parse } = require("acorn") as { parse: typeof parse });
  } catch {
    return undefined;
  }
  try {
    parse(source, { ecmaVersion: "latest", sourceType: "module", allowHashBang: true, allowAwaitOutsideFunction: true });
    return undefined;
  } catch (err) {
    const loc = (err as { loc?: { line: number; column: number } }).loc;
    if (!loc) return undefined;
    return { line: loc.line, column: loc.column + 1, frame: codeFrame(source, loc.line, loc.column + 1) };
  }
}

/** Lines `line - 1` and `line` of `source`, numbered, with a caret under `column`. */
export function codeFrame(source: string, line: number, column: number): string {
  const lines = source.split(/\r\n|\r|\n/);
  const width = String(line).length;
  const shown: string[] = [];
  for (let n = Math.max(1, line - 1); n <= line; n++) {
    shown.push(`${n === line ? ">" : " "} ${String(n).padStart(width)} | ${lines[n - 1] ?? ""}`);
  }
  const prefix = lines[line - 1]?.slice(0, column - 1).replace(/[^\t]/g, " ") ?? "";
  shown.push(`  ${" ".repeat(width)} | ${prefix}^`);
  return shown.join("\n");
}
