/**
 * Builds a Snapshot (types.ts) from shared memory, in the supervisor (the
 * only thread that knows every channel; workers/supervisor.ts calls
 * `collectSnapshot` when a thread's `inspect()` asks).
 *
 * It never takes a channel lock, never writes shared memory and never
 * waits: every word is read with Atomics.load while the owners of the
 * channels go on. So a snapshot is not one instant: two words of one
 * channel may be read a few nanoseconds apart. What that allows is
 * tolerated by the order of the reads (the counters a message count is
 * made of are read consumer side first, so it is never below the truth at
 * the first read) and by the deadlock rules (a blocking wait counts only
 * once it has stood still for STABLE_WAIT_MS). A channel whose memory
 * fails a check is listed with `corrupt` saying what failed; one channel
 * can never break the snapshot of the others.
 *
 * The supervisor keeps a little history between snapshots (the Tracker):
 * when it first saw each asynchronous wait (those publish no start time),
 * when a blocking wait was last woken, and interpreters that exited
 * recently (shown as "exited" for a few seconds).
 */
import {
  ChannelMemory,
  CLOSED_NO_RECEIVERS,
  CLOSED_NO_SENDERS,
  control,
  deadlockMode,
  detectionMillis,
  H,
  HEADER_BYTES,
  MAX_PARTIES,
  MAX_PUBLISHED_CASES,
  OVERFLOW_NAMES,
  P_ASYNC_SINCE,
  P_ASYNC_WAITS,
  P_PARK,
  P_WAIT_CHANNEL,
  P_WAIT_FLAGS,
  P_WAIT_OP,
  P_WAIT_SINCE,
  PartyState,
  selectWord,
  slotId,
  slotName,
  slotRunning,
  slotState,
  slotWord,
  SUPERVISOR_SLOT,
  TRANSIT,
  WAIT_HAS_TIMEOUT,
  WaitOp,
} from "../internals.js";
import type { ChannelSnapshot, InterpreterSnapshot, Snapshot, WaitOpName, WaitSnapshot } from "./types.js";
import { analyseWaits, type ChannelModel, type PartyModel, STABLE_WAIT_MS, type WaitModel } from "./waitgraph.js";

const CHANNEL_MAGIC = 0x43484e32;
/** How long an interpreter that is gone stays in the snapshot as "exited". */
export const EXITED_SHOWN_MS = 5000;
/** A message count or handle count beyond this is not a torn read but corrupt memory. */
const IMPLAUSIBLE = 2 ** 28;

/** Parked (registered) operations of one party on one channel side, from the channel's own tables. */
interface Parked {
  channel: number;
  side: "send" | "recv";
  count: number;
}

/** What the supervisor remembers between snapshots. */
class Tracker {
  /** First sighting of each async wait: key slot:id:side:channel. */
  asyncSeen = new Map<string, number>();
  /** Each blocking wait's start and park word, and when the park word last moved (it was woken). */
  syncSeen = new Map<number, { id: number; since: number; park: number; stillSince: number }>();
  /** Interpreters seen live, and when they were last seen. */
  known = new Map<number, { name: string; lastSeen: number }>();
}
const tracker = new Tracker();

/**
 * Milliseconds since a start published as Date.now() mod 2^31 (0 for a
 * start a moment after `now`: the wait began while the snapshot was taken).
 */
function msSince(published: number, now: number): number {
  let elapsed = (now % 2 ** 31) - published;
  if (elapsed < -(2 ** 30)) elapsed += 2 ** 31; // the clock wrapped mod 2^31 in between
  else if (elapsed > 2 ** 30) elapsed -= 2 ** 31;
  return Math.max(0, elapsed);
}

/** Reads one channel; never throws (a failed check gives a `corrupt` entry). */
function readChannel(memory: ChannelMemory, idOfSlot: (slot: number) => number, parked: Map<number, Parked[]>): { snapshot: ChannelSnapshot; model: ChannelModel } {
  const header = memory.header;
  const load = (field: number): number => Atomics.load(header, field);
  const snapshot: ChannelSnapshot = {
    id: memory.id,
    name: memory.name,
    capacity: 0,
    overflow: "wait",
    length: 0,
    bytes: 0,
    maxBufferBytes: 0,
    ringBytes: 0,
    sent: 0,
    received: 0,
    dropped: 0,
    closed: false,
    senders: [],
    receivers: [],
    waitingSenders: [],
    waitingReceivers: [],
  };
  const model: ChannelModel = {
    id: memory.id,
    name: memory.name,
    capacity: 0,
    length: 0,
    closedNoSenders: false,
    closedNoReceivers: false,
    streamReceiver: false,
    sendHolders: [],
    recvHolders: [],
    transitSenders: 0,
    transitReceivers: 0,
    corrupt: false,
  };
  const corrupt = (what: string): { snapshot: ChannelSnapshot; model: ChannelModel } => {
    snapshot.corrupt = what;
    model.corrupt = true;
    return { snapshot, model };
  };
  try {
    if (load(H.MAGIC) !== CHANNEL_MAGIC) return corrupt("bad magic word: this is not a channel's memory any more");
    if (load(H.ID) !== memory.id) return corrupt(`its id word says ${load(H.ID)}`);
    const capacity = load(H.CAPACITY);
    if (capacity < -1) return corrupt(`capacity ${capacity} out of range`);
    snapshot.capacity = capacity < 0 ? Infinity : capacity;
    model.capacity = capacity;
    // Consumer side first: the count is then never below the truth at the first read.
    const removed = load(H.REMOVED);
    const withdrawn = load(H.WITHDRAWN);
    const admitted = load(H.SEQ_TAIL);
    const length = (admitted - removed - withdrawn) | 0;
    if (length < 0 || length > IMPLAUSIBLE) return corrupt(`buffered message count ${length} out of range`);
    const read = load(H.READ);
    const written = load(H.WRITTEN);
    const used = (written - read) | 0;
    const dataSize = load(H.DATA_SIZE);
    const maxData = load(H.MAX_DATA_SIZE);
    if (dataSize <= 0 || dataSize > Math.max(maxData, memory.buffer.byteLength - HEADER_BYTES)) return corrupt(`ring size ${dataSize} out of range (budget ${maxData})`);
    if (used < 0 || used > dataSize) return corrupt(`${used} bytes in use in a ring of ${dataSize}`);
    if (maxData <= 0) return corrupt(`byte budget ${maxData} out of range`);
    snapshot.length = model.length = length;
    snapshot.bytes = used;
    snapshot.ringBytes = dataSize;
    snapshot.maxBufferBytes = maxData;
    snapshot.sent = memory.sent;
    snapshot.received = memory.received;
    snapshot.dropped = memory.dropped;
    const overflow = load(H.OVERFLOW);
    if (overflow < 0 || overflow >= OVERFLOW_NAMES.length) return corrupt(`overflow policy ${overflow} out of range`);
    snapshot.overflow = OVERFLOW_NAMES[overflow]!;
    const closed = load(H.CLOSED);
    model.closedNoSenders = (closed & CLOSED_NO_SENDERS) !== 0;
    model.closedNoReceivers = (closed & CLOSED_NO_RECEIVERS) !== 0;
    const drained = length === 0 && load(H.STREAM_SENDER) === 0;
    snapshot.closed = model.closedNoReceivers || (model.closedNoSenders && drained);
    model.streamReceiver = load(H.STREAM_RECEIVER) !== 0;

    for (const side of ["send", "recv"] as const) {
      const total = load(side === "send" ? H.SEND_HANDLES : H.RECV_HANDLES);
      if (total < 0 || total > IMPLAUSIBLE) return corrupt(`${total} open ${side} handles`);
      const transit = memory.holders(side, TRANSIT);
      if (transit < 0) return corrupt(`${transit} ${side} ends in transit`);
      const holders: number[] = [];
      // Stop once every handle is accounted for: most channels have one or two holders.
      let found = transit;
      for (let slot = 0; slot < MAX_PARTIES && found < total; slot++) {
        const held = memory.holders(side, slot);
        if (held < 0) return corrupt(`party ${slot} holds ${held} ${side} handles`);
        if (held > 0) {
          found += held;
          const id = idOfSlot(slot);
          if (id >= 0 && !holders.includes(id)) holders.push(id);
        }
      }
      if (side === "send") {
        snapshot.senders = model.sendHolders = holders;
        model.transitSenders = transit;
      } else {
        snapshot.receivers = model.recvHolders = holders;
        model.transitReceivers = transit;
      }
    }
    if (model.transitSenders > 0 || model.transitReceivers > 0) snapshot.inTransit = { senders: model.transitSenders, receivers: model.transitReceivers };

    for (const side of ["send", "recv"] as const) {
      const slots: number[] = [];
      memory.collectWaiters(side, slots);
      const ids: number[] = [];
      for (const slot of slots) {
        const count = memory.waits(side, slot);
        if (count <= 0) continue; // the bitmap lags the count by a moment
        const id = idOfSlot(slot);
        if (id < 0) continue;
        if (!ids.includes(id)) ids.push(id);
        const list = parked.get(slot) ?? [];
        list.push({ channel: memory.id, side, count });
        parked.set(slot, list);
      }
      if (side === "send") snapshot.waitingSenders = ids;
      else snapshot.waitingReceivers = ids;
    }
    return { snapshot, model };
  } catch (err) {
    return corrupt(err instanceof Error ? err.message : String(err));
  }
}

const OP_NAMES: Record<number, WaitOpName | undefined> = { [WaitOp.SEND]: "send", [WaitOp.RECV]: "recv", [WaitOp.SELECT]: "select", [WaitOp.ACQUIRE]: "acquire" };

/** Party `slot`'s published blocking wait, or undefined (none, or it changed while being read). */
function readSyncWait(slot: number, now: number): (WaitModel & { startedAt: number }) | undefined {
  const op = Atomics.load(control, slotWord(slot, P_WAIT_OP));
  const name = OP_NAMES[op];
  if (!name) return undefined;
  const target = Atomics.load(control, slotWord(slot, P_WAIT_CHANNEL));
  const flags = Atomics.load(control, slotWord(slot, P_WAIT_FLAGS));
  const started = Atomics.load(control, slotWord(slot, P_WAIT_SINCE));
  const cases: Array<{ op: "send" | "recv"; channel: number }> = [];
  if (op === WaitOp.SELECT) {
    const base = selectWord(slot);
    const count = Atomics.load(control, base);
    for (let i = 0; i < count && i < MAX_PUBLISHED_CASES; i++) {
      const caseOp = Atomics.load(control, base + 2 + 2 * i);
      cases.push({ op: caseOp === WaitOp.SEND ? "send" : "recv", channel: Atomics.load(control, base + 1 + 2 * i) });
    }
  } else if (op !== WaitOp.ACQUIRE) {
    cases.push({ op: name as "send" | "recv", channel: target });
  }
  // Published channel, flags and start first, the op last: a changed op means a new wait began meanwhile.
  if (Atomics.load(control, slotWord(slot, P_WAIT_OP)) !== op) return undefined;
  return {
    op: name,
    cases,
    ...(op === WaitOp.ACQUIRE ? { lock: target } : {}),
    async: false,
    timeout: (flags & WAIT_HAS_TIMEOUT) !== 0,
    sinceMs: msSince(started, now),
    stable: false,
    startedAt: started,
  };
}

function toWaitSnapshot(wait: WaitModel): WaitSnapshot {
  const channel = wait.cases[0]?.channel;
  return {
    op: wait.op,
    ...(channel !== undefined ? { channel } : {}),
    ...(wait.lock !== undefined ? { lock: wait.lock } : {}),
    sinceMs: Math.round(wait.sinceMs),
    async: wait.async,
    ...(wait.timeout ? { timeout: true } : {}),
    ...(wait.op === "select" ? { cases: wait.cases } : {}),
  };
}

/**
 * A snapshot of the process: every party in the control block and every
 * channel in `channels`. `lockOwner(id)` gives a Lock's owner slot (-1
 * free), undefined for an unknown id. `pipelines` is left empty: the
 * calling thread adds its own (inspect.ts).
 */
export function collectSnapshot(channels: Iterable<ChannelMemory>, lockOwner: (id: number) => number | undefined): Snapshot {
  try {
    return collect(channels, lockOwner);
  } catch (err) {
    // Never expected (every channel is read under its own try); a snapshot saying why beats an exception in the supervisor.
    return { ...emptySnapshot(), error: `the snapshot could not be taken: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** A snapshot with nothing in it. */
export function emptySnapshot(): Snapshot {
  return { at: Date.now(), interpreters: [], channels: [], waitFor: [], deadlocks: [], possibleDeadlocks: [], pipelines: [] };
}

function collect(channels: Iterable<ChannelMemory>, lockOwner: (id: number) => number | undefined): Snapshot {
  const now = Date.now();
  // Parties first, so holders and waiters can be named by interpreter id.
  const slotIds = new Map<number, number>();
  const liveParties: Array<{ slot: number; id: number; name: string; state: number }> = [];
  for (let slot = 0; slot < SUPERVISOR_SLOT; slot++) {
    const state = slotState(slot);
    if (state === PartyState.FREE) continue;
    const id = slotId(slot);
    slotIds.set(slot, id);
    liveParties.push({ slot, id, name: slotName(slot), state });
  }
  const idOfSlot = (slot: number): number => slotIds.get(slot) ?? -1;

  const parked = new Map<number, Parked[]>();
  const channelSnapshots: ChannelSnapshot[] = [];
  const models = new Map<number, ChannelModel>();
  for (const memory of channels) {
    // A dead channel (nothing holds an end any more) is gone for its users (the supervisor forgets it soon).
    if (Atomics.load(memory.header, H.MAGIC) === CHANNEL_MAGIC && memory.isDead()) continue;
    const { snapshot, model } = readChannel(memory, idOfSlot, parked);
    channelSnapshots.push(snapshot);
    models.set(model.id, model);
  }
  channelSnapshots.sort((a, b) => a.id - b.id);

  const interpreters: InterpreterSnapshot[] = [];
  const parties: PartyModel[] = [];
  const lockOwners = new Map<number, number>();
  const asyncSeenNow = new Set<string>();
  const syncSeenNow = new Set<number>();
  for (const { slot, id, name, state } of liveParties) {
    tracker.known.set(id, { name, lastSeen: now });
    if (state === PartyState.EXITED) {
      interpreters.push({ id, name, state: "exited" });
      continue;
    }
    const waits: WaitModel[] = [];
    const sync = readSyncWait(slot, now);
    if (sync) {
      syncSeenNow.add(slot);
      // Stable once its park word has not moved (nobody woke it) for STABLE_WAIT_MS.
      const park = Atomics.load(control, slotWord(slot, P_PARK));
      const seen = tracker.syncSeen.get(slot);
      let stillSince = now - sync.sinceMs;
      if (seen && seen.id === id && seen.since === sync.startedAt) {
        stillSince = seen.park === park ? seen.stillSince : now;
      }
      tracker.syncSeen.set(slot, { id, since: sync.startedAt, park, stillSince });
      sync.stable = now - stillSince >= STABLE_WAIT_MS;
      const { startedAt: _startedAt, ...wait } = sync;
      waits.push(wait);
      if (sync.lock !== undefined) {
        const owner = lockOwner(sync.lock);
        if (owner !== undefined) lockOwners.set(sync.lock, owner >= 0 ? idOfSlot(owner) : -1);
      }
    }
    // Registrations not explained by the blocking wait belong to pending async operations.
    const hasAsync = Atomics.load(control, slotWord(slot, P_ASYNC_WAITS)) > 0;
    // The thread's pending async operations began no later than this: an async wait is at most this old.
    const asyncAge = hasAsync ? msSince(Atomics.load(control, slotWord(slot, P_ASYNC_SINCE)), now) : 0;
    for (const entry of parked.get(slot) ?? []) {
      let count = entry.count;
      if (sync?.cases.some((c) => c.channel === entry.channel && c.op === entry.side)) count--;
      if (count <= 0 || !hasAsync) continue;
      const key = `${slot}:${id}:${entry.side}:${entry.channel}`;
      asyncSeenNow.add(key);
      // First seen (by an earlier snapshot) at most as long ago as the thread's async waits began.
      const first = Math.max(tracker.asyncSeen.get(key) ?? now - asyncAge, now - asyncAge);
      tracker.asyncSeen.set(key, first);
      waits.push({ op: entry.side, cases: [{ op: entry.side, channel: entry.channel }], async: true, timeout: false, sinceMs: now - first, stable: true });
    }
    const running = slotRunning(slot) > 0;
    const stateName: InterpreterSnapshot["state"] = waits.length > 0 ? "waiting" : running || id === 0 ? "running" : "idle";
    interpreters.push({ id, name, state: stateName, ...(waits.length > 0 ? { waiting: waits.map(toWaitSnapshot) } : {}) });
    parties.push({ id, name, waits });
  }
  for (const key of tracker.asyncSeen.keys()) if (!asyncSeenNow.has(key)) tracker.asyncSeen.delete(key);
  for (const slot of tracker.syncSeen.keys()) if (!syncSeenNow.has(slot)) tracker.syncSeen.delete(slot);
  // Interpreters gone since an earlier snapshot: "exited", for a while.
  const present = new Set(interpreters.map((i) => i.id));
  for (const [id, { name, lastSeen }] of tracker.known) {
    if (present.has(id)) continue;
    if (now - lastSeen > EXITED_SHOWN_MS) tracker.known.delete(id);
    else interpreters.push({ id, name, state: "exited" });
  }
  interpreters.sort((a, b) => a.id - b.id);

  const graph = analyseWaits(parties, models, lockOwners);
  return {
    at: now,
    interpreters,
    channels: channelSnapshots,
    waitFor: graph.waitFor,
    deadlocks: graph.deadlocks,
    possibleDeadlocks: graph.possibleDeadlocks,
    pipelines: [],
    detection: { mode: deadlockMode(), afterMs: detectionMillis() },
  };
}
