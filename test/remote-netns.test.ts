/**
 * Two hosts on one machine: network namespaces joined by a veth pair,
 * nats-server and a sender process on one, a receiver process on the
 * other, the link cut for 1.5 s mid-run (test/fixtures/remote-netns-hosts.ts
 * does it, inside `unshare -m -n` so that nothing touches the host's
 * network or /run). Every message sent is received once, in order.
 *
 * Needs root (network namespaces), unshare (util-linux), ip (iproute2) and
 * nats-server; without them the test is skipped, saying which is missing.
 */
import { spawn, spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert } from "./_harness.js";
import { natsMissing } from "../bench/remote-nats.js";
import { describe, type Verdict } from "./fixtures/remote-check.js";

const test = suite("remote-netns");

function missingForNetns(): string | undefined {
  const nats = natsMissing();
  if (nats) return nats;
  if (process.getuid?.() !== 0) return "needs root to create network namespaces (run as root, as CI does)";
  for (const tool of ["unshare", "ip"]) {
    if (spawnSync(tool, ["--version"]).error) return `needs ${tool} (${tool === "ip" ? "iproute2" : "util-linux"})`;
  }
  const probe = spawnSync("unshare", ["-m", "-n", "--", "true"]);
  if (probe.status !== 0) return `unshare -m -n is not permitted here (${probe.stderr.toString().trim()})`;
  return undefined;
}

const missing = missingForNetns();
const hosts = fileURLToPath(new URL("./fixtures/remote-netns-hosts.ts", import.meta.url));

interface HostsResult {
  verdict: Verdict;
  codes: number[];
  receiverStats: { recv: { redelivered: number; duplicatesSuppressed: number } };
}

function runHosts(options: { count: number; capacity: number }): Promise<HostsResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("unshare", ["-m", "-n", "--", process.execPath, "--import", "tsx", hosts, JSON.stringify(options)], {
      stdio: ["ignore", "pipe", "pipe"],
      cwd: fileURLToPath(new URL("..", import.meta.url)),
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.stderr.on("data", (d: Buffer) => (err += d));
    child.once("exit", (code) => {
      const line = out.trim().split("\n").pop() ?? "";
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`the two-hosts run failed (exit ${code}):\n${out}\n${err}`));
      }
    });
  });
}

if (missing) {
  test(`a sender and a receiver on two hosts (network namespaces), the link cut mid-run [SKIPPED: ${missing}]`, () => {});
} else {
  test(
    "a sender and a receiver on two hosts (network namespaces joined by a veth pair), the link cut for 1.5 s mid-run: every message once, in order but for redeliveries",
    async () => {
      const { verdict, codes, receiverStats } = await runHosts({ count: 300, capacity: 7 });
      const { redelivered, duplicatesSuppressed } = receiverStats.recv;
      console.log(`    two hosts: ${describe(verdict)}; redelivered ${redelivered}, duplicates suppressed ${duplicatesSuppressed}`);
      assert.is(verdict.lost.length, 0, describe(verdict));
      assert.is(verdict.unexpected.length, 0, describe(verdict));
      assert.is(verdict.duplicates, 0, describe(verdict));
      // A message the broker sent into the cut link can come back after its successors (redelivered).
      assert.ok(verdict.orderViolations <= redelivered, `${describe(verdict)}, but only ${redelivered} redelivered`);
      assert.equal(codes, [0, 0], "both processes exited on their own");
    },
    { timeout: 120_000 },
  );
}

test.run();
