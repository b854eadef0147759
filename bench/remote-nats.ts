/**
 * nats-server for the remote channel tests, benchmark and examples: started by the
 * test itself with JetStream on, file storage in a fresh temporary
 * directory, on a free port of 127.0.0.1 (or of an address inside a network
 * namespace the test made), and killed when the test is done (and, at the
 * latest, when the test process exits: nothing is left running).
 *
 * `natsMissing()` says why the tests cannot run (no nats-server binary), so
 * that they skip saying so instead of failing.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NATS_SERVER = process.env.NATS_SERVER ?? "nats-server";

/** Undefined when nats-server can be run; else why not. */
export function natsMissing(): string | undefined {
  const probe = spawnSync(NATS_SERVER, ["--version"], { encoding: "utf8" });
  if (probe.error) return `${NATS_SERVER} is not installed (${(probe.error as NodeJS.ErrnoException).code}); install Debian's nats-server (apt-get install nats-server)`;
  return undefined;
}

export function natsVersion(): string {
  return spawnSync(NATS_SERVER, ["--version"], { encoding: "utf8" }).stdout.trim();
}

/** A port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

const running = new Set<ChildProcess>();
const tempDirs = new Set<string>();
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL");
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export interface NatsOptions {
  /** Keep messages here (default: a fresh temp dir); pass the same to restart on the same data. */
  storeDir?: string;
  host?: string;
  port?: number;
  /** A command prefix to run the server under, e.g. ["ip", "netns", "exec", "srv"]. */
  wrap?: string[];
  /** Cluster: this server's name, its cluster port, and the routes to the others. */
  cluster?: { name: string; serverName: string; port: number; routes: string[] };
  /** Milliseconds to wait for "Server is ready" (default 15 s). */
  readyTimeout?: number;
  /** Run without JetStream (to test what a client does then). */
  noJetStream?: boolean;
}

export class NatsServer {
  readonly host: string;
  readonly port: number;
  readonly storeDir: string;
  readonly options: NatsOptions;
  #child: ChildProcess | undefined;
  log = "";

  constructor(options: NatsOptions & { port: number }) {
    this.options = options;
    this.host = options.host ?? "127.0.0.1";
    this.port = options.port;
    this.storeDir = options.storeDir ?? tempDir("nats-store-");
  }

  get url(): string {
    return `nats://${this.host}:${this.port}`;
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts the server and resolves once it says it is ready. */
  async start(): Promise<void> {
    if (this.#child) throw new Error(`nats-server on ${this.url} is already running`);
    const args = [...(this.options.noJetStream ? [] : ["-js", "-sd", this.storeDir]), "-a", this.host, "-p", String(this.port)];
    const cluster = this.options.cluster;
    if (cluster) {
      const conf = join(this.storeDir, "..", `${cluster.serverName}.conf`);
      writeFileSync(
        conf,
        [
          `server_name: ${cluster.serverName}`,
          `cluster {`,
          `  name: ${cluster.name}`,
          `  listen: ${this.host}:${cluster.port}`,
          `  routes: [${cluster.routes.map((r) => `"${r}"`).join(", ")}]`,
          `}`,
        ].join("\n"),
      );
      args.push("-c", conf);
    }
    const wrap = this.options.wrap ?? [];
    const [command, ...rest] = [...wrap, NATS_SERVER, ...args];
    const child = spawn(command!, rest, { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    running.add(child);
    this.log = "";
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`nats-server on ${this.url} was not ready within ${this.options.readyTimeout ?? 15_000} ms; its log:\n${this.log}`)),
        this.options.readyTimeout ?? 15_000,
      );
      const onData = (data: Buffer): void => {
        this.log += data.toString();
        if (this.log.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`nats-server on ${this.url} exited (${signal ?? code}) before it was ready; its log:\n${this.log}`));
      });
    });
    child.once("exit", () => {
      running.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
    await ready;
  }

  /** Kills the server (SIGKILL by default: a crash, not a shutdown) and waits until it is gone. */
  async stop(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (!child) return;
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    await gone;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/** Starts a single JetStream server on a free port of 127.0.0.1. */
export async function startNats(options: NatsOptions = {}): Promise<NatsServer> {
  const server = new NatsServer({ ...options, port: options.port ?? (await freePort()) });
  await server.start();
  return server;
}

export interface NatsCluster {
  servers: NatsServer[];
  urls: string[];
  stop(): Promise<void>;
}

/** Starts an n-node JetStream cluster on loopback (distinct client and cluster ports and store dirs). */
export async function startCluster(n = 3): Promise<NatsCluster> {
  const base = tempDir("nats-cluster-");
  const clientPorts: number[] = [];
  const clusterPorts: number[] = [];
  for (let i = 0; i < n; i++) {
    clientPorts.push(await freePort());
    clusterPorts.push(await freePort());
  }
  const routes = clusterPorts.map((p) => `nats://127.0.0.1:${p}`);
  const servers = clientPorts.map(
    (port, i) =>
      new NatsServer({
        port,
        storeDir: join(base, `n${i + 1}`),
        cluster: { name: "ich", serverName: `n${i + 1}`, port: clusterPorts[i]!, routes: routes.filter((_, j) => j !== i) },
        readyTimeout: 30_000,
      }),
  );
  await Promise.all(servers.map((s) => s.start()));
  const urls = servers.map((s) => s.url);
  try {
    await jetStreamReady(urls, 60_000);
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
  return {
    servers,
    urls: servers.map((s) => s.url),
    stop: async () => {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

/**
 * Waits until a cluster's JetStream can place a stream on every node: its
 * servers accept connections before they have elected a meta leader, and
 * until then every JetStream request times out or is refused (on a loaded
 * machine this took over 5 s, and a test's first connectChannel failed with
 * "no JetStream"); then, until every peer has joined, a stream of n replicas
 * is refused ("no suitable peers for placement").
 */
async function jetStreamReady(urls: string[], ms: number): Promise<void> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstreamManager } = await import("@nats-io/jetstream");
  const deadline = Date.now() + ms;
  const nc = await connect({ servers: urls, timeout: ms });
  try {
    for (;;) {
      try {
        // Answering is not enough: a stream of n replicas needs every peer
        // known to the meta leader ("no suitable peers for placement").
        const jsm = await jetstreamManager(nc, { timeout: 2000 });
        const probe = `READY_${process.pid}_${Date.now()}`;
        await jsm.streams.add({ name: probe, subjects: [`${probe}.>`], num_replicas: urls.length });
        await jsm.streams.delete(probe);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`the ${urls.length}-node cluster's JetStream did not answer within ${ms} ms: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  } finally {
    await nc.close();
  }
}
