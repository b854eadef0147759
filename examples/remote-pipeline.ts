/**
 * `node dist/examples/remote-pipeline.js`: a pipeline stage on another
 * "host", with backpressure end to end.
 *
 *     host 1: source ──▶ remote channel "jobs" (capacity 4) ──▶ host 2: stage, 2 interpreters
 *     host 1: sink   ◀── remote channel "results" (capacity 4) ◀──┘
 *
 * Host 1 runs nats-server (JetStream) and a process with the source and the
 * sink; host 2 runs a process whose two interpreters take jobs with
 * blocking `for (const job of jobs)` and answer with `results.sendSync`, each
 * job taking ~40 ms of CPU. The source would produce 40 jobs at once, but
 * the stage does ~50 a second, so the source's sends wait: it prints how
 * long each waited and how many jobs were in flight (sent, not yet back),
 * which stays bounded by the channels' capacities, not by the 40.
 *
 * As root (with unshare and ip), the two hosts are network namespaces
 * joined by a veth pair (10.99.0.1 and 10.99.0.2): every message crosses
 * that link. Otherwise (or with REMOTE_PIPELINE_LOOPBACK=1) host 2 is just a
 * second process on 127.0.0.1.
 * Needs nats-server (Debian: apt-get install nats-server).
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectChannel, create } from "interpreters";

const JOBS = 40;
const CAPACITY = 4;
const WORKERS = 2;
const self = process.argv[1]!;
const [role, url] = process.argv.slice(2);

interface Job {
  id: number;
  sentAt: number;
}
interface Result {
  id: number;
  sentAt: number;
  worker: string;
}

if (role === "stage") await stage(url!);
else if (role === "source") await sourceAndSink(url!);
else if (role === "hosts") await twoHosts();
else await main();

/** Host 2: the stage, its work done by interpreters, fed and drained by remote channels. */
async function stage(url: string): Promise<void> {
  const [jobs] = await connectChannel<Job>(url, "jobs", { role: "recv", capacity: CAPACITY });
  const [, results] = await connectChannel<Result>(url, "results", { role: "send", capacity: CAPACITY });
  const workers = await Promise.all(Array.from({ length: WORKERS }, (_, i) => create({ name: `worker ${i + 1}` })));
  const done = workers.map((worker, i) =>
    worker.exec(
      `for (const job of jobs) {
         const until = performance.now() + 40;        // the work: 40 ms of CPU
         while (performance.now() < until);
         results.sendSync({ id: job.id, sentAt: job.sentAt, worker: name });
       }
       jobs.close();
       results.close();`,
      // Each interpreter gets ends of its own (clones); the ends move into it.
      { bind: { jobs: jobs.clone(), results: results.clone(), name: `worker ${i + 1}` } },
    ),
  );
  jobs.close();
  results.close();
  await Promise.all(done);
  await Promise.all(workers.map((w) => w.close()));
}

/** Host 1: the source sends jobs as fast as the channel lets it; the sink counts results. */
async function sourceAndSink(url: string): Promise<void> {
  const [, jobs] = await connectChannel<Job>(url, "jobs", { role: "send", capacity: CAPACITY });
  const [results] = await connectChannel<Result>(url, "results", { role: "recv", capacity: CAPACITY });
  const started = performance.now();
  const at = (): string => `${(performance.now() - started).toFixed(0).padStart(5)} ms`;
  let sent = 0;
  let received = 0;
  let mostInFlight = 0;
  let waited = 0;
  const sink = (async () => {
    for await (const result of results) {
      received++;
      if (received % 8 === 0) console.log(`${at()}  sink: ${received} results (job ${result.id} by ${result.worker}, ${(Date.now() - result.sentAt).toFixed(0)} ms after it was sent)`);
    }
  })();
  for (let id = 0; id < JOBS; id++) {
    const before = performance.now();
    await jobs.send({ id, sentAt: Date.now() });
    const waitedMs = performance.now() - before;
    waited += waitedMs;
    sent++;
    mostInFlight = Math.max(mostInFlight, sent - received);
    if (id < 3 || id % 8 === 0) console.log(`${at()}  source: job ${id} sent after waiting ${waitedMs.toFixed(0)} ms; in flight ${sent - received}`);
  }
  jobs.close();
  await sink;
  results.close();
  // In flight at most: "jobs" holds CAPACITY, the source's bridge one more in hand, each worker one job,
  // the stage's bridge one result in hand, "results" CAPACITY.
  const bound = CAPACITY + 1 + WORKERS + 1 + CAPACITY;
  console.log(
    `\n${JOBS} jobs through the stage in ${at().trim()}; the source waited ${waited.toFixed(0)} ms in all (backpressure from host 2);` +
      ` at most ${mostInFlight} jobs were in flight at once (bound ${bound}: ${CAPACITY} in "jobs", ${WORKERS} in the workers, ${CAPACITY} in "results",` +
      ` one in hand in each bridge), never all ${JOBS}.`,
  );
}

/** Starts nats-server (JetStream, file storage in a temp dir) and resolves once it is ready. */
function startServer(host: string, port: number, wrap: string[] = []): Promise<{ child: ChildProcess; stop(): void }> {
  const store = mkdtempSync(join(tmpdir(), "remote-pipeline-"));
  const [command, ...args] = [...wrap, "nats-server", "-js", "-sd", store, "-a", host, "-p", String(port)];
  const child = spawn(command!, args, { stdio: ["ignore", "pipe", "pipe"] });
  const stop = (): void => {
    child.kill("SIGKILL");
    rmSync(store, { recursive: true, force: true });
  };
  process.once("exit", stop);
  return new Promise((resolve, reject) => {
    let log = "";
    const onData = (d: Buffer): void => {
      log += d;
      if (log.includes("Server is ready")) resolve({ child, stop });
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", () => reject(new Error(`nats-server did not start:\n${log}`)));
    child.once("error", (err) => reject(new Error(`cannot run nats-server (${err.message}); install it: apt-get install nats-server`)));
  });
}

function run(wrap: string[], ...args: string[]): Promise<void> {
  const [command, ...rest] = [...wrap, process.execPath, ...process.execArgv, self, ...args];
  const child = spawn(command!, rest, { stdio: ["ignore", "inherit", "inherit"] });
  return new Promise((resolve, reject) => child.once("exit", (code) => (code === 0 ? resolve() : reject(new Error(`${args[0]} exited with ${code}`)))));
}

/** Inside `unshare -m -n`: two network namespaces joined by a veth pair, one per host. */
async function twoHosts(): Promise<void> {
  const sh = (command: string, ...args: string[]): void => void execFileSync(command, args, { stdio: "inherit" });
  sh("mount", "--make-rprivate", "/");
  sh("mount", "-t", "tmpfs", "tmpfs", "/run"); // /run/netns of our own
  sh("ip", "netns", "add", "host1");
  sh("ip", "netns", "add", "host2");
  sh("ip", "link", "add", "veth1", "netns", "host1", "type", "veth", "peer", "name", "veth2", "netns", "host2");
  sh("ip", "-n", "host1", "addr", "add", "10.99.0.1/24", "dev", "veth1");
  sh("ip", "-n", "host2", "addr", "add", "10.99.0.2/24", "dev", "veth2");
  for (const [ns, dev] of [["host1", "veth1"], ["host2", "veth2"]] as const) {
    sh("ip", "-n", ns, "link", "set", dev, "up");
    sh("ip", "-n", ns, "link", "set", "lo", "up");
  }
  const server = await startServer("10.99.0.1", 4222, ["ip", "netns", "exec", "host1"]);
  const url = "nats://10.99.0.1:4222";
  console.log(`host 1 (10.99.0.1): nats-server, source and sink; host 2 (10.99.0.2): the stage\n`);
  await Promise.all([run(["ip", "netns", "exec", "host2"], "stage", url), run(["ip", "netns", "exec", "host1"], "source", url)]);
  server.stop();
}

async function main(): Promise<void> {
  const canIsolate =
    process.env.REMOTE_PIPELINE_LOOPBACK !== "1" &&
    process.getuid?.() === 0 && !spawnSync("ip", ["-V"]).error && spawnSync("unshare", ["-m", "-n", "--", "true"]).status === 0;
  if (canIsolate) {
    await run(["unshare", "-m", "-n", "--"], "hosts");
    return;
  }
  console.log("(not root, or no unshare/ip: host 2 is a second process on 127.0.0.1)\n");
  const port = 4222 + Math.floor(Math.random() * 20_000);
  const server = await startServer("127.0.0.1", port);
  const url = `nats://127.0.0.1:${port}`;
  await Promise.all([run([], "stage", url), sourceAndSink(url)]);
  server.stop();
}
