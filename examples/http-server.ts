/**
 * An HTTP/1.1 server on offload(): `node dist/examples/http-server.js
 * --port P --interpreters N [--workers W] [--work-nice K] [--host H]
 * [--overload pause|reject] [--capacity C]`. Prints the URL it listens on, then serves until SIGINT or
 * SIGTERM (then closes gracefully).
 *
 * The main thread only moves bytes between sockets and interpreters. N
 * protocol interpreters parse and route (protocols/http.ts); W work
 * interpreters (default: max(1, cores - 1); 0: none) run `/work` (protocols/
 * http-work.ts), so that a flood of heavy requests never delays a cheap one;
 * their threads run at nice K (default 10: Linux, per thread) so that the
 * threads moving bytes and parsing get a core first when they wake.
 */
import net from "node:net";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { create, createChannel, offload, type Interpreter, type RecvChannel, type SendChannel } from "interpreters";
import type { Job, Result } from "./protocols/http-work.js";

const fromSource = import.meta.url.endsWith(".ts");
const ext = fromSource ? "ts" : "js";
const PROTOCOL = new URL(`./protocols/http.${ext}`, import.meta.url);
const WORK = new URL(`./protocols/http-work.${ext}`, import.meta.url);

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "8080" },
    host: { type: "string", default: "127.0.0.1" },
    interpreters: { type: "string" },
    workers: { type: "string" },
    "work-nice": { type: "string", default: "10" },
    overload: { type: "string", default: "pause" },
    capacity: { type: "string" },
  },
});
const cores = availableParallelism();
const interpreters = Number(values.interpreters ?? Math.max(1, cores - 1));
const workers = Number(values.workers ?? Math.max(1, cores - 1));
const overload = values.overload as "pause" | "reject";
const workNice = Number(values["work-nice"]);
if (!Number.isInteger(interpreters) || interpreters < 1) throw new RangeError(`--interpreters must be a positive integer, got ${values.interpreters}`);
if (!Number.isInteger(workers) || workers < 0) throw new RangeError(`--workers must be a non-negative integer, got ${values.workers}`);

// The work stage: a bounded jobs channel shared by every work interpreter,
// and a results channel per protocol interpreter.
let bind: Record<string, unknown> | undefined;
const stage: Array<{ interpreter: Interpreter; done: Promise<unknown> }> = [];
if (workers > 0) {
  const [jobsRx, jobsTx] = createChannel<Job>({ capacity: 64, name: "http-jobs" });
  const results: Array<[RecvChannel<Result>, SendChannel<Result>]> = Array.from({ length: interpreters }, (_, i) => createChannel<Result>({ name: `http-results-${i}` }));
  for (let w = 0; w < workers; w++) {
    const interpreter = await create({ name: `http-work-${w}` });
    const done = interpreter.call(WORK, "serveWork", jobsRx.clone(), results.map(([, tx]) => tx.clone()), workNice);
    stage.push({ interpreter, done });
  }
  jobsRx.close();
  for (const [, tx] of results) tx.close();
  bind = { jobs: jobsTx, results: results.map(([rx]) => rx) };
}

const server = net.createServer();
const served = offload(server, {
  protocol: PROTOCOL,
  interpreters,
  overload,
  capacity: values.capacity === undefined ? undefined : Number(values.capacity),
  bind,
  name: "http",
});
await served.ready;
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(Number(values.port), values.host, () => resolve());
});
const address = server.address() as net.AddressInfo;
const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
console.log(`http://${host}:${address.port}/ (${interpreters} protocol interpreter${interpreters === 1 ? "" : "s"}, ${workers} work interpreter${workers === 1 ? "" : "s"})`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  server.close();
  await served.close();
  // The protocol interpreters are gone with their jobs handles: the stage drains and ends.
  await Promise.all(stage.map(({ done }) => done.catch(() => {})));
  await Promise.all(stage.map(({ interpreter }) => interpreter.close()));
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
