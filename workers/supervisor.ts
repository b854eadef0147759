/**
 * The supervisor: a hidden worker that never runs user code and never
 * blocks, so that it can always
 * - answer fetches: the buffer behind a channel id or shared-object id
 *   (see src/supervisor-link.ts and src/registry.ts);
 * - notice that an interpreter died (its port to us closes, whatever the
 *   cause: exit, uncaught error, terminate(), resource limits) and release
 *   every channel end it held, waking whoever waits on those channels,
 *   and every Lock it owned (src/sync.ts), waking its waiters; only then
 *   is the interpreter's party slot freed for reuse.
 */
import { MessagePort, workerData } from "node:worker_threads";
import { releaseParty, seqAfter, tryLockedAfterDeath, wakeWaiters } from "../src/channel-ops.js";
import { type ClaimRecord, PartyState, takeClaims, setSlotState, slotId, slotState, SUPERVISOR_SLOT, WORKER_DATA_KEY } from "../src/control.js";
import { ChannelMemory, H } from "../src/ring.js";
import { DeadlockDetector, detectionMillis, setVerdictFlag } from "../src/deadlock.js";
import { answerFetch, answerSnapshot, type SupervisorMessage, type SupervisorRequest } from "../src/supervisor-link.js";
import { anyoneBlocked, clearWaitOf, wakeParty } from "../src/waiting.js";
import { carriedEnds, releaseTransitEnd } from "../src/transfer.js";
import { channelFromBuffer } from "../src/registry.js";
import { lockStateOf, releasePrimitivesOfDeadParty } from "../src/sync.js";
import { CorruptDataError } from "../src/errors.js";
import { collectSnapshot } from "../src/inspect/collect.js";

const channels = new Map<number, ChannelMemory>();
/** Each live party's port, for verdicts. */
const partyPorts = new Map<number, MessagePort>();
/** Deposited shared objects by id: SharedArrayBuffers, and the memory of every Lock, Semaphore and Event (deposited at creation). */
const objects = new Map<number, SharedArrayBuffer>();
/** Fetches for ids not registered yet: their registration is on its way (posted before the message was sent). */
const awaiting = new Map<string, Array<{ port: MessagePort; slot: number }>>();
let registrationsSinceSweep = 0;

function listen(port: MessagePort, slot: number, id: number): void {
  partyPorts.set(slot, port);
  port.on("message", (request: SupervisorRequest) => handle(request, port));
  port.on("close", () => partyGone(slot, id));
}

function handle(request: SupervisorRequest, port: MessagePort): void {
  switch (request.type) {
    case "channel": {
      const memory = channelFromBuffer(request.buffer);
      channels.set(request.id, memory);
      serveAwaiting(`channel:${request.id}`, request.buffer);
      if (++registrationsSinceSweep >= 256) sweepClosedChannels();
      return;
    }
    case "object":
      objects.set(request.id, request.buffer);
      serveAwaiting(`object:${request.id}`, request.buffer);
      return;
    case "fetch": {
      const buffer = request.kind === "channel" ? channels.get(request.id)?.buffer : objects.get(request.id);
      if (buffer) answerFetch(port, request.slot, buffer);
      else {
        const key = `${request.kind}:${request.id}`;
        const list = awaiting.get(key) ?? [];
        list.push({ port, slot: request.slot });
        awaiting.set(key, list);
      }
      return;
    }
    case "attach":
      listen(request.port, request.slot, request.id);
      return;
    case "exited":
      partyGone(request.slot, request.id);
      return;
    case "snapshot":
      answerSnapshot(port, request.slot, request.seq, snapshotForInspect());
      return;
  }
}

/** inspect() (src/inspect/): every party and channel, read without taking any lock; never throws. */
function snapshotForInspect(): unknown {
  return collectSnapshot(channels.values(), (id) => lockStateOf(objects.get(id), id)?.owner);
}

function serveAwaiting(key: string, buffer: SharedArrayBuffer): void {
  const list = awaiting.get(key);
  if (!list) return;
  awaiting.delete(key);
  for (const { port, slot } of list) answerFetch(port, slot, buffer);
}

/**
 * Releases everything party `slot` (interpreter `id`) held, then frees its
 * slot. Idempotent. A channel whose lock a live party holds right now is
 * retried a moment later: the supervisor never sleeps on a lock.
 */
function partyGone(slot: number, id: number): void {
  const state = slotState(slot);
  if (state !== PartyState.LIVE && state !== PartyState.STARTING) return; // FREE, or already being released
  if (slotId(slot) !== id) return;
  setSlotState(slot, PartyState.EXITED);
  partyPorts.delete(slot);
  clearWaitOf(slot);
  releaseChannels(slot, [...channels.values()], 0);
}

function releaseChannels(slot: number, pending: ChannelMemory[], attempt: number): void {
  const busy = pending.filter((memory) => !releaseOnChannel(memory, slot));
  if (busy.length > 0) {
    setTimeout(() => releaseChannels(slot, busy, attempt + 1), Math.min(20, 1 + attempt));
    return;
  }
  if (!releaseUnclaimedEnds(slot)) {
    setTimeout(() => releaseChannels(slot, [], attempt + 1), Math.min(20, 1 + attempt));
    return;
  }
  // Its Locks; Semaphore permits it held are not returned (they are not owned: see src/sync.ts).
  releasePrimitivesOfDeadParty(objects, slot);
  setSlotState(slot, PartyState.FREE);
  sweepClosedChannels();
}

/**
 * Ends carried by a message the dead party took but had not claimed yet
 * (control.ts, claims): released if the message was really taken (after
 * rollbacks, its seq is behind the carrier's SEQ_HEAD). False: retry later.
 */
const unclaimed = new Map<number, ClaimRecord>();
function releaseUnclaimedEnds(slot: number): boolean {
  const record = unclaimed.get(slot) ?? takeClaims(slot);
  if (!record) return true;
  const carrier = channels.get(record.carrierId);
  if (!carrier || !seqAfter(carrier.get(H.SEQ_HEAD), record.seq)) {
    unclaimed.delete(slot);
    return true; // rolled back: the ends are in the carrier's ring again
  }
  while (record.ends.length > 0) {
    const { id, kind } = record.ends[0]!;
    const memory = channels.get(id);
    if (memory) {
      const released = onChannel(memory, { value: { wake: 0, discarded: [] } }, () => tryLockedAfterDeath(memory, slot, () => releaseTransitEnd(kind, memory)));
      if (!released) {
        unclaimed.set(slot, record);
        return false;
      }
      wakeWaiters(memory, released.value.wake);
      releaseCarriedEndsLater(released.value.discarded);
    }
    record.ends.shift();
  }
  unclaimed.delete(slot);
  return true;
}

/**
 * Runs `cleanup` on one channel. A channel whose shared memory is corrupt
 * (CorruptDataError) is reported once and given up on, and `ifCorrupt` is
 * returned: its users get the error themselves on their next call, and the
 * supervisor goes on with every other channel. Failing instead would end
 * death cleanup and deadlock detection for the whole process.
 */
const reportedCorrupt = new Set<number>();
function onChannel<T>(memory: ChannelMemory, ifCorrupt: T, cleanup: () => T): T {
  try {
    return cleanup();
  } catch (err) {
    if (!(err instanceof CorruptDataError)) throw err;
    if (!reportedCorrupt.has(memory.id)) {
      reportedCorrupt.add(memory.id);
      process.emitWarning(`interpreters: the supervisor cannot clean up ${memory.describe()}: ${err.message}`);
    }
    return ifCorrupt;
  }
}

/** Releases what `slot` held on one channel; false if the lock is busy (retry later). */
function releaseOnChannel(memory: ChannelMemory, slot: number): boolean {
  const released = onChannel(memory, { value: { wake: 0, discarded: [] } }, () => tryLockedAfterDeath(memory, slot, () => releaseParty(memory, slot)));
  if (!released) return false;
  wakeWaiters(memory, released.value.wake);
  releaseCarriedEndsLater(released.value.discarded);
  return true;
}

/**
 * Channel ends carried by messages a cleanup discarded, each counted under
 * TRANSIT on its own channel, still to be released there. Released like
 * everything else here, without ever sleeping on a lock: a live party may
 * hold that channel's send lock while it waits for a receive lock that
 * only this supervisor can recover (after some other death), so a
 * blocking lock here could wait forever.
 */
const transitToRelease: Array<{ id: number; kind: number }> = [];
let transitRetry: NodeJS.Timeout | undefined;

function releaseCarriedEndsLater(payloads: Uint8Array[]): void {
  for (const payload of payloads) transitToRelease.push(...carriedEnds(payload));
  releaseTransit(0);
}

function releaseTransit(attempt: number): void {
  transitRetry = undefined;
  for (let i = 0; i < transitToRelease.length; ) {
    const { id, kind } = transitToRelease[i]!;
    const memory = channels.get(id);
    if (!memory) {
      transitToRelease.splice(i, 1); // no such channel here any more
      continue;
    }
    const released = onChannel(memory, { value: { wake: 0, discarded: [] } }, () => tryLockedAfterDeath(memory, -1, () => releaseTransitEnd(kind, memory)));
    if (!released) {
      i++; // busy: retried below
      continue;
    }
    transitToRelease.splice(i, 1);
    wakeWaiters(memory, released.value.wake);
    for (const payload of released.value.discarded) transitToRelease.push(...carriedEnds(payload));
  }
  if (transitToRelease.length > 0 && !transitRetry) transitRetry = setTimeout(() => releaseTransit(attempt + 1), Math.min(20, 1 + attempt));
}

/** Forgets channels no handle of which is left anywhere. */
function sweepClosedChannels(): void {
  registrationsSinceSweep = 0;
  for (const [id, memory] of channels) {
    if (memory.get(H.SEND_HANDLES) === 0 && memory.get(H.RECV_HANDLES) === 0) channels.delete(id);
  }
}

const detector = new DeadlockDetector(
  (id) => channels.get(id),
  (slots, verdict) => {
    // Every verdict is posted and flagged before anyone is woken (see DeadlockDetector).
    const delivered = slots.filter((slot) => {
      const port = partyPorts.get(slot);
      if (!port) return false;
      port.postMessage({ kind: "verdict", ...verdict } satisfies SupervisorMessage);
      setVerdictFlag(slot, 1);
      return true;
    });
    for (const slot of delivered) wakeParty(slot);
  },
  (id) => lockStateOf(objects.get(id), id),
);
// Level-triggered: a deadlock that forms while nothing else happens is still
// found. A look every quarter of the detection time keeps it well within
// `after`; when no party is blocked without a timeout, a look is one load.
function scanLater(): void {
  setTimeout(() => {
    if (anyoneBlocked()) {
      try {
        detector.scan(performance.now());
      } catch (err) {
        // A corrupt channel or party word: its users see the error themselves; keep scanning the rest next time.
        if (!(err instanceof CorruptDataError)) throw err;
      }
    }
    scanLater();
  }, Math.min(250, Math.max(10, detectionMillis() / 4)));
}
scanLater();

setSlotState(SUPERVISOR_SLOT, PartyState.LIVE);
const mainPort = (workerData as Record<string, unknown>)[`${WORKER_DATA_KEY}MainPort`] as MessagePort;
listen(mainPort, 0, 0);
