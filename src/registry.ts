/**
 * Where a thread finds the shared memory behind an id: channels by channel
 * id, and shared objects (SharedArrayBuffers, Locks, ...) by object id.
 *
 * A message in a ring can carry only numbers, so a channel end or a
 * SharedArrayBuffer inside it travels as an id. The receiving thread looks
 * the id up here; what it has never seen it fetches, synchronously, from
 * the supervisor (supervisor-link.ts), which every thread that creates a
 * channel or sends a shared object has told about it first.
 *
 * Channels are cached strongly, for as long as the channel lives anywhere,
 * and forgotten soon after it dies (see channel-table.ts: the table drops
 * dead channels a little at every insertion; a thread that closes a
 * channel's last handle drops it at once). Invariant: a channel found here
 * is alive and is the one its id names (an id is only reused after its
 * channel died everywhere, and a dead entry is never returned). Weak
 * references would not do: a WeakRef keeps its target alive until the
 * current job ends, so a loop that creates channels without yielding would
 * keep every one of them (and its memory mappings) until it yields.
 *
 * Objects are cached weakly: an id this thread no longer uses can be
 * fetched again. Before the supervisor exists (only the main thread runs),
 * the main thread keeps deposited objects strongly and hands them over
 * when it starts.
 */
import { CorruptDataError } from "./errors.js";
import { ChannelMemory, H, installDataBuffers, type Token } from "./ring.js";
import { ChannelTable } from "./channel-table.js";
import { fetchFreeChannelIds, fetchFromSupervisor, isSupervisorLinked, onSupervisorLinked, postToSupervisor } from "./supervisor-link.js";
import { MAX_ID, nextChannelId, nextObjectId } from "./control.js";

/** Channels this thread has created or seen, by id. */
const channels = new ChannelTable();

const objectsById = new Map<number, WeakRef<SharedArrayBuffer>>();
/** Each deposited or fetched object's id and capability, per buffer (this thread's wrapper of it). */
const idsOfObjects = new WeakMap<SharedArrayBuffer, { id: number; token: Token }>();
/** Objects deposited before the supervisor existed (main thread only). */
const heldUntilLinked = new Map<number, { buffer: SharedArrayBuffer; token: Token }>();
const forgetObject = new FinalizationRegistry<number>((id) => {
  if (!objectsById.get(id)?.deref()) objectsById.delete(id);
});

onSupervisorLinked(() => {
  // Before the link only this (main) thread ran, so every live channel here was made (and grown) here.
  for (const memory of channels.values()) {
    if (memory.isDead()) continue;
    postToSupervisor({ type: "channel", id: memory.id, buffer: memory.buffer });
    const gen = memory.load(H.DATA_GEN);
    const data = memory.knownData(gen);
    if (data) postToSupervisor({ type: "data", id: memory.id, token: memory.token(), gen, buffer: data });
  }
  for (const [id, { buffer, token }] of heldUntilLinked) postToSupervisor({ type: "object", id, token, buffer });
  heldUntilLinked.clear();
});

/**
 * Grown data areas (ring.ts): this thread publishes the ones it makes to
 * the supervisor, and fetches from it those other threads made.
 */
installDataBuffers({
  publish(memory, gen, buffer) {
    channels.getEvenIfDead(memory.id)?.offerData(gen, buffer); // another view of it here may need it too
    if (isSupervisorLinked()) postToSupervisor({ type: "data", id: memory.id, token: memory.token(), gen, buffer });
  },
  resolve(memory, gen) {
    const known = channels.getEvenIfDead(memory.id)?.knownData(gen);
    if (known) return known;
    const buffer = fetchFromSupervisor("data", memory.id, { gen, token: memory.token() });
    if (!buffer) throw memory.corrupt(`its data area of generation ${gen} was never published`);
    return buffer;
  },
});

function remember(memory: ChannelMemory): ChannelMemory {
  channels.set(memory);
  return memory;
}

/** Forgets channel `memory` if it is dead (called by whoever closed its last handle here). */
export function forgetIfDead(memory: ChannelMemory): void {
  channels.dropIfDead(memory.id);
}

/** Reusable ids handed to this thread (see allocateChannelId). */
const freeIds: number[] = [];
/** Where this thread looks for reusable ids before the supervisor exists (main only). */
let localIdCursor = 0;
const FREE_IDS_PER_ASK = 1024;

/**
 * An id for a new channel: a fresh one while any of the 2^31 - 1 are left;
 * then the id of a channel that is dead everywhere. Those come from the
 * supervisor, which knows every live channel and hands out each reusable id
 * once per pass through the id space (so two threads never get the same
 * one); before it exists, every channel is this (main) thread's and this
 * thread's own table tells which ids are free. Throws RangeError only when
 * some 2^31 channels are all alive at once.
 */
export function allocateChannelId(): number {
  const fresh = nextChannelId();
  if (fresh !== 0) return fresh;
  if (freeIds.length === 0) {
    if (isSupervisorLinked()) freeIds.push(...fetchFreeChannelIds(FREE_IDS_PER_ASK).reverse());
    else freeIds.push(...localFreeIds(FREE_IDS_PER_ASK).reverse());
  }
  const id = freeIds.pop();
  if (id === undefined) throw new RangeError("createChannel: every channel id is in use by a live channel; close channels you no longer need");
  return id;
}

/** Up to `count` ids, from this thread's cursor on, that no channel in this thread's table has. */
function localFreeIds(count: number): number[] {
  const ids: number[] = [];
  for (let looked = 0; looked < MAX_ID && ids.length < count; looked++) {
    localIdCursor = localIdCursor >= MAX_ID - 1 ? 1 : localIdCursor + 1;
    if (!channels.get(localIdCursor)) ids.push(localIdCursor);
  }
  return ids;
}

/**
 * Registers a channel this thread just created, whose ends are already
 * counted (the supervisor forgets a dead channel, and may look at once).
 */
export function registerNewChannel(memory: ChannelMemory): void {
  remember(memory);
  if (isSupervisorLinked()) postToSupervisor({ type: "channel", id: memory.id, buffer: memory.buffer });
}

/** This thread's views of channel `id`'s memory, given its buffer (received by postMessage). */
export function channelFromBuffer(buffer: SharedArrayBuffer): ChannelMemory {
  const memory = new ChannelMemory(buffer);
  return channels.get(memory.id) ?? remember(memory); // a live cached channel with this id is this one
}

/**
 * This thread's views of channel `id`'s memory, for an end that arrived in
 * a message with capability `token`; fetched from the supervisor (which
 * checks the token) if not known here. Throws CorruptDataError when no
 * live channel has that id and token.
 */
export function channelById(id: number, token: Token): ChannelMemory {
  const known = channels.get(id);
  if (known?.hasToken(token)) return known;
  const buffer = fetchFromSupervisor("channel", id, { token });
  if (!buffer) {
    throw new CorruptDataError(`a message refers to channel ${id}, which no live channel with that capability is (never registered, closed everywhere, or a forged end)`);
  }
  return channelFromBuffer(buffer);
}

/** Channel `id` if this thread has it cached and it is alive (never fetches). */
export function liveChannelIfCached(id: number): ChannelMemory | undefined {
  return channels.get(id);
}

/** How many channels this thread's cache holds now (tests and diagnostics). */
export function cachedChannelCount(): number {
  return channels.size;
}

/** A fresh 128-bit capability. */
function newToken(): Token {
  const words = crypto.getRandomValues(new Int32Array(4));
  return [words[0]!, words[1]!, words[2]!, words[3]!];
}

/**
 * The id under which `buffer` travels, and the capability that opens it
 * (deposited with the supervisor once per thread and buffer).
 */
export function depositObject(buffer: SharedArrayBuffer): { id: number; token: Token } {
  const known = idsOfObjects.get(buffer);
  if (known !== undefined) return known;
  const id = nextObjectId();
  if (id === 0) throw new RangeError("cannot share another SharedArrayBuffer or sync primitive: all 2^31 - 1 shared-object ids have been used in this process");
  const deposited = { id, token: newToken() };
  idsOfObjects.set(buffer, deposited);
  objectsById.set(id, new WeakRef(buffer));
  forgetObject.register(buffer, id);
  if (isSupervisorLinked()) postToSupervisor({ type: "object", id, token: deposited.token, buffer });
  else heldUntilLinked.set(id, { buffer, token: deposited.token });
  return deposited;
}

/** The shared object deposited under `id` with capability `token`. Throws CorruptDataError when there is none. */
export function objectById(id: number, token: Token): SharedArrayBuffer {
  const known = objectsById.get(id)?.deref() ?? heldUntilLinked.get(id)?.buffer;
  if (known && sameToken(idsOfObjects.get(known)?.token, token)) return known;
  const buffer = fetchFromSupervisor("object", id, { token });
  if (!buffer) throw new CorruptDataError(`a message refers to shared object ${id}, which no object with that capability is (never deposited, or a forged reference)`);
  objectsById.set(id, new WeakRef(buffer));
  idsOfObjects.set(buffer, { id, token });
  forgetObject.register(buffer, id);
  return buffer;
}

function sameToken(a: Token | undefined, b: Token): boolean {
  return a !== undefined && a[0] === b[0] && a[1] === b[1] && a[2] === b[2] && a[3] === b[3];
}
