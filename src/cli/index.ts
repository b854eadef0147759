#!/usr/bin/env node
/**
 * The `interpreters` command (package.json "bin"):
 *   npx interpreters lab [options]    the buffer-semantics lab (lab.ts)
 *   npx interpreters top URL [--once] the inspector in a terminal (top.ts)
 */
import { labCommand } from "./lab.js";
import { topCommand } from "./top.js";

const USAGE = `Usage: npx interpreters <command>

Commands:
  lab [options]      the buffer-semantics lab: one scenario at each capacity, measured beside queueing theory
  top URL [--once]   an inspector's live picture in the terminal

npx interpreters lab --help and npx interpreters top --help tell more.
`;

const [command, ...rest] = process.argv.slice(2);
let code: number;
switch (command) {
  case "lab":
    code = await labCommand(rest);
    break;
  case "top":
    code = await topCommand(rest);
    break;
  case undefined:
  case "-h":
  case "--help":
  case "help":
    process.stdout.write(USAGE);
    code = command === undefined ? 2 : 0;
    break;
  default:
    process.stderr.write(`interpreters: unknown command ${JSON.stringify(command)}; use lab or top\n\n${USAGE}`);
    code = 2;
}
process.exitCode = code;
