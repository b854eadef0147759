/**
 * A Redis-protocol (RESP2) server on offload(): `node dist/examples/resp-server.js
 * --port P --interpreters N [--host H] [--overload pause|reject] [--capacity C]`.
 * Prints the URL it listens on (redis://host:port), then serves until
 * SIGINT or SIGTERM.
 *
 * The keyspace is sharded across the N protocol interpreters by key hash,
 * shared nothing (protocols/resp.ts): each interpreter owns one shard and
 * has an inbox channel through which the others ask it for its keys.
 */
import net from "node:net";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { createChannel, offload, type RecvChannel, type SendChannel } from "interpreters";

const fromSource = import.meta.url.endsWith(".ts");
const PROTOCOL = new URL(`./protocols/resp.${fromSource ? "ts" : "js"}`, import.meta.url);

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "6380" },
    host: { type: "string", default: "127.0.0.1" },
    interpreters: { type: "string" },
    overload: { type: "string", default: "pause" },
    capacity: { type: "string" },
  },
});
const interpreters = Number(values.interpreters ?? Math.max(1, availableParallelism() - 1));
if (!Number.isInteger(interpreters) || interpreters < 1) throw new RangeError(`--interpreters must be a positive integer, got ${values.interpreters}`);

// One inbox per shard: every interpreter may send to any, each reads its own.
let bind: Record<string, unknown> | undefined;
if (interpreters > 1) {
  const inboxes: Array<[RecvChannel<Uint8Array>, SendChannel<Uint8Array>]> = Array.from({ length: interpreters }, (_, i) =>
    createChannel<Uint8Array>({ capacity: 1024, bufferBytes: 1024 * 1024, name: `resp-shard-${i}` }),
  );
  bind = { shardInboxes: inboxes.map(([rx]) => rx), shardSenders: inboxes.map(([, tx]) => tx) };
}

const server = net.createServer();
const served = offload(server, {
  protocol: PROTOCOL,
  interpreters,
  overload: values.overload as "pause" | "reject",
  capacity: values.capacity === undefined ? undefined : Number(values.capacity),
  bind,
  name: "resp",
});
await served.ready;
await new Promise<void>((resolve, reject) => {
  server.once("error", reject);
  server.listen(Number(values.port), values.host, () => resolve());
});
const address = server.address() as net.AddressInfo;
const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
console.log(`redis://${host}:${address.port} (${interpreters} shard${interpreters === 1 ? "" : "s"}, one per interpreter)`);

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  server.close();
  await served.close();
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
