/**
 * `npx interpreters lab` options: parsed, checked, and filled with the
 * scenario's defaults. Every error names the option, says what it got and
 * what is allowed (LabOptionError; the CLI prints it and exits with 2).
 */
import { parseArgs } from "node:util";
import type { Arrival, Service } from "./distributions.js";

export const SCENARIOS = ["pipeline", "fan-in", "bursty", "recv-loop"] as const;
export type Scenario = (typeof SCENARIOS)[number];
export const OVERFLOWS = ["wait", "drop-newest", "drop-oldest", "error"] as const;
export type Overflow = (typeof OVERFLOWS)[number];

export interface LabOptions {
  scenario: Scenario;
  /** 0, positive integers, Infinity; in the order given. */
  capacities: number[];
  overflows: Overflow[];
  producers: number;
  consumers: number;
  arrival: Arrival;
  service: Service;
  /** Messages per run (each capacity and policy; recv-loop: external requests per run). */
  messages: number;
  /** Instead of `messages`: seconds per run. */
  seconds?: number;
  /** Bytes per message (at least 16: a timestamp and a sequence number travel in each). */
  size: number;
  seed: number;
  /** Directory for report.html, results.json, results.csv. */
  out?: string;
  json: boolean;
  /** recv-loop: seeded runs per capacity. */
  runs: number;
  /** recv-loop: probability that handling a message sends one to the other interpreter. */
  forward: number;
  /** Progress bar: auto (on a terminal), always, never. */
  progress: "auto" | "always" | "never";
}

export class LabOptionError extends Error {
  override name = "LabOptionError";
}

/** Each scenario's defaults: what it is about, with numbers that show it in seconds. */
export const SCENARIO_DEFAULTS: Record<Scenario, { describe: string; options: Partial<LabOptions> }> = {
  pipeline: {
    describe: "one producer, one consumer, one channel: the tandem line (wait) or M/M/1/K (drop-newest)",
    options: { producers: 1, consumers: 1, arrival: { kind: "exp", rate: 5000 }, service: { kind: "exp", us: 200 }, messages: 10_000, capacities: [0, 1, 4, 16, Infinity] },
  },
  "fan-in": {
    describe: "several producers into one consumer",
    options: { producers: 4, consumers: 1, arrival: { kind: "exp", rate: 1250 }, service: { kind: "exp", us: 200 }, messages: 10_000, capacities: [0, 1, 4, 16, Infinity] },
  },
  bursty: {
    describe: "a producer that sends in bursts: how much buffer absorbs them",
    options: { producers: 1, consumers: 1, arrival: { kind: "burst", size: 32, rate: 4000 }, service: { kind: "exp", us: 200 }, messages: 10_000, capacities: [0, 1, 4, 16, 64, Infinity] },
  },
  "recv-loop": {
    describe: "two interpreters in receive loops that sometimes send to each other (the PEP 554 thread): which capacities deadlock",
    options: { producers: 1, consumers: 2, arrival: { kind: "exp", rate: 2000 }, service: { kind: "exp", us: 100 }, messages: 2000, capacities: [0, 1, 16, Infinity] },
  },
};

export const USAGE = `Usage: npx interpreters lab [options]

Runs one scenario at each capacity (and overflow policy) given, in real
interpreters, and prints a table: throughput, latency p50/p99/p99.9 from
send to receive, mean and peak buffered, peak ring bytes and RSS, time
senders spent blocked, dropped messages, deadlocks (with the cycle), and
queueing theory's prediction beside the measurement where it has one.

Options:
  --scenario NAME        pipeline | fan-in | bursty | recv-loop   (default pipeline)
  --capacities LIST      e.g. 0,1,4,16,64,inf   (inf = Infinity)
  --overflow LIST        wait,drop-newest,drop-oldest,error       (default wait)
  --producers N          producers (recv-loop: ignored)
  --consumers N          consumers (recv-loop: ignored, always 2)
  --arrival SPEC         exp:RATE | const:RATE | burst:N@RATE     (messages/s per producer)
  --service SPEC         exp:US | const:US                        (mean µs per message)
  --messages N           messages per run                         (default: the scenario's)
  --seconds S            seconds per run instead of --messages
  --size BYTES           bytes per message, at least 16           (default 64)
  --seed N               seed for every random time               (default 1)
  --runs N               recv-loop: seeded runs per capacity      (default 10)
  --forward P            recv-loop: chance a handled message sends one to the peer (default 0.5)
  --out DIR              write DIR/report.html, DIR/results.json, DIR/results.csv
  --json                 print results as JSON on stdout, nothing else
  --progress / --no-progress   force the progress bar on or off (default: on a terminal)
  -h, --help             this text

Scenarios:
${SCENARIOS.map((s) => `  ${s.padEnd(10)} ${SCENARIO_DEFAULTS[s].describe}`).join("\n")}
`;

function positiveInteger(option: string, text: string, min = 1): number {
  const value = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min) {
    throw new LabOptionError(`--${option}: ${JSON.stringify(text)} is not an integer >= ${min}`);
  }
  return value;
}

function positiveNumber(option: string, text: string, what: string, whole = text): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value <= 0) throw new LabOptionError(`--${option}: ${JSON.stringify(whole)}: ${what} must be a number > 0`);
  return value;
}

/** "0,1,4,16,inf" → [0, 1, 4, 16, Infinity]. */
export function parseCapacities(text: string): number[] {
  const items = text.split(",").map((s) => s.trim());
  if (items.length === 0 || items.some((s) => s === "")) throw new LabOptionError(`--capacities: ${JSON.stringify(text)}: give a comma-separated list such as 0,1,4,16,inf`);
  return items.map((item) => {
    if (/^(inf|infinity)$/i.test(item)) return Infinity;
    if (!/^\d+$/.test(item) || !Number.isSafeInteger(Number(item))) {
      throw new LabOptionError(`--capacities: ${JSON.stringify(item)} is not a capacity; each is 0, a positive integer or inf (e.g. --capacities 0,1,4,16,inf)`);
    }
    return Number(item);
  });
}

export function parseOverflows(text: string): Overflow[] {
  return text.split(",").map((item) => {
    const name = item.trim() as Overflow;
    if (!OVERFLOWS.includes(name)) throw new LabOptionError(`--overflow: ${JSON.stringify(item)} is not a policy; use ${OVERFLOWS.join(", ")} (comma-separated for several)`);
    return name;
  });
}

export function parseArrival(text: string): Arrival {
  const burst = /^burst:(\d+)@(.+)$/.exec(text);
  if (burst) {
    if (!(Number(burst[1]) >= 1)) throw new LabOptionError(`--arrival: ${JSON.stringify(text)}: the burst size N must be an integer >= 1`);
    const size = positiveInteger("arrival", burst[1]!);
    return { kind: "burst", size, rate: positiveNumber("arrival", burst[2]!, "the rate (messages per second)", text) };
  }
  const simple = /^(exp|const):(.+)$/.exec(text);
  if (!simple) throw new LabOptionError(`--arrival: ${JSON.stringify(text)}: use exp:RATE, const:RATE or burst:N@RATE (RATE in messages per second per producer)`);
  return { kind: simple[1] as "exp" | "const", rate: positiveNumber("arrival", simple[2]!, "the rate (messages per second)", text) };
}

export function parseService(text: string): Service {
  const match = /^(exp|const):(.+)$/.exec(text);
  if (!match) throw new LabOptionError(`--service: ${JSON.stringify(text)}: use exp:US or const:US (the mean time per message, in microseconds)`);
  return { kind: match[1] as "exp" | "const", us: positiveNumber("service", match[2]!, "the time (microseconds)", text) };
}

/** Parses `argv` (the words after `lab`). Throws LabOptionError; returns "help" for -h/--help. */
export function parseLabOptions(argv: string[]): LabOptions | "help" {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        scenario: { type: "string" },
        capacities: { type: "string" },
        overflow: { type: "string" },
        producers: { type: "string" },
        consumers: { type: "string" },
        arrival: { type: "string" },
        service: { type: "string" },
        messages: { type: "string" },
        seconds: { type: "string" },
        size: { type: "string" },
        seed: { type: "string" },
        runs: { type: "string" },
        forward: { type: "string" },
        out: { type: "string" },
        json: { type: "boolean" },
        progress: { type: "boolean" },
        "no-progress": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    // parseArgs says e.g. "Unknown option '--capacity'": keep its words, add where to look.
    throw new LabOptionError(`${err instanceof Error ? err.message : String(err)}; see npx interpreters lab --help`);
  }
  const v = parsed.values;
  if (v.help) return "help";
  const scenario = (v.scenario ?? "pipeline") as Scenario;
  if (!SCENARIOS.includes(scenario)) throw new LabOptionError(`--scenario: ${JSON.stringify(v.scenario)} is not a scenario; use ${SCENARIOS.join(", ")}`);
  const defaults = SCENARIO_DEFAULTS[scenario].options;
  if (v.messages !== undefined && v.seconds !== undefined) throw new LabOptionError("--messages and --seconds: give one of them, not both");
  const options: LabOptions = {
    scenario,
    capacities: v.capacities !== undefined ? parseCapacities(v.capacities) : defaults.capacities!,
    overflows: v.overflow !== undefined ? parseOverflows(v.overflow) : ["wait"],
    producers: v.producers !== undefined ? positiveInteger("producers", v.producers) : defaults.producers!,
    consumers: v.consumers !== undefined ? positiveInteger("consumers", v.consumers) : defaults.consumers!,
    arrival: v.arrival !== undefined ? parseArrival(v.arrival) : defaults.arrival!,
    service: v.service !== undefined ? parseService(v.service) : defaults.service!,
    messages: v.messages !== undefined ? positiveInteger("messages", v.messages) : defaults.messages!,
    seconds: v.seconds !== undefined ? positiveNumber("seconds", v.seconds, "the duration (seconds)") : undefined,
    size: v.size !== undefined ? positiveInteger("size", v.size, 16) : 64,
    seed: v.seed !== undefined ? positiveInteger("seed", v.seed, 0) : 1,
    out: v.out,
    json: v.json ?? false,
    runs: v.runs !== undefined ? positiveInteger("runs", v.runs) : 10,
    forward: 0.5,
    progress: v.progress ? "always" : v["no-progress"] ? "never" : "auto",
  };
  if (v.forward !== undefined) {
    const forward = Number(v.forward);
    if (v.forward.trim() === "" || !(forward >= 0 && forward < 1)) throw new LabOptionError(`--forward: ${JSON.stringify(v.forward)}: a probability from 0 to below 1`);
    options.forward = forward;
  }
  if (options.producers > 64 || options.consumers > 64) throw new LabOptionError("--producers and --consumers: at most 64 each (every one is an interpreter)");
  if (options.size > 64 * 1024 * 1024) throw new LabOptionError("--size: at most 67108864 bytes (64 MiB)");
  if (options.scenario === "recv-loop" && options.overflows.some((o) => o !== "wait")) {
    throw new LabOptionError("--overflow: recv-loop is about blocking sends (which deadlock); it runs with wait only");
  }
  return options;
}
