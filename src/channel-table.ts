/**
 * A table of channels by id that forgets dead ones (ChannelMemory.isDead)
 * soon after they die, a little at every insertion: each `set` looks at the
 * two entries that have waited longest since they were last looked at,
 * drops those that are dead and sends the others to the back of the line.
 *
 * Why incrementally, and soon: a channel's SharedArrayBuffer is freed only
 * when every thread's wrapper of it has been collected, and each growable
 * buffer holds two memory mappings of the process's 65,530 while it lives
 * (Linux vm.max_map_count). A wrapper dropped soon after its channel died
 * is still young, and V8's scavenges (which an ArrayBuffer's committed
 * bytes bring on every few hundred channels) free it; one kept until a
 * sweep of the whole table has usually been promoted and waits for a full
 * GC, which may not come before the mappings run out (seen: 63,543 of
 * 65,530 maps after 300,000 channels made and closed in a loop).
 *
 * Invariant: a dead entry is never returned by `get`. With n entries, a
 * dead channel is dropped within n/2 insertions, or at the first `get` of it.
 */
import type { ChannelMemory } from "./ring.js";

/** Entries looked at per insertion: above 1, so the table shrinks while channels die faster than they are made. */
const LOOKS_PER_INSERT = 2;

export class ChannelTable {
  private readonly byId = new Map<number, ChannelMemory>();
  /** Ids in the order they are next looked at (an id may be stale: already replaced or deleted). */
  private readonly line: number[] = [];
  private lineStart = 0;

  get size(): number {
    return this.byId.size;
  }

  /** The live channel `id`, or undefined (a dead entry found here is dropped). */
  get(id: number): ChannelMemory | undefined {
    const memory = this.byId.get(id);
    if (memory === undefined || !memory.isDead()) return memory;
    this.byId.delete(id);
    return undefined;
  }

  /** Entry `id` even if its channel is dead (until it is dropped): for cleanup after a death. */
  getEvenIfDead(id: number): ChannelMemory | undefined {
    return this.byId.get(id);
  }

  /** Drops entry `id` if its channel is dead. */
  dropIfDead(id: number): void {
    this.get(id);
  }

  /** Looks at up to `count` entries (a timer's share of the sweeping, when nothing is inserted). */
  lookAt(count: number): void {
    for (let i = 0; i < count; i++) this.lookAtNext();
  }

  /** Adds (or replaces) channel `memory` under its id, and looks at the entries waiting longest. */
  set(memory: ChannelMemory): void {
    if (!this.byId.has(memory.id)) this.line.push(memory.id);
    this.byId.set(memory.id, memory);
    for (let i = 0; i < LOOKS_PER_INSERT; i++) this.lookAtNext();
  }

  /** Every entry, live or not yet found dead. */
  values(): IterableIterator<ChannelMemory> {
    return this.byId.values();
  }

  entries(): IterableIterator<[number, ChannelMemory]> {
    return this.byId.entries();
  }

  /** Drops every dead entry now (after a party's death, say). O(size). */
  sweep(): void {
    for (const [id, memory] of this.byId) if (memory.isDead()) this.byId.delete(id);
    this.line.length = 0;
    this.lineStart = 0;
    for (const id of this.byId.keys()) this.line.push(id);
  }

  private lookAtNext(): void {
    if (this.lineStart >= this.line.length) return;
    const id = this.line[this.lineStart++]!;
    const memory = this.byId.get(id);
    if (memory !== undefined) {
      if (memory.isDead()) this.byId.delete(id);
      else this.line.push(id);
    }
    // Compact the consumed front now and then, so the array stays O(size).
    if (this.lineStart > 1024 && this.lineStart * 2 > this.line.length) {
      this.line.splice(0, this.lineStart);
      this.lineStart = 0;
    }
  }
}
