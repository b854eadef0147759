/**
 * `INTERPRETERS_INSPECT=host:port node app.js` starts the inspector in any
 * program that loads the library, without a code change (main thread
 * only, once). Accepted forms: `127.0.0.1:7777`, `[::1]:7777`, `:7777` and
 * `7777` (loopback), `localhost:0` (any free port). The url goes to
 * stderr. The server does not keep the program alive: it ends when the
 * program would have. A bad value or a port in use is a warning, never an
 * exception at import.
 */
import { isMainThread } from "node:worker_threads";
import { serveInspector } from "./server.js";

/** Splits "host:port" (see the file comment); throws RangeError naming the variable for anything else. */
export function parseInspectAddress(spec: string): { host: string; port: number } {
  const match = /^(?:(\[[^\]]+\]|[^:]*):)?(\d{1,5})$/.exec(spec.trim());
  const port = match ? Number(match[2]) : NaN;
  if (!match || !(port >= 0 && port <= 65535)) {
    throw new RangeError(`INTERPRETERS_INSPECT must be host:port (e.g. 127.0.0.1:7777) or a port, got ${JSON.stringify(spec)}`);
  }
  const host = match[1] ? match[1].replace(/^\[(.*)\]$/, "$1") : "127.0.0.1";
  return { host, port };
}

const spec = process.env.INTERPRETERS_INSPECT;
if (isMainThread && spec) {
  try {
    const { host, port } = parseInspectAddress(spec);
    serveInspector({ host, port, unref: true }).then(
      (inspector) => process.stderr.write(`interpreters: inspector at ${inspector.url}\n`),
      (err: unknown) => process.emitWarning(`interpreters: INTERPRETERS_INSPECT=${spec}: the inspector could not start: ${err instanceof Error ? err.message : String(err)}`),
    );
  } catch (err) {
    process.emitWarning(`interpreters: ${err instanceof Error ? err.message : String(err)}`);
  }
}
