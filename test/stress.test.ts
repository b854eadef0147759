/**
 * Seeded stress tests across interpreters.
 *
 * 1. Many-to-many: per round, one channel (random capacity and ring size,
 *    bufferBytes = maxBufferBytes so big messages must stream), 4 sender and
 *    4 receiver interpreters (test/fixtures/stress-worker.ts), messages from
 *    0 bytes to 4x the ring as objects, bare byte arrays and strings, sent
 *    with sendSync / await send / trySend and received with recvSync /
 *    await recv / tryRecv / iteration. Every message must be received exactly
 *    once, whole and byte-exact, each receiver seeing every sender's messages
 *    in the order sent, and the channel's stats must agree.
 * 2. Closing the only receive handle while senders are sending: exactly-once.
 * 3. Capacity 0 with 1 ms timeouts on both sides: timed-out sends are
 *    withdrawn, everything else arrives once and in order.
 *
 * The seed comes from $SEED (else a fresh one); every failure message starts
 * with `seed=<n>`. Replay: `SEED=<n> node --import tsx test/run.ts stress`.
 *
 * Long mode: STRESS_MESSAGES=<total> (e.g. 10000000) scales test 1 up (more
 * rounds, more messages per sender, mostly small messages) and prints a
 * progress line per round. test/run.ts kills a file after FILE_TIMEOUT_MS
 * (8 min by default), so raise that too, e.g.
 * `STRESS_MESSAGES=10000000 FILE_TIMEOUT_MS=3600000 node --import tsx test/run.ts stress`.
 */
import { suite, assert, rng, seedFromEnv, withTimeout } from "./_harness.js";
import { ChannelClosedError, create, createChannel, ExecutionFailed, type Interpreter } from "../src/index.js";
import type { Slowest, Profile, ReceiverMode, ReceiverOptions, ReceiverResult, SenderOptions, SenderResult } from "./fixtures/stress-worker.js";

const test = suite("stress");
const worker = new URL("./fixtures/stress-worker.ts", import.meta.url);
const SEED = seedFromEnv();
const CAPACITIES = [0, 1, 2, 7, 64, Infinity];
const RINGS = [4096, 8192, 16384, 32768, 65536];
/** Bound on every wait inside interpreters: a bug becomes a TimeoutError, not a hang. */
const WAIT = 60_000;
/**
 * A single send or receive that waited this long while the others kept
 * going is a lost wakeup, even if it then completed (an operation that can
 * complete at its deadline completes, so a lost wakeup need not end in a
 * TimeoutError). Rounds take seconds; this is far above any scheduling noise.
 */
const STALL_MS = 30_000;

const LONG_TOTAL = parseTotal(process.env.STRESS_MESSAGES);
const LONG = LONG_TOTAL !== undefined;
const TOTAL = LONG_TOTAL ?? 20_000;
const ROUNDS = LONG ? Math.max(4, Math.ceil(TOTAL / 1_000_000)) : 4;
/** Default 240 s; long mode assumes at least ~5,000 msgs/s on a slow machine, plus interpreter start-up per round. */
const STRESS_TIMEOUT = LONG ? 240_000 + Math.ceil(TOTAL / 5) + ROUNDS * 20_000 : 240_000;

function parseTotal(text: string | undefined): number | undefined {
  if (text === undefined || text === "") return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`STRESS_MESSAGES must be a positive integer, not ${JSON.stringify(text)}`);
  return n;
}

if (LONG) {
  const fileTimeout = Number(process.env.FILE_TIMEOUT_MS ?? 8 * 60_000);
  console.log(`[stress] long mode: ${TOTAL} messages in ${ROUNDS} rounds, seed=${SEED}, deadline ${(STRESS_TIMEOUT / 1000).toFixed(0)} s`);
  if (fileTimeout < STRESS_TIMEOUT) {
    console.log(`[stress] note: FILE_TIMEOUT_MS=${fileTimeout} may kill this file first; set FILE_TIMEOUT_MS=${STRESS_TIMEOUT + 120_000} or more`);
  }
}

/** Runs `body`; any failure is rethrown with `seed=<n>` in its message (and the remote stack of an ExecutionFailed). */
async function seeded(title: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    const remote = e instanceof ExecutionFailed ? `\n  remote stack: ${e.remote.stack}` : "";
    const message = `${e.message.includes(`seed=${SEED}`) ? "" : `seed=${SEED}: `}${e.message}${remote}`;
    console.error(`[stress] "${title}" FAILED with seed=${SEED}; replay with SEED=${SEED} node --import tsx test/run.ts stress`);
    const wrapped = new Error(message, { cause: err });
    wrapped.stack = `Error: ${message}\n${(e.stack ?? "").split("\n").slice(1).join("\n")}`;
    throw wrapped;
  }
}

/** Fails (an uvu Assertion) with the seed in the message unless `condition` holds. */
function check(condition: unknown, message: string): void {
  if (!condition) assert.unreachable(`seed=${SEED}: ${message}`);
}

/** Awaits `promise`, failing (with the seed) if it is not settled by `deadline` (a Date.now() value). */
function by<T>(deadline: number, promise: Promise<T>, what: string): Promise<T> {
  return withTimeout(promise, Math.max(1, deadline - Date.now()), `${what} (seed=${SEED})`);
}

/** Awaits every promise; if any rejects, throws the first rejection, after all have settled. */
async function allOrFirstError<T>(promises: Array<Promise<T>>): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const failures = settled.filter((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failures.length > 0) {
    const first = failures[0]!.reason as Error;
    if (failures.length > 1) first.message += ` (and ${failures.length - 1} more failure(s): ${failures.slice(1).map((f) => String((f.reason as Error)?.message ?? f.reason).slice(0, 300)).join(" | ")})`;
    throw first;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
}

/** Creates `n` interpreters; if any fails, the others are terminated. */
async function createMany(n: number, prefix: string, deadline: number): Promise<Interpreter[]> {
  const settled = await Promise.allSettled(Array.from({ length: n }, (_, i) => by(deadline, create({ name: `${prefix}${i}` }), `create ${prefix}${i}`)));
  const made = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  if (made.length < n) {
    await Promise.all(made.map((i) => i.terminate().catch(() => {})));
    throw (settled.find((s) => s.status === "rejected") as PromiseRejectedResult).reason;
  }
  return made;
}

/**
 * Ends every interpreter: gracefully (`close`) after a good round, where a
 * close that does not finish in 30 s is itself a failure; by `terminate`
 * after a failed one, since an interpreter may still be blocked.
 */
async function shutdown(interps: Interpreter[], graceful: boolean): Promise<void> {
  const stuck: string[] = [];
  await Promise.all(
    interps.map(async (interp) => {
      if (graceful) {
        try {
          await withTimeout(interp.close(), 30_000, `close ${interp.name}`);
          return;
        } catch {
          stuck.push(interp.name);
        }
      }
      await interp.terminate().catch(() => {});
    }),
  );
  if (stuck.length > 0) throw new Error(`seed=${SEED}: close() of ${stuck.join(", ")} did not finish in 30 s (terminated)`);
}

/** Runs `fn`, ignoring what it throws (closing a handle that may already be closed or moved). */
function quietly(fn: () => void): void {
  try {
    fn();
  } catch {
    // already closed or moved: nothing to release here
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------
// 1. 4 senders x 4 receivers, random capacities, messages 0 B .. 4x the ring
// ---------------------------------------------------------------------------

/** Splits `total` into `parts` random shares; sometimes one share is 0 (a sender that sends nothing). */
function split(total: number, parts: number, r: () => number): number[] {
  const weights = Array.from({ length: parts }, () => 0.5 + r());
  if (r() < 0.15) weights[Math.floor(r() * parts)] = 0;
  const sum = weights.reduce((a, b) => a + b, 0);
  const shares = weights.map((w) => Math.floor((total * w) / sum));
  const rest = total - shares.reduce((a, b) => a + b, 0);
  shares[weights.findIndex((w) => w > 0)]! += rest;
  return shares;
}

interface RoundReport {
  label: string;
  createMs: number;
  slowest: Slowest;
  messages: number;
  bytes: number;
  big: number;
  ms: number;
  senders: SenderResult[];
  receivers: ReceiverResult[];
}

async function stressRound(round: number, r: () => number, deadline: number): Promise<RoundReport> {
  const capacity = CAPACITIES[Math.floor(r() * CAPACITIES.length)]!;
  const ring = RINGS[Math.floor(r() * RINGS.length)]!;
  const perRound = Math.floor(TOTAL / ROUNDS) + (round < TOTAL % ROUNDS ? 1 : 0);
  const counts = split(perRound, 4, r);
  // long mode: mostly small messages and blocking calls, so that 10M messages take minutes, not hours
  const profile: Profile = LONG
    ? { ring, pZero: 0.02, pMedium: 0.001, pBig: 0.0003, sendWeights: [6, 3, 1], recvWeights: [5, 4, 1] }
    : { ring, pZero: 0.05, pMedium: 0.05, pBig: 0.03, sendWeights: [4, 3, 3], recvWeights: [35, 35, 30] };
  const senderSeeds = counts.map(() => (r() * 2 ** 32) >>> 0);
  const modes: ReceiverMode[] = counts.map(() => {
    const u = r();
    return u < 0.7 ? "mixed" : u < 0.85 ? "iterate-sync" : "iterate-async";
  });
  const receiverSeeds = counts.map(() => (r() * 2 ** 32) >>> 0);
  const label = `round ${round + 1}/${ROUNDS} (capacity ${capacity}, ring ${ring}, counts ${counts.join("/")}, receivers ${modes.join("/")})`;

  const createStarted = Date.now();
  const interps = await createMany(8, `stress-r${round}-`, deadline);
  const createMs = Date.now() - createStarted;
  const [rx, tx] = createChannel<unknown>({ capacity, bufferBytes: ring, maxBufferBytes: ring, name: `stress-${round}` });
  let ok = false;
  try {
    const started = Date.now();
    // Iterating receivers wait without a timeout: the round as a whole has a deadline too.
    const roundDeadline = Math.min(deadline, started + WAIT + 30_000 + Math.ceil(perRound / 2));
    const running = new Set<string>();
    const track = <T>(what: string, promise: Promise<T>): Promise<T> => {
      running.add(what);
      return promise.finally(() => running.delete(what));
    };
    const receiving = interps.slice(4).map((interp, i) => {
      const options: ReceiverOptions = { index: i, seed: receiverSeeds[i]!, mode: modes[i]!, senderSeeds, profile, timeout: WAIT, label };
      return track(`receiver ${i} (${modes[i]})`, interp.call<ReceiverResult>(worker, "receiver", rx.clone(), options));
    });
    const sending = interps.slice(0, 4).map((interp, s) => {
      const options: SenderOptions = { index: s, seed: senderSeeds[s]!, count: counts[s]!, profile, timeout: WAIT, label };
      return track(`sender ${s}`, interp.call<SenderResult>(worker, "sender", tx.clone(), options));
    });
    tx.close();
    let senders: SenderResult[];
    let receivers: ReceiverResult[];
    try {
      [senders, receivers] = await by(roundDeadline, Promise.all([allOrFirstError(sending), allOrFirstError(receiving)]), `${label}: senders and receivers`);
    } catch (err) {
      const e = err as Error;
      e.message += `\n  ${label}; still running: ${[...running].join(", ") || "none"}; channel stats at failure: ${JSON.stringify(rx.stats())}`;
      throw e;
    }
    const ms = Date.now() - started;

    // every (s, q) exactly once across receivers; per receiver, each sender's q strictly increasing
    for (let s = 0; s < 4; s++) {
      check(senders[s]!.sent === counts[s], `${label}: sender ${s} reports ${senders[s]!.sent} sent, expected ${counts[s]}`);
      const seen = new Uint8Array(counts[s]!);
      for (const got of receivers) {
        const qs = got.qs[s]!;
        for (let k = 0; k < qs.length; k++) {
          const q = qs[k]!;
          check(k === 0 || q > qs[k - 1]!, `${label}: receiver ${got.index} got sender ${s}'s q=${q} after q=${qs[k - 1]}`);
          check(q < counts[s]!, `${label}: receiver ${got.index} got sender ${s}'s q=${q}, which was never sent (count ${counts[s]})`);
          check(seen[q] === 0, `${label}: sender ${s}'s q=${q} received twice (again by receiver ${got.index})`);
          seen[q] = 1;
        }
      }
      const missing: number[] = [];
      for (let q = 0; q < counts[s]! && missing.length < 10; q++) if (!seen[q]) missing.push(q);
      check(missing.length === 0, `${label}: sender ${s}'s messages never received: q=${missing.join(", ")}${missing.length === 10 ? ", ..." : ""}`);
    }
    const slowest = [...senders, ...receivers].map((x) => x.slowest).reduce((a, b) => (b.ms > a.ms ? b : a));
    check(slowest.ms < STALL_MS, `${label}: lost wakeup? ${slowest.what} waited ${(slowest.ms / 1000).toFixed(1)} s (the wait timeout is ${WAIT / 1000} s)`);
    const received = receivers.reduce((n, x) => n + x.count, 0);
    check(received === perRound, `${label}: receivers got ${received} messages, ${perRound} were sent`);
    const stats = rx.stats();
    check(stats.sent === perRound, `${label}: stats().sent is ${stats.sent}, expected ${perRound} (${JSON.stringify(stats)})`);
    check(stats.received === perRound, `${label}: stats().received is ${stats.received}, expected ${perRound} (${JSON.stringify(stats)})`);
    check(stats.length === 0 && stats.senders === 0 && stats.receivers === 1 && stats.closed, `${label}: stats after the round: ${JSON.stringify(stats)}`);
    ok = true;
    return {
      label: `capacity ${capacity}, ring ${ring}`,
      createMs,
      slowest,
      messages: received,
      bytes: receivers.reduce((n, x) => n + x.bytes, 0),
      big: receivers.reduce((n, x) => n + x.big, 0),
      ms,
      senders,
      receivers,
    };
  } finally {
    quietly(() => rx.close());
    quietly(() => tx.close());
    await shutdown(interps, ok);
  }
}

test(
  `4 senders x 4 receivers, random capacities, 0 B to 4x ring messages: exactly once, per-sender order (${TOTAL} messages)`,
  () =>
    seeded("stress", async () => {
      const deadline = Date.now() + STRESS_TIMEOUT - 15_000;
      const r = rng(SEED);
      const began = Date.now();
      let total = 0;
      const usage = { sendSync: 0, send: 0, trySend: 0, trySendFalse: 0, trySendTooLarge: 0, trySendGaveUp: 0, recvSync: 0, recv: 0, tryRecv: 0, tryRecvEmpty: 0, iterated: 0 };
      for (let round = 0; round < ROUNDS; round++) {
        const report = await stressRound(round, r, deadline);
        total += report.messages;
        for (const s of report.senders) for (const k of ["sendSync", "send", "trySend", "trySendFalse", "trySendTooLarge", "trySendGaveUp"] as const) usage[k] += s[k];
        for (const x of report.receivers) for (const k of ["recvSync", "recv", "tryRecv", "tryRecvEmpty", "iterated"] as const) usage[k] += x[k];
        const elapsed = (Date.now() - began) / 1000;
        console.log(
          `[stress] seed=${SEED} round ${round + 1}/${ROUNDS} (${report.label}): ${report.messages} msgs (${report.big} > ring, ${(report.bytes / 2 ** 20).toFixed(1)} MiB of bodies) ` +
            `in ${(report.ms / 1000).toFixed(2)} s = ${Math.round(report.messages / (report.ms / 1000))} msgs/s (8 interpreters started in ${(report.createMs / 1000).toFixed(1)} s); ` +
            `total ${total} msgs in ${elapsed.toFixed(1)} s = ${Math.round(total / elapsed)} msgs/s overall; longest wait ${Math.round(report.slowest.ms)} ms`,
        );
      }
      console.log(`[stress] seed=${SEED} operations: ${JSON.stringify(usage)}; ${TOTAL} messages in ${((Date.now() - began) / 1000).toFixed(1)} s`);
      check(total === TOTAL, `received ${total} messages in all, expected ${TOTAL}`);
    }),
  { timeout: STRESS_TIMEOUT },
);

// ---------------------------------------------------------------------------
// 2. Closing the only recv handle while senders send: exactly-once
// ---------------------------------------------------------------------------

const CLOSE_RACE_SENDER = `
import { ChannelClosedError } from "interpreters";
// mulberry32
let a = seed >>> 0;
const r = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
let ok = 0;
let error;
const began = Date.now();
try {
  for (let i = 0; ; i++) {
    if (Date.now() - began > wait) throw new Error("sender " + s + ": the channel was never closed (" + ok + " sends OK)");
    const u = r();
    const n = u < 0.85 ? Math.floor(r() * 100) : u < 0.95 ? 1 + Math.floor(r() * ring) : ring + Math.floor(r() * 2 * ring);
    const pad = new Uint8Array(n);
    for (let k = 0; k < n; k++) pad[k] = (s * 7 + i + k) & 255;
    tx.sendSync({ s, i, n, pad }, { timeout: wait });
    ok = i + 1; // sends are sequential: the OK ones are exactly 0 .. ok-1
  }
} catch (e) {
  error = e;
} finally {
  tx.close();
}
results.sendSync({ s, ok, closedError: error instanceof ChannelClosedError, error: String(error?.stack ?? error) }, { timeout: wait });
results.close();
`;

interface CloseRaceResult {
  s: number;
  ok: number;
  closedError: boolean;
  error: string;
}

test(
  "close racing with sends is exactly-once",
  () =>
    seeded("close race", async () => {
      const deadline = Date.now() + 120_000 - 10_000;
      const r = rng((SEED ^ 0x2545f491) >>> 0);
      const nSenders = 3;
      const began = Date.now();
      const interps = await createMany(nSenders, "close-race-", deadline);
      let ok = false;
      let taken = 0;
      let okSends = 0;
      try {
        for (let round = 0; round < 10; round++) {
          const capacity = CAPACITIES[Math.floor(r() * CAPACITIES.length)]!;
          const ring = r() < 0.5 ? 4096 : 16384;
          const take = r() < 0.15 ? Math.floor(r() * 3) : Math.floor(r() * 2000);
          const label = `close race round ${round} (capacity ${capacity}, ring ${ring}, main takes ${take})`;
          const [rx, tx] = createChannel<{ s: number; i: number; n: number; pad: Uint8Array }>({ capacity, bufferBytes: ring, maxBufferBytes: ring, name: `close-race-${round}` });
          const [resultsRx, resultsTx] = createChannel<CloseRaceResult>({ capacity: Infinity, name: `close-race-results-${round}` });
          try {
            // allOrFirstError handles every rejection at once: a failure while main is still receiving is not "unhandled"
            const running = allOrFirstError(
              interps.map((interp, s) =>
                interp.exec(CLOSE_RACE_SENDER, { bind: { tx: tx.clone(), results: resultsTx.clone(), s, seed: (r() * 2 ** 32) >>> 0, ring, wait: WAIT } }),
              ),
            );
            running.catch(() => {});
            tx.close();
            resultsTx.close();
            const got: number[][] = Array.from({ length: nSenders }, () => []);
            for (let k = 0; k < take; k++) {
              const m = await by(deadline, rx.recv({ timeout: WAIT }), `${label}: recv ${k}`);
              const where = `${label}: message ${k} (s=${m.s}, i=${m.i}, ${m.n} bytes)`;
              check(m.pad instanceof Uint8Array && m.pad.length === m.n, `${where}: pad is ${m.pad?.length} bytes`);
              for (let j = 0; j < m.n; j++) if (m.pad[j] !== ((m.s * 7 + m.i + j) & 255)) check(false, `${where}: pad byte ${j} is ${m.pad[j]}`);
              // one sender, one receiver: each sender's messages arrive as 0, 1, 2, ...
              check(m.i === got[m.s]!.length, `${where}: expected i=${got[m.s]!.length} from sender ${m.s}`);
              got[m.s]!.push(m.i);
            }
            if (r() < 0.5) await sleep(r() * 3);
            rx.close();
            await by(deadline, running, `${label}: senders end after the close`);
            const results: CloseRaceResult[] = [];
            for (let k = 0; k < nSenders; k++) results.push(await by(deadline, resultsRx.recv({ timeout: WAIT }), `${label}: result ${k}`));
            await assert.rejects(resultsRx.recv({ timeout: WAIT }), ChannelClosedError);
            results.sort((x, y) => x.s - y.s);
            let totalOk = 0;
            for (const res of results) {
              check(res.closedError, `${label}: sender ${res.s} ended with ${res.error}, not ChannelClosedError`);
              check(got[res.s]!.length <= res.ok, `${label}: main received ${got[res.s]!.length} messages from sender ${res.s}, which reports only ${res.ok} OK sends`);
              if (capacity === 0) {
                // rendezvous: a send is OK only once main has taken it
                check(got[res.s]!.length === res.ok, `${label}: capacity 0, sender ${res.s} reports ${res.ok} OK sends, main received ${got[res.s]!.length}`);
              }
              totalOk += res.ok;
            }
            const unreceived = totalOk - take;
            if (capacity !== Infinity) check(unreceived <= capacity, `${label}: ${unreceived} OK sends never received, more than the capacity`);
            taken += take;
            okSends += totalOk;
          } finally {
            quietly(() => rx.close());
            quietly(() => resultsRx.close());
          }
        }
        console.log(`[stress] seed=${SEED} close race: 10 rounds, main received ${taken} of ${okSends} OK sends, in ${((Date.now() - began) / 1000).toFixed(1)} s`);
        ok = true;
      } finally {
        await shutdown(interps, ok);
      }
    }),
  { timeout: 120_000 },
);

// ---------------------------------------------------------------------------
// 3. Capacity 0 with 1 ms timeouts racing on both sides
// ---------------------------------------------------------------------------

const TIMEOUT_RACE_SENDER = `
import { TimeoutError } from "interpreters";
let a = seed >>> 0;
const r = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
const okList = [];
let timeouts = 0;
const began = Date.now();
try {
  for (let i = 0; i < count; i++) {
    for (let attempt = 0; ; attempt++) {
      if (Date.now() - began > wait) throw new Error("sender stuck at i=" + i + " attempt " + attempt + " after " + timeouts + " timeouts");
      if (r() < 0.2) spin(r() * 1.5);
      try {
        tx.sendSync([i, attempt], { timeout: 1 });
        okList.push(i, attempt);
        break;
      } catch (e) {
        if (!(e instanceof TimeoutError)) throw e;
        timeouts++;
      }
    }
  }
} finally {
  tx.close();
}
results.sendSync({ who: "sender", list: okList, timeouts }, { timeout: wait });
results.close();
`;

const TIMEOUT_RACE_RECEIVER = `
import { ChannelClosedError, TimeoutError } from "interpreters";
let a = seed >>> 0;
const r = () => { a = (a + 0x6d2b79f5) >>> 0; let t = a; t = Math.imul(t ^ (t >>> 15), t | 1); t ^= t + Math.imul(t ^ (t >>> 7), t | 61); return ((t ^ (t >>> 14)) >>> 0) / 4294967296; };
const spin = (ms) => { const end = performance.now() + ms; while (performance.now() < end); };
const got = [];
let timeouts = 0;
const began = Date.now();
try {
  for (;;) {
    if (Date.now() - began > wait) throw new Error("receiver never saw the close, after " + got.length / 2 + " messages");
    if (r() < 0.2) spin(r() * 1.5);
    try {
      const [i, attempt] = rx.recvSync({ timeout: 1 });
      got.push(i, attempt);
    } catch (e) {
      if (e instanceof ChannelClosedError) break;
      if (!(e instanceof TimeoutError)) throw e;
      timeouts++;
    }
  }
} finally {
  rx.close();
}
results.sendSync({ who: "receiver", list: got, timeouts }, { timeout: wait });
results.close();
`;

test(
  "capacity 0, 1 ms timeouts racing on both sides: timed-out sends are withdrawn, the rest arrive once, in order",
  () =>
    seeded("timeout race", async () => {
      const deadline = Date.now() + 120_000 - 10_000;
      const began = Date.now();
      const r = rng((SEED ^ 0x68e31da4) >>> 0);
      const count = 2000;
      const interps = await createMany(2, "timeout-race-", deadline);
      let ok = false;
      const [rx, tx] = createChannel<[number, number]>({ capacity: 0, name: "timeout-race" });
      const [resultsRx, resultsTx] = createChannel<{ who: string; list: number[]; timeouts: number }>({ capacity: Infinity, name: "timeout-race-results" });
      try {
        const running = allOrFirstError([
          interps[0]!.exec(TIMEOUT_RACE_SENDER, { bind: { tx, results: resultsTx.clone(), count, seed: (r() * 2 ** 32) >>> 0, wait: WAIT } }),
          interps[1]!.exec(TIMEOUT_RACE_RECEIVER, { bind: { rx, results: resultsTx.clone(), seed: (r() * 2 ** 32) >>> 0, wait: WAIT } }),
        ]);
        resultsTx.close();
        await by(deadline, running, "sender and receiver");
        const results = [await by(deadline, resultsRx.recv({ timeout: WAIT }), "result 1"), await by(deadline, resultsRx.recv({ timeout: WAIT }), "result 2")];
        const sent = results.find((x) => x.who === "sender")!;
        const received = results.find((x) => x.who === "receiver")!;
        check(sent && received, `results: ${JSON.stringify(results).slice(0, 200)}`);
        for (let k = 0; k < count; k++) check(sent.list[2 * k] === k, `the sender's OK list has i=${sent.list[2 * k]} at position ${k}`);
        check(sent.list.length === 2 * count, `the sender reports ${sent.list.length / 2} OK sends, expected ${count}`);
        // (i, attempt) pairs: a withdrawn attempt showing up would differ in its attempt number
        for (let k = 0; k < Math.max(sent.list.length, received.list.length) / 2; k++) {
          const want = `(${sent.list[2 * k]}, attempt ${sent.list[2 * k + 1]})`;
          const gotPair = `(${received.list[2 * k]}, attempt ${received.list[2 * k + 1]})`;
          check(want === gotPair, `message ${k}: the sender's OK send was ${want}, the receiver got ${gotPair}`);
        }
        console.log(`[stress] seed=${SEED} timeout race: ${count} messages; ${sent.timeouts} send timeouts, ${received.timeouts} recv timeouts, in ${((Date.now() - began) / 1000).toFixed(1)} s`);
        ok = true;
      } finally {
        quietly(() => rx.close());
        quietly(() => tx.close());
        quietly(() => resultsRx.close());
        await shutdown(interps, ok);
      }
    }),
  { timeout: 120_000 },
);

/**
 * A receiver sharing a request channel with others: takes each message
 * (recvSync, no timeout: a lost wake-up must show as a stall, not be
 * papered over by polling), acknowledges it, and now and then works for up
 * to ~400 µs so that it is sometimes spinning for the next message
 * (probing, unregistered) and sometimes registered and asleep. With a
 * quota, it leaves after that many messages, so the others must carry on
 * without it. (The rule that lets a sender skip waking sleepers is pinned
 * down exactly by "a message a probing receiver will take..." in
 * channel.test.ts; this test is the hunt for the wake-ups it could lose.)
 */
test(
  "fan-in: sync senders, some with timeouts and retries, into a 1-3 slot channel: every message once, in each sender's order, nobody left asleep",
  () =>
    seeded("fan-in senders", async () => {
      // A message taken wakes one sleeping sender per free slot (WAKE_FOR_ROOM):
      // a sender left asleep with a slot free stalls its whole sequence, and
      // this receiver waits at most STALL_MS for the next message.
      const deadline = Date.now() + 120_000 - 10_000;
      const began = Date.now();
      const r = rng((SEED ^ 0x6a09e667) >>> 0);
      const senders = 4;
      const perSender = 2500;
      const interps = await createMany(senders, "fan-in-", deadline);
      let ok = false;
      const capacity = 1 + Math.floor(r() * 3);
      const [rx, tx] = createChannel<[number, number]>({ capacity, name: "fan-in" });
      const retries = new SharedArrayBuffer(4 * senders);
      try {
        const running = allOrFirstError(
          interps.map((interp, me) =>
            // Senders 0 and 1 use short timeouts and retry (withdrawals); 2 and 3 wait for as long as it takes.
            interp.exec(FAN_IN_SENDER, { bind: { tx: tx.clone(), me, count: perSender, patient: me >= 2, seed: (r() * 2 ** 32) >>> 0, retries } }),
          ),
        );
        running.catch(() => {});
        tx.close();
        const next = new Array<number>(senders).fill(0);
        for (let n = 0; n < senders * perSender; n++) {
          const [who, i] = await by(deadline, rx.recv({ timeout: STALL_MS }), `message ${n} of the fan-in (capacity ${capacity})`);
          check(i === next[who], `sender ${who} sent ${i} after ${next[who]! - 1}`);
          next[who]!++;
          const work = r();
          if (work < 0.2) await new Promise((resolve) => setImmediate(resolve));
          else if (work < 0.4) {
            const until = performance.now() + r() * 0.05;
            while (performance.now() < until);
          }
        }
        await by(deadline, running, "the senders to finish");
        check((await rx.recv({ timeout: STALL_MS }).catch((e: Error) => e.name)) === "ChannelClosedError", "the channel closes after the last message");
        console.log(`[stress] seed=${SEED} fan-in: ${senders} x ${perSender} messages through capacity ${capacity}, ${[...new Int32Array(retries)].join("/")} timed-out sends retried, in ${((Date.now() - began) / 1000).toFixed(1)} s`);
        ok = true;
      } finally {
        quietly(() => rx.close());
        await shutdown(interps, ok);
      }
    }),
  { timeout: 120_000 },
);

const FAN_IN_SENDER = `
let s = seed >>> 0;
const rand = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
let retried = 0;
for (let i = 0; i < count; i++) {
  for (;;) {
    try {
      tx.sendSync([me, i], patient ? undefined : { timeout: rand() < 0.5 ? 0 : rand() * 0.2 });
      break;
    } catch (e) {
      if (e.name !== "TimeoutError") throw e;
      retried++;
    }
  }
}
tx.close();
Atomics.add(new Int32Array(retries), me, retried);
`;

const PROBER_RECEIVER = `
let s = seed >>> 0;
const rand = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 4294967296; };
const busy = (us) => { const until = performance.now() + us / 1000; while (performance.now() < until); };
let taken = 0;
for (const m of rx) {
  acks.sendSync([m, me], { timeout: wait });
  if (++taken === quota) break;
  if (rand() < 0.4) busy(rand() * 400);
}
acks.close();
`;

test(
  "receivers spinning for a message and receivers asleep share a channel: every message is taken, none waits for a wake-up that never comes",
  () =>
    seeded("probers and sleepers", async () => {
      const deadline = Date.now() + 120_000 - 10_000;
      const began = Date.now();
      const r = rng((SEED ^ 0x2c1b3c6d) >>> 0);
      const receivers = 3;
      const bursts = 1500;
      const interps = await createMany(receivers, "prober-", deadline);
      let ok = false;
      const [rx, tx] = createChannel<number>({ name: "probed-requests" });
      const [acks, acksTx] = createChannel<[number, number]>({ name: "probed-acks" });
      try {
        const running = allOrFirstError(
          interps.map((interp, me) =>
            // Two of them leave part-way (quota 500-1000 of ~3,700 messages); the last stays to the end.
            interp.exec(PROBER_RECEIVER, {
              bind: { rx: rx.clone(), acks: acksTx.clone(), me, quota: me < receivers - 1 ? 500 + Math.floor(r() * 500) : 0, seed: (r() * 2 ** 32) >>> 0, wait: WAIT },
            }),
          ),
        );
        running.catch(() => {});
        rx.close();
        acksTx.close();
        const seen = new Uint8Array(bursts * 4);
        const perReceiver = new Array<number>(receivers).fill(0);
        let next = 0;
        for (let b = 0; b < bursts; b++) {
          // 1-4 messages at once (more than the probers can take: the sleepers must be woken), then
          // a gap of no time, one event-loop turn, or up to ~400 µs of main's own work.
          const size = 1 + Math.floor(r() * 4);
          for (let k = 0; k < size; k++) {
            if (r() < 0.5) check(tx.trySend(next), `trySend of message ${next} on an unbounded channel returned false`);
            else await tx.send(next);
            next++;
          }
          for (let k = 0; k < size; k++) {
            // STALL_MS: far beyond any scheduling delay; a message left for a sleeper nobody woke stays forever.
            const [m, who] = await by(deadline, acks.recv({ timeout: STALL_MS }), `the ack of burst ${b}`);
            check(seen[m] === 0, `message ${m} taken twice`);
            seen[m] = 1;
            perReceiver[who]!++;
          }
          const gap = r();
          if (gap < 0.3) await new Promise((resolve) => setImmediate(resolve));
          else if (gap < 0.6) {
            const until = performance.now() + r() * 0.4;
            while (performance.now() < until);
          }
        }
        for (let m = 0; m < next; m++) check(seen[m] === 1, `message ${m} never acknowledged`);
        tx.close();
        await by(deadline, running, "the receivers to finish");
        console.log(`[stress] seed=${SEED} probers and sleepers: ${next} messages in ${bursts} bursts, taken by receivers ${perReceiver.join("/")}, in ${((Date.now() - began) / 1000).toFixed(1)} s`);
        ok = true;
      } finally {
        quietly(() => tx.close());
        quietly(() => acks.close());
        await shutdown(interps, ok);
      }
    }),
  { timeout: 120_000 },
);

test.run();
