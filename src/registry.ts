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
 * Local entries are weak: an id this thread no longer uses can be fetched
 * again. Before the supervisor exists (only the main thread runs), the main
 * thread keeps deposited objects strongly and hands them over when it starts.
 */
import { CorruptDataError } from "./errors.js";
import { ChannelMemory } from "./ring.js";
import { fetchFromSupervisor, isSupervisorLinked, onSupervisorLinked, postToSupervisor } from "./supervisor-link.js";
import { nextObjectId } from "./control.js";

const channels = new Map<number, WeakRef<ChannelMemory>>();
const forgetChannel = new FinalizationRegistry<number>((id) => {
  if (!channels.get(id)?.deref()) channels.delete(id);
});

const objectsById = new Map<number, WeakRef<SharedArrayBuffer>>();
const idsOfObjects = new WeakMap<SharedArrayBuffer, number>();
/** Objects deposited before the supervisor existed (main thread only). */
const heldUntilLinked = new Map<number, SharedArrayBuffer>();
const channelsUntilLinked = new Map<number, WeakRef<ChannelMemory>>();
const forgetObject = new FinalizationRegistry<number>((id) => {
  if (!objectsById.get(id)?.deref()) objectsById.delete(id);
});

onSupervisorLinked(() => {
  for (const [id, ref] of channelsUntilLinked) {
    const memory = ref.deref();
    if (memory) postToSupervisor({ type: "channel", id, buffer: memory.buffer });
  }
  channelsUntilLinked.clear();
  for (const [id, buffer] of heldUntilLinked) postToSupervisor({ type: "object", id, buffer });
  heldUntilLinked.clear();
});

function remember(memory: ChannelMemory): ChannelMemory {
  channels.set(memory.id, new WeakRef(memory));
  forgetChannel.register(memory, memory.id);
  return memory;
}

/** Registers a channel this thread just created (the supervisor learns of it too). */
export function registerNewChannel(memory: ChannelMemory): void {
  remember(memory);
  if (isSupervisorLinked()) postToSupervisor({ type: "channel", id: memory.id, buffer: memory.buffer });
  else channelsUntilLinked.set(memory.id, new WeakRef(memory));
}

/** This thread's views of channel `id`'s memory, given its buffer (received by postMessage). */
export function channelFromBuffer(buffer: SharedArrayBuffer): ChannelMemory {
  const memory = new ChannelMemory(buffer);
  const known = channels.get(memory.id)?.deref();
  if (known) return known;
  return remember(memory);
}

/** This thread's views of channel `id`'s memory; fetched from the supervisor if never seen here. */
export function channelById(id: number): ChannelMemory {
  const known = channels.get(id)?.deref();
  if (known) return known;
  const buffer = fetchFromSupervisor("channel", id);
  if (!buffer) throw new CorruptDataError(`a message refers to channel ${id}, which no interpreter has registered`);
  return channelFromBuffer(buffer);
}

/** The id under which `buffer` travels (deposited with the supervisor once per thread). */
export function depositObject(buffer: SharedArrayBuffer): number {
  const known = idsOfObjects.get(buffer);
  if (known !== undefined) return known;
  const id = nextObjectId();
  idsOfObjects.set(buffer, id);
  objectsById.set(id, new WeakRef(buffer));
  forgetObject.register(buffer, id);
  if (isSupervisorLinked()) postToSupervisor({ type: "object", id, buffer });
  else heldUntilLinked.set(id, buffer);
  return id;
}

/** The shared object deposited under `id`. */
export function objectById(id: number): SharedArrayBuffer {
  const known = objectsById.get(id)?.deref() ?? heldUntilLinked.get(id);
  if (known) return known;
  const buffer = fetchFromSupervisor("object", id);
  if (!buffer) throw new CorruptDataError(`a message refers to shared object ${id}, which was never deposited`);
  objectsById.set(id, new WeakRef(buffer));
  idsOfObjects.set(buffer, id);
  forgetObject.register(buffer, id);
  return buffer;
}
