/**
 * The baselines the offloaded HTTP server is measured against: node:http
 * with the same routes and the same handler code (examples/protocols/
 * work.ts for `/work?us=N`), in one thread, or with `cluster` (`--cluster N`
 * processes; the primary deals connections round-robin, Node's default).
 *
 * `node dist/bench/lib/servers-node-http.js --port P [--cluster N] [--host H]`
 * prints the URL it listens on (after every process listens), serves until
 * SIGINT/SIGTERM.
 */
import cluster from "node:cluster";
import http from "node:http";
import net from "node:net";
import { parseArgs } from "node:util";
import { burn, workMicros } from "../../examples/protocols/work.js";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    cluster: { type: "string", default: "0" },
  },
});
const processes = Number(values.cluster);

function handler(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = req.url ?? "/";
  const question = url.indexOf("?");
  const path = question < 0 ? url : url.slice(0, question);
  const send = (status: number, body: string | Buffer, type = "text/plain"): void => {
    res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body) });
    res.end(req.method === "HEAD" ? undefined : body);
  };
  if ((path === "/" || path === "/health") && (req.method === "GET" || req.method === "HEAD")) {
    send(200, path === "/" ? "Hello, world!\n" : "ok\n");
  } else if (path === "/work" && req.method === "GET") {
    const us = workMicros(question < 0 ? "" : url.slice(question + 1));
    if (us === undefined) send(400, "/work?us=N with 0 <= N <= 1000000\n");
    else send(200, `worked ${us} us: ${burn(us)}\n`);
  } else if (path === "/echo" && (req.method === "POST" || req.method === "PUT")) {
    const parts: Buffer[] = [];
    req.on("data", (d: Buffer) => parts.push(d));
    req.on("end", () => send(200, Buffer.concat(parts), "application/octet-stream"));
  } else send(404, "Not Found\n");
}

function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, host, () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

if (processes > 0 && cluster.isPrimary) {
  const port = Number(values.port) || (await freePort(values.host!));
  let listening = 0;
  for (let i = 0; i < processes; i++) {
    const worker = cluster.fork({ NODE_HTTP_PORT: String(port) });
    worker.on("listening", () => {
      if (++listening === processes) console.log(`http://${values.host}:${port}/ (node:http, cluster of ${processes})`);
    });
  }
  const stop = (): void => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.kill();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
} else {
  const port = Number(process.env.NODE_HTTP_PORT ?? values.port);
  const server = http.createServer({ keepAliveTimeout: 60_000 }, handler);
  server.listen(port, values.host, () => {
    if (!cluster.isWorker) console.log(`http://${values.host}:${(server.address() as net.AddressInfo).port}/ (node:http, one thread)`);
  });
  const stop = (): void => {
    server.close();
    server.closeAllConnections();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
