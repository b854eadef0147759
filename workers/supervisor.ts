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
import { type ClaimRecord, control, MAX_ID, MAX_PARTIES, PartyState, takeClaims, setSlotState, slotCreator, slotId, slotState, SUPERVISOR_SLOT, WORKER_DATA_KEY, WORD_REFUSED } from "../src/control.js";
import { ChannelMemory, H, installDataBuffers, type Token } from "../src/ring.js";
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
  request: Extract<SupervisorRequest, { type: "fetch" }>;
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
const dataAhead = new Map<number, { token: Token; gen: number; buffer: SharedArrayBuffer }>();
/** The capability of each deposited object (objects are handed out only to a fetch that presents it). */
const objectTokens = new Map<number, Token>();

/**
 * Requests refused because they would let a party reach what it was not
 * given, or speak for another party (a fetch with a wrong capability, an
 * "attach" or "exited" for a slot it did not create, a registration over a
 * live channel's id, anything malformed). Counted in the control block
 * (WORD_REFUSED), where inspect() and tests read it; never printed, since
 * the attacker's own code would be the one to see it.
 */
function refuse(_what: string, _from: number): void {
  Atomics.add(control, WORD_REFUSED, 1);
}

function listen(port: MessagePort, slot: number, id: number): void {
  partyPorts.set(slot, port);
  port.on("message", (request: unknown) => {
    const problem = malformed(request);
    if (problem) {
      refuse(`a malformed request (${problem})`, slot);
      if (isFetchLike(request)) answerFetch(port, slot, null); // whoever waits for an answer gets one
      return;
    }
    try {
      handle(request as SupervisorRequest, port, slot);
    } catch (err) {
      // The supervisor must outlive anything a party sends it: a registration
      // of memory that is not a channel (CorruptDataError from ChannelMemory)
      // is refused like any other bad request, and its sender's fetch answered.
      if (!(err instanceof CorruptDataError)) throw err;
      refuse(`a request naming corrupt memory (${err.message})`, slot);
      if (isFetchLike(request)) answerFetch(port, slot, null);
      else if (isRegistration(request)) registrationHandled(slot, ""); // counted, so fetches do not wait for it

    }
  });
  port.on("close", () => partyGone(slot, id));
}

/**
 * One request from party `from` (the party this port belongs to: the slot
 * named in a request is never trusted; answers go to `from`).
 */
function handle(request: SupervisorRequest, port: MessagePort, from: number): void {
  switch (request.type) {
    case "channel": {
      const memory = new ChannelMemory(request.buffer);
      const existing = channels.get(request.id);
      if (existing && !existing.hasToken(memory.token())) {
        refuse(`a registration of channel ${request.id}, which is another live channel`, from);
        registrationHandled(from, `channel:${request.id}`);
        return;
      }
      const ahead = dataAhead.get(request.id);
      if (ahead) {
        dataAhead.delete(request.id);
        if (memory.hasToken(ahead.token)) memory.offerData(ahead.gen, ahead.buffer); // else: of an earlier channel with this id
      }
      channels.set(memory);
      registrationHandled(from, `channel:${request.id}`);
      return;
    }
    case "data": {
      const memory = channels.getEvenIfDead(request.id);
      if (memory?.hasToken(request.token)) memory.offerData(request.gen, request.buffer);
      else if (!memory) dataAhead.set(request.id, { token: request.token, gen: request.gen, buffer: request.buffer });
      else refuse(`a data area for channel ${request.id} without its capability`, from);
      registrationHandled(from, `data:${request.id}:${request.gen}`);
      return;
    }
    case "object":
      if (objects.has(request.id)) refuse(`a registration of shared object ${request.id}, which exists`, from);
      else {
        objects.set(request.id, request.buffer);
        objectTokens.set(request.id, request.token);
      }
      registrationHandled(from, `object:${request.id}`);
      return;
    case "fetch": {
      const found = lookUp(request);
      if (found === "refused") {
        refuse(`a fetch of ${request.kind} ${request.id} with a wrong capability`, from);
        answerFetch(port, from, null);
        return;
      }
      if (found) {
        answerFetch(port, from, found);
        return;
      }
      const behind = partiesBehind();
      if (behind.size === 0) {
        answerFetch(port, from, null); // nothing is on its way: this id can never be resolved
        return;
      }
      const key = request.kind === "data" ? `data:${request.id}:${request.gen}` : `${request.kind}:${request.id}`;
      const list = awaiting.get(key) ?? [];
      list.push({ port, slot: from, behind, request });
      awaiting.set(key, list);
      return;
    }
    case "ids":
      answerFetch(port, from, null, freeChannelIds(request.count));
      return;
    case "attach":
      // Only the creator of a slot attaches it, once (the new party may already be running).
      const state = slotState(request.slot);
      if (slotCreator(request.slot) !== from || (state !== PartyState.STARTING && state !== PartyState.LIVE) || partyPorts.has(request.slot)) {
        refuse(`an attach of slot ${request.slot}, which it did not create`, from);
        request.port.close();
        return;
      }
      listen(request.port, request.slot, request.id);
      return;
    case "exited":
      // Only the creator reports its interpreter's exit (the port's close reports it anyway).
      if (slotCreator(request.slot) !== from) {
        refuse(`an "exited" for slot ${request.slot}, which it did not create`, from);
        return;
      }
      partyGone(request.slot, request.id);
      return;
  }
}

/** Why `request` is not a request this supervisor understands (user code can post anything on its port), or "". */
function malformed(request: unknown): string {
  if (typeof request !== "object" || request === null) return "not an object";
  const r = request as Record<string, unknown>;
  const isId = (v: unknown) => typeof v === "number" && Number.isInteger(v);
  switch (r.type) {
    case "channel":
    case "object":
      if (!isId(r.id) || !(r.buffer instanceof SharedArrayBuffer)) return `${String(r.type)} without an id and a buffer`;
      if (r.type === "object" && !isToken(r.token)) return "object without a capability";
      return "";
    case "data":
      return isId(r.id) && isId(r.gen) && isToken(r.token) && r.buffer instanceof SharedArrayBuffer ? "" : "data without id, gen, capability and buffer";
    case "fetch":
      if (r.kind !== "channel" && r.kind !== "object" && r.kind !== "data") return `fetch of kind ${String(r.kind)}`;
      if (!isId(r.id) || !isToken(r.token) || (r.kind === "data" && !isId(r.gen))) return "fetch without an id and a capability";
      return "";
    case "ids":
      return isId(r.count) ? "" : "ids without a count";
    case "attach":
      return isId(r.slot) && (r.slot as number) >= 0 && (r.slot as number) < SUPERVISOR_SLOT && isId(r.id) && r.port instanceof MessagePort ? "" : "attach without a slot, an id and a port";
    case "exited":
      return isId(r.slot) && (r.slot as number) >= 0 && (r.slot as number) < SUPERVISOR_SLOT && isId(r.id) ? "" : "exited without a slot and an id";
    default:
      return `unknown type ${String(r.type)}`;
  }
}
function isToken(v: unknown): v is Token {
  return Array.isArray(v) && v.length === 4 && v.every((w) => typeof w === "number" && Number.isInteger(w));
}
function isRegistration(request: unknown): boolean {
  const type = (request as { type?: unknown } | null)?.type;
  return type === "channel" || type === "object" || type === "data";
}
function isFetchLike(request: unknown): boolean {
  const type = (request as { type?: unknown } | null)?.type;
  return type === "fetch" || type === "ids";
}

/**
 * What a fetch asks for, if it is here and the capability opens it;
 * "refused" when it is here and the capability does not; undefined when it
 * is not here (yet).
 */
function lookUp(request: Extract<SupervisorRequest, { type: "fetch" }>): SharedArrayBuffer | "refused" | undefined {
  if (request.kind === "object") {
    const buffer = objects.get(request.id);
    if (!buffer) return undefined;
    return sameToken(objectTokens.get(request.id), request.token) ? buffer : "refused";
  }
  const memory = channels.get(request.id);
  if (!memory) return undefined;
  if (!memory.hasToken(request.token)) return "refused";
  return request.kind === "channel" ? memory.buffer : memory.knownData(request.gen ?? -1);
}

function sameToken(a: Token | undefined, b: Token): boolean {
  return a !== undefined && a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3];
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

/** Party `from`'s registration of `key` was handled: answers fetches waiting for it (if their capability opens it), and those it was the last hope of. */
function registrationHandled(from: number, key: string): void {
  handled[from] = (handled[from]! + 1) | 0;
  const waiting = awaiting.get(key);
  if (waiting) {
    awaiting.delete(key);
    for (const { port, slot, request } of waiting) {
      const found = lookUp(request);
      if (found === "refused") refuse(`a fetch of ${request.kind} ${request.id} with a wrong capability`, slot);
      answerFetch(port, slot, found === "refused" ? null : (found ?? null));
    }
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
