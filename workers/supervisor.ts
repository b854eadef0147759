/**
 * The supervisor: a hidden worker that never runs user code and never
 * blocks, so that it can always
 * - answer fetches: the buffer behind a channel id or shared-object id
 *   (see src/supervisor-link.ts and src/registry.ts), as soon as it has
 *   handled every registration posted before the fetch: with the buffer,
 *   or with null for an id that can never be resolved (fail fast);
 * - hold every channel's memory for as long as the channel lives anywhere
 *   (a handle, an end in a message or in flight), and forget it once it is
 *   dead (ChannelMemory.isDead), so that its memory can be freed;
 * - notice that an interpreter died (its port to us closes, whatever the
 *   cause: exit, uncaught error, terminate(), resource limits) and release
 *   every channel end it held, waking whoever waits on those channels,
 *   and every Lock it owned (src/sync.ts), waking its waiters; only then
 *   is the interpreter's party slot freed for reuse.
 */
import { MessagePort, workerData } from "node:worker_threads";
import { releaseParty, seqAfter, tryLockedAfterDeath, wakeWaiters } from "../src/channel-ops.js";
import { type ClaimRecord, MAX_ID, MAX_PARTIES, PartyState, takeClaims, setSlotState, slotId, slotState, SUPERVISOR_SLOT, WORKER_DATA_KEY } from "../src/control.js";
import { ChannelMemory, H, installDataBuffers } from "../src/ring.js";
import { ChannelTable } from "../src/channel-table.js";
import { DeadlockDetector, detectionMillis, setVerdictFlag } from "../src/deadlock.js";
import { answerFetch, registrationsPosted, type SupervisorMessage, type SupervisorRequest } from "../src/supervisor-link.js";
import { anyoneBlocked, clearWaitOf, wakeParty } from "../src/waiting.js";
import { carriedEnds, releaseTransitEnd } from "../src/transfer.js";
import { lockStateOf, releasePrimitivesOfDeadParty } from "../src/sync.js";
import { CorruptDataError } from "../src/errors.js";

/** Every channel that may be alive, by id (dead ones are dropped soon: see channel-table.ts). */
const channels = new ChannelTable();
/** Each live party's port, for verdicts. */
const partyPorts = new Map<number, MessagePort>();
/** Deposited shared objects by id: SharedArrayBuffers, and the memory of every Lock, Semaphore and Event (deposited at creation). */
const objects = new Map<number, SharedArrayBuffer>();
/** Registrations handled from each party slot since it was last freed (compared with its posted count, wrapping). */
const handled = new Int32Array(MAX_PARTIES);

/**
 * A fetch for an id not registered yet. Its registration may still be on
 * its way: posted by a creator on another port before the end or object
 * was sent, so the fetch may overtake it. `behind` holds, for each party
 * that had posted registrations not yet handled when the fetch arrived,
 * the count to reach; once every one is reached (or the party is gone)
 * and the id is still unknown, it never will be: the answer is null.
 */
interface PendingFetch {
  port: MessagePort;
  slot: number;
  behind: Map<number, number>;
}
const awaiting = new Map<string, PendingFetch[]>();

/**
 * The supervisor cannot wait for a fetch (it is what answers them): a data
 * generation it has not been told of yet (the registration is on its way
 * from the thread that grew the ring) makes the cleanup that needs it
 * throw this before changing anything; it is retried a moment later.
 */
class DataPending extends Error {}
installDataBuffers({
  publish() {
    throw new Error("internal error: the supervisor never grows a channel");
  },
  resolve() {
    throw new DataPending();
  },
});
/** Data generations registered before their channel (the two come from different threads), by channel id. */
const dataAhead = new Map<number, { nonce: number; gen: number; buffer: SharedArrayBuffer }>();

function listen(port: MessagePort, slot: number, id: number): void {
  partyPorts.set(slot, port);
  port.on("message", (request: SupervisorRequest) => handle(request, port, slot));
  port.on("close", () => partyGone(slot, id));
}

function handle(request: SupervisorRequest, port: MessagePort, from: number): void {
  switch (request.type) {
    case "channel": {
      const memory = new ChannelMemory(request.buffer);
      const ahead = dataAhead.get(request.id);
      if (ahead) {
        dataAhead.delete(request.id);
        if (ahead.nonce === memory.nonce) memory.offerData(ahead.gen, ahead.buffer); // else: of an earlier channel with this id
      }
      channels.set(memory);
      registrationHandled(from, `channel:${request.id}`, request.buffer);
      return;
    }
    case "data": {
      const memory = channels.getEvenIfDead(request.id);
      if (memory?.nonce === request.nonce) memory.offerData(request.gen, request.buffer);
      else if (!memory) dataAhead.set(request.id, { nonce: request.nonce, gen: request.gen, buffer: request.buffer });
      registrationHandled(from, `data:${request.id}:${request.gen}`, request.buffer);
      return;
    }
    case "object":
      objects.set(request.id, request.buffer);
      registrationHandled(from, `object:${request.id}`, request.buffer);
      return;
    case "fetch": {
      const buffer =
        request.kind === "channel" ? channels.get(request.id)?.buffer
        : request.kind === "data" ? channels.get(request.id)?.knownData(request.gen ?? -1)
        : objects.get(request.id);
      if (buffer) {
        answerFetch(port, request.slot, buffer);
        return;
      }
      const behind = partiesBehind();
      if (behind.size === 0) {
        answerFetch(port, request.slot, null); // nothing is on its way: this id can never be resolved
        return;
      }
      const key = request.kind === "data" ? `data:${request.id}:${request.gen}` : `${request.kind}:${request.id}`;
      const list = awaiting.get(key) ?? [];
      list.push({ port, slot: request.slot, behind });
      awaiting.set(key, list);
      return;
    }
    case "ids":
      answerFetch(port, request.slot, null, freeChannelIds(request.count));
      return;
    case "attach":
      listen(request.port, request.slot, request.id);
      return;
    case "exited":
      partyGone(request.slot, request.id);
      return;
  }
}

/**
 * Reusable channel ids (the fresh ones are used up): from a cursor that
 * goes round the id space once per 2^31 - 1 ids handed out, skipping every
 * channel this table holds (alive, or dead and not dropped yet). An id
 * handed out is not handed out again before the cursor comes round, so
 * two threads never get the same one, even before its channel registers.
 */
let idCursor = 0;
function freeChannelIds(count: number): number[] {
  const ids: number[] = [];
  for (let looked = 0; looked < MAX_ID && ids.length < Math.min(count, 65536); looked++) {
    idCursor = idCursor >= MAX_ID - 1 ? 1 : idCursor + 1;
    if (channels.getEvenIfDead(idCursor) === undefined) ids.push(idCursor);
  }
  return ids;
}

/** Parties with registrations posted and not yet handled here, and the count each must reach. */
function partiesBehind(): Map<number, number> {
  const behind = new Map<number, number>();
  for (let slot = 0; slot < SUPERVISOR_SLOT; slot++) {
    const state = slotState(slot);
    if (state === PartyState.FREE) continue;
    const posted = registrationsPosted(slot);
    if (((posted - handled[slot]!) | 0) > 0) behind.set(slot, posted);
  }
  return behind;
}

/** Party `from`'s registration of `key` was handled: answers fetches waiting for it, and those it was the last hope of. */
function registrationHandled(from: number, key: string, buffer: SharedArrayBuffer): void {
  handled[from] = (handled[from]! + 1) | 0;
  const waiting = awaiting.get(key);
  if (waiting) {
    awaiting.delete(key);
    for (const { port, slot } of waiting) answerFetch(port, slot, buffer);
  }
  if (awaiting.size > 0) settleAwaiting(from);
}

/** Party `from` caught up (or is gone): fetches that were waiting only for it get null. */
function settleAwaiting(from: number, gone = false): void {
  for (const [key, list] of awaiting) {
    for (let i = list.length - 1; i >= 0; i--) {
      const pending = list[i]!;
      const target = pending.behind.get(from);
      if (target === undefined) continue;
      if (gone || ((handled[from]! - target) | 0) >= 0) pending.behind.delete(from);
      if (pending.behind.size === 0) {
        answerFetch(pending.port, pending.slot, null);
        list.splice(i, 1);
      }
    }
    if (list.length === 0) awaiting.delete(key);
  }
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
  // Whatever it posted before its port closed has been handled.
  settleAwaiting(slot, true);
  takeClaimsOf(slot);
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
  handled[slot] = 0; // its next occupant's posted count starts at 0 (control.ts initSlot)
  setSlotState(slot, PartyState.FREE);
  sweepClosedChannels();
}

/**
 * Ends carried by a message the dead party took but had not claimed yet
 * (control.ts, claims): released if the message was really taken (after
 * rollbacks, its seq is behind the carrier's SEQ_HEAD). False: retry later.
 */
const unclaimed = new Map<number, { record: ClaimRecord; carrier: ChannelMemory | undefined }>();
/**
 * Takes party `slot`'s claims record when it is found dead, with the
 * carrier's memory: the carrier is alive then (the party held a recv
 * handle of it while claiming), but releasing the party's handles may end
 * it, and a dead channel may leave the table before the record is read.
 */
function takeClaimsOf(slot: number): void {
  const record = takeClaims(slot);
  if (record) unclaimed.set(slot, { record, carrier: channels.getEvenIfDead(record.carrierId) });
}
function releaseUnclaimedEnds(slot: number): boolean {
  const pending = unclaimed.get(slot);
  if (!pending) return true;
  const { record, carrier } = pending;
  if (!carrier || !seqAfter(carrier.get(H.SEQ_HEAD), record.seq)) {
    unclaimed.delete(slot);
    return true; // rolled back: the ends are in the carrier's ring again (released with it if it was discarded)
  }
  while (record.ends.length > 0) {
    const { id, kind } = record.ends[0]!;
    const memory = channels.get(id);
    if (memory) {
      const released = onChannel(memory, { value: { wake: 0, discarded: [] } }, () => tryLockedAfterDeath(memory, slot, () => releaseTransitEnd(kind, memory)));
      if (!released) return false; // retried later, from the first end not yet released
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
    // Busy, like a lock held by a live party: the caller retries (see DataPending).
    if (err instanceof DataPending) return undefined as T;
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

/** Forgets every dead channel now (after a death, which may have ended many). */
function sweepClosedChannels(): void {
  channels.sweep();
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
    channels.lookAt(1024); // dead channels go even while nothing new is registered
    scanLater();
  }, Math.min(250, Math.max(10, detectionMillis() / 4)));
}
scanLater();

setSlotState(SUPERVISOR_SLOT, PartyState.LIVE);
const mainPort = (workerData as Record<string, unknown>)[`${WORKER_DATA_KEY}MainPort`] as MessagePort;
listen(mainPort, 0, 0);
