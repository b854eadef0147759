/**
 * `node dist/bench/servers-cpu.js`: CPU time per request of each HTTP
 * server under the same wrk load (utime + stime of the server's process
 * and its children, from /proc): what a request costs, whatever share of
 * a busy machine each system was given. Linux only. The diagnostic behind
 * the README's reading of `npm run bench:servers`.
 */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { launch, runTool } from "./lib/servers-common.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const TICKS = 100; // USER_HZ

function cpuSeconds(pid: number): number {
  const stat = (p: string): string[] => readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]!.split(" ");
  const tree = new Set([String(pid)]);
  for (const p of readdirSync("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (tree.has(stat(p)[1]!)) tree.add(p);
    } catch {
      // gone
    }
  }
  let total = 0;
  for (const p of tree) {
    try {
      const s = stat(p);
      total += (Number(s[11]) + Number(s[12])) / TICKS;
    } catch {
      // gone
    }
  }
  return total;
}

const systems: Array<[string, string, string[]]> = [
  ["offload: 1 protocol interpreter + 2 work interpreters", "dist/examples/http-server.js", ["--interpreters", "1", "--workers", "2", "--work-nice", "0"]],
  ["offload: 2 protocol interpreters, work inline", "dist/examples/http-server.js", ["--interpreters", "2", "--workers", "0"]],
  ["node:http, one thread", "dist/bench/lib/servers-node-http.js", []],
  ["node:http, cluster of 2", "dist/bench/lib/servers-node-http.js", ["--cluster", "2"]],
];
for (const path of ["/work?us=200", "/"]) {
  for (const [name, script, args] of systems) {
    const server = await launch(process.execPath, [ROOT + script, "--port", "0", ...args]);
    try {
      const pid = server.pid!;
      const before = cpuSeconds(pid);
      const { output } = await runTool("wrk", ["-t1", "-c50", "-d6s", server.url.replace(/\/$/, "") + path], 60_000);
      const used = cpuSeconds(pid) - before;
      const requests = Number(/(\d+) requests in/.exec(output)?.[1]);
      console.log(`${path.padEnd(13)} ${name.padEnd(54)} ${String(Math.round(requests / 6)).padStart(6)} req/s  ${(used / 6).toFixed(2)} cores  ${((used / requests) * 1e6).toFixed(1).padStart(6)} us CPU per request`);
    } finally {
      await server.stop();
    }
  }
}
