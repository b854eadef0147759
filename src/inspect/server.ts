/**
 * `serveInspector()`: the live picture of a running process, over HTTP.
 *
 * Routes (GET and HEAD only; the server is read-only and runs nothing a
 * request asks for):
 * - `/`              the page (page.ts): interpreters, channels with fill
 *                    bars, who holds which end, the wait-for graph with
 *                    deadlock cycles marked, pipeline stages;
 * - `/app.js`, `/app.css` the page's script and style (served separately
 *                    so the Content-Security-Policy can forbid inline code);
 * - `/snapshot.json` one snapshot (types.ts; Infinity as "Infinity");
 * - `/events`        server-sent events: a snapshot every `intervalMs`
 *                    (default 100 ms: 10 a second) for as long as the
 *                    client stays.
 *
 * Snapshots are taken only while someone watches (one timer for all
 * clients, stopped when the last leaves), so an idle inspector costs
 * nothing. A client that reads slower than snapshots come skips frames
 * instead of growing a backlog.
 *
 * Loopback only by default: any other host needs `allowRemote: true`.
 * Requests whose Host header is not the server's own address are refused
 * (a web page elsewhere cannot read the snapshot through DNS rebinding).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { isIP } from "node:net";
import { inspect } from "./inspect.js";
import { PAGE_CSS, PAGE_HTML, PAGE_JS } from "./page.js";
import { type Snapshot, snapshotToJson } from "./types.js";

export interface InspectorOptions {
  /** TCP port; default 0: any free port (see the returned url). */
  port?: number;
  /** Address to listen on; default 127.0.0.1. Anything but a loopback address needs allowRemote. */
  host?: string;
  /** Allow a non-loopback host: anyone who can reach it sees every interpreter's and channel's name. */
  allowRemote?: boolean;
  /** Milliseconds between snapshots sent to watching pages; default 100 (10 a second), at least 20. */
  intervalMs?: number;
  /** Do not keep the process alive for the server (how INTERPRETERS_INSPECT starts it). Default false. */
  unref?: boolean;
  /** @internal Tests only: where snapshots come from (default `inspect`). */
  source?: () => Snapshot;
}

export interface Inspector {
  /** `http://host:port/`. */
  url: string;
  /** Stops the server and ends every event stream. */
  close(): Promise<void>;
}

/** Whether `host` is a loopback address or name (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (bare === "localhost" || bare === "::1" || bare === "0:0:0:0:0:0:0:1") return true;
  if (isIP(bare) === 4) return bare.startsWith("127.");
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  return mapped !== null && mapped[1]!.startsWith("127.");
}

const SECURITY_HEADERS = {
  "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
  "Cache-Control": "no-store",
};

/**
 * Serves the live page, `/snapshot.json` and `/events` (see the file
 * comment). Resolves once listening, with the page's url. Rejects with
 * RangeError for a bad option (a non-loopback host without allowRemote, a
 * port outside 0-65535, an interval below 20 ms) and with the listen
 * error (e.g. EADDRINUSE) if the port cannot be had.
 */
export async function serveInspector(options: InspectorOptions = {}): Promise<Inspector> {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 0;
  const intervalMs = options.intervalMs ?? 100;
  if (typeof host !== "string" || host === "") throw new RangeError(`serveInspector: host must be an address such as "127.0.0.1", got ${String(host)}`);
  if (!isLoopback(host) && options.allowRemote !== true) {
    throw new RangeError(
      `serveInspector: host ${host} is not a loopback address; the inspector shows every interpreter's and channel's name to whoever reaches it, so pass { host, allowRemote: true } to serve it there`,
    );
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`serveInspector: port must be an integer from 0 to 65535, got ${String(port)}`);
  if (typeof intervalMs !== "number" || !(intervalMs >= 20) || !Number.isFinite(intervalMs)) {
    throw new RangeError(`serveInspector: intervalMs must be a number of milliseconds >= 20, got ${String(intervalMs)}`);
  }
  const source = options.source ?? inspect;

  const clients = new Set<ServerResponse>();
  let timer: NodeJS.Timeout | undefined;
  let last: { at: number; json: string } | undefined;
  const snapshotJson = (): string => {
    const now = performance.now();
    if (last && now - last.at < intervalMs / 2) return last.json;
    last = { at: now, json: snapshotToJson(source()) };
    return last.json;
  };
  const tick = (): void => {
    if (clients.size === 0) return;
    const frame = `data: ${snapshotJson()}\n\n`;
    for (const client of clients) {
      // A client still behind on the previous frame skips this one.
      if (client.writableNeedDrain) continue;
      client.write(frame);
    }
  };
  const startTicking = (): void => {
    if (timer) return;
    timer = setInterval(tick, intervalMs);
    timer.unref();
  };
  const stopTicking = (): void => {
    if (timer && clients.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };

  /** Host headers accepted (loopback only: a remote inspector is reached by names we cannot know). */
  let allowedHosts: Set<string> | undefined = new Set();
  const server = createServer((request, response) => {
    try {
      route(request, response);
    } catch (err) {
      if (!response.headersSent) response.writeHead(500, { "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
      response.end(`inspector error: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  });
  const route = (request: IncomingMessage, response: ServerResponse): void => {
    if (request.method !== "GET" && request.method !== "HEAD") {
      response.writeHead(405, { Allow: "GET, HEAD", "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
      response.end("the inspector is read-only: GET and HEAD only\n");
      return;
    }
    if (allowedHosts && !allowedHosts.has((request.headers.host ?? "").toLowerCase())) {
      response.writeHead(421, { "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
      response.end("wrong Host header: use the address the inspector printed\n");
      return;
    }
    const path = (request.url ?? "/").split("?")[0];
    const send = (type: string, body: string): void => {
      response.writeHead(200, { "Content-Type": type, "Content-Length": Buffer.byteLength(body), ...SECURITY_HEADERS });
      response.end(request.method === "HEAD" ? undefined : body);
    };
    switch (path) {
      case "/":
        return send("text/html; charset=utf-8", PAGE_HTML);
      case "/app.js":
        return send("text/javascript; charset=utf-8", PAGE_JS);
      case "/app.css":
        return send("text/css; charset=utf-8", PAGE_CSS);
      case "/snapshot.json":
        return send("application/json; charset=utf-8", snapshotJson());
      case "/events": {
        response.writeHead(200, { "Content-Type": "text/event-stream", Connection: "keep-alive", ...SECURITY_HEADERS });
        if (request.method === "HEAD") {
          response.end();
          return;
        }
        response.write(`retry: 1000\n\ndata: ${snapshotJson()}\n\n`);
        clients.add(response);
        startTicking();
        const leave = (): void => {
          clients.delete(response);
          stopTicking();
        };
        request.on("close", leave);
        response.on("error", leave);
        return;
      }
      default:
        response.writeHead(404, { "Content-Type": "text/plain; charset=utf-8", ...SECURITY_HEADERS });
        response.end("not found: the inspector serves /, /snapshot.json and /events\n");
    }
  };

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  if (options.unref) {
    // Neither the listening socket nor a watching page keeps the program alive.
    server.unref();
    server.on("connection", (socket) => socket.unref());
  }
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  const urlHost = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  if (isLoopback(host)) allowedHosts = new Set([`${urlHost}:${boundPort}`.toLowerCase(), ...["127.0.0.1", "localhost", "[::1]"].map((name) => `${name}:${boundPort}`)]);
  else allowedHosts = undefined;
  return {
    url: `http://${urlHost}:${boundPort}/`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of clients) client.end();
        clients.clear();
        stopTicking();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
