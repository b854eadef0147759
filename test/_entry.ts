/**
 * Runs one test file under uvu's deferred mode and prints uvu's totals, then
 * exits: interpreters a test forgot to close must not keep the file alive.
 */
import { pathToFileURL } from "node:url";

(globalThis as { UVU_DEFER?: number }).UVU_DEFER = 1;
const file = process.argv[2]!;
(globalThis as { UVU_QUEUE?: unknown[][] }).UVU_QUEUE = [[file.split("/").pop()!]];
await import(pathToFileURL(file).href);
const { exec } = await import("uvu");
const ok = await exec();
process.exit(ok === false || process.exitCode ? 1 : 0);
