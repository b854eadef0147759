/**
 * Process plumbing for bench/servers.ts: start a server that prints its
 * URL, run a load tool bounded in time, start Debian's redis-server on a
 * free loopback port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";

export interface Launched {
  url: string;
  port: number;
  /** The server's process id. */
  pid?: number;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

function stopper(child: ChildProcess): () => Promise<void> {
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  return async () => {
    child.kill("SIGTERM");
    const late = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(late);
    children.delete(child);
  };
}

/** Starts `command args` and waits (up to 60 s) for the URL it prints (http://... or redis://...). */
export function launch(command: string, args: string[]): Promise<Launched> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${args[0]} did not print its URL in 60 s: ${output}`));
    }, 60_000);
    const check = (): void => {
      const match = /^((?:http|redis):\/\/[^:/\s]+:(\d+)\/?)/m.exec(output);
      if (!match) return;
      clearTimeout(timer);
      resolve({ url: match[1]!, port: Number(match[2]), pid: child.pid, stop: stopper(child) });
    };
    child.stdout!.on("data", (d) => {
      output += d;
      check();
    });
    child.stderr!.on("data", (d) => (output += d));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited (${code}): ${output}`));
    });
  });
}

/** Runs a load tool; resolves with its exit code and output; kills it after `timeout` ms. */
export function runTool(command: string, args: string[], timeout: number): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} outlived ${timeout} ms`));
    }, timeout);
    child.on("exit", (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, output });
    });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(port));
    });
  });
}

/** Debian's redis-server on a free loopback port, no persistence. */
export async function startRedisServer(): Promise<Launched> {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  const stop = stopper(child);
  for (let waited = 0; !/Ready to accept connections/.test(output); waited += 20) {
    if (waited > 20_000 || child.exitCode !== null) throw new Error(`redis-server did not start: ${output}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { url: `redis://127.0.0.1:${port}`, port, pid: child.pid, stop };
}
