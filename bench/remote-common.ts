/** What bench/remote.ts and bench/remote-party.ts share. */

export interface BenchPartySpec {
  system: "ours" | "plain";
  role: "send" | "recv";
  url: string;
  name: string;
  n: number;
  /** 0: as fast as the system takes them; else one message every paceMs (latency runs). */
  paceMs: number;
}

/** The prefix of the one line each party prints. */
export const BENCH_PREFIX = "REMOTE_BENCH ";
export const PAYLOAD_BYTES = 128;
/** Publishes in flight for the plain sender (ours keeps 128 too, for an unbounded channel). */
export const PLAIN_WINDOW = 128;
