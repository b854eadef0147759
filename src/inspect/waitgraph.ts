/**
 * The wait-for graph and the deadlocks in it, computed from one reading of
 * the shared state (collect.ts). Pure: no shared memory is read here, so
 * the rules can be tested on hand-made states.
 *
 * Who can end a wait:
 * - a receive on a channel: any holder of its send end (or of an end in
 *   transit, which could land anywhere);
 * - a send: any holder of its recv end;
 * - a Lock acquire: the lock's owner only;
 * - a select: any of its cases.
 * An edge `from -> to` says `from` waits for something `to` could do.
 *
 * A *deadlock* is a set of parties in blocking waits without timeout,
 * each of which could only be woken from inside the set (the rule of the
 * core's detector, deadlock.ts: start from all of them, remove until
 * nothing changes every party that a holder outside the set could wake).
 * A *possible deadlock* is the same with asynchronous waiters allowed in
 * the set: an `await rx.recv()` in a thread whose event loop could still
 * act (a timer, I/O) on its own, which is why the core never throws for it.
 * Anything that could still act rules a party out, as in the detector: a
 * message it could take, a closed side, room for a send, an end in
 * transit, a free lock, a holder outside the set.
 */
import type { DeadlockParty } from "../core.js";
import type { DeadlockSnapshot, WaitForEdge, WaitOpName } from "./types.js";

/** A blocking wait is counted in a deadlock only once it has lasted this long (ms): a snapshot is a racy read. */
export const STABLE_WAIT_MS = 100;

export interface CaseModel {
  op: "send" | "recv";
  channel: number;
}

export interface WaitModel {
  op: WaitOpName;
  /** Channel cases (one for send/recv, several for a select); none for a lock. */
  cases: CaseModel[];
  lock?: number;
  async: boolean;
  timeout: boolean;
  sinceMs: number;
  /**
   * A blocking wait that has stood still (nobody woke it) for at least
   * STABLE_WAIT_MS: only such waits count in a deadlock. Async waits: true.
   */
  stable: boolean;
}

export interface PartyModel {
  id: number;
  name: string;
  waits: WaitModel[];
}

export interface ChannelModel {
  id: number;
  name: string;
  /** -1 for Infinity. */
  capacity: number;
  length: number;
  closedNoSenders: boolean;
  closedNoReceivers: boolean;
  /** A receiver is taking a streamed message: a buffered message is not for the others. */
  streamReceiver: boolean;
  sendHolders: number[];
  recvHolders: number[];
  transitSenders: number;
  transitReceivers: number;
  corrupt: boolean;
}

export interface WaitGraph {
  waitFor: WaitForEdge[];
  deadlocks: DeadlockSnapshot[];
  possibleDeadlocks: DeadlockSnapshot[];
}

/** The parties that could end a wait on `c` (holders of the other end). */
function wakersOfCase(c: CaseModel, channels: Map<number, ChannelModel>): number[] {
  const channel = channels.get(c.channel);
  if (!channel) return [];
  return c.op === "recv" ? channel.sendHolders : channel.recvHolders;
}

/** Builds the wait-for edges and finds deadlocks and possible deadlocks. */
export function analyseWaits(parties: PartyModel[], channels: Map<number, ChannelModel>, lockOwners: Map<number, number>): WaitGraph {
  const waitFor: WaitForEdge[] = [];
  const seen = new Set<string>();
  const addEdge = (edge: WaitForEdge): void => {
    const key = `${edge.from}>${edge.to}:${edge.channel ?? ""}:${edge.lock ?? ""}:${edge.async ? 1 : 0}`;
    if (seen.has(key)) return;
    seen.add(key);
    waitFor.push(edge);
  };
  for (const party of parties) {
    for (const wait of party.waits) {
      if (wait.lock !== undefined) {
        const owner = lockOwners.get(wait.lock);
        if (owner !== undefined && owner >= 0) addEdge({ from: party.id, to: owner, lock: wait.lock, ...(wait.async ? { async: true } : {}) });
      }
      for (const c of wait.cases) {
        for (const to of wakersOfCase(c, channels)) addEdge({ from: party.id, to, channel: c.channel, ...(wait.async ? { async: true } : {}) });
      }
    }
  }

  // The wait that decides whether a party is stuck: its blocking wait (the
  // thread sleeps in it, so its async operations cannot run meanwhile), or,
  // with none, all of its async waits together (any of them may end it).
  const blocking = new Map<number, WaitModel[]>();
  const asyncOnly = new Map<number, WaitModel[]>();
  for (const party of parties) {
    const sync = party.waits.filter((w) => !w.async);
    if (sync.length > 0) {
      if (sync.every((w) => !w.timeout && w.stable)) blocking.set(party.id, sync);
    } else if (party.waits.length > 0) {
      asyncOnly.set(party.id, party.waits);
    }
  }

  const wakeableFromOutside = (wait: WaitModel, set: Set<number>): boolean => {
    if (wait.lock !== undefined) {
      const owner = lockOwners.get(wait.lock);
      return owner === undefined || owner < 0 || !set.has(owner);
    }
    if (wait.cases.length === 0) return true; // when in doubt, not stuck
    return wait.cases.some((c) => caseWakeable(c, channels.get(c.channel), set));
  };
  const closeUnder = (candidates: Map<number, WaitModel[]>): Set<number> => {
    const set = new Set(candidates.keys());
    for (let changed = true; changed; ) {
      changed = false;
      for (const id of set) {
        if (candidates.get(id)!.some((w) => wakeableFromOutside(w, set))) {
          set.delete(id);
          changed = true;
        }
      }
    }
    return set;
  };

  const hard = closeUnder(blocking);
  const all = closeUnder(new Map([...blocking, ...asyncOnly]));
  const byId = new Map(parties.map((p) => [p.id, p]));
  const relevant = (id: number): WaitModel[] => blocking.get(id) ?? asyncOnly.get(id) ?? [];
  const deadlocks = components(hard, relevant, channels, lockOwners).map((members) => describeSet(members, byId, relevant, channels, lockOwners));
  const possibleDeadlocks = components(all, relevant, channels, lockOwners)
    .filter((members) => members.some((id) => asyncOnly.has(id)))
    .map((members) => describeSet(members, byId, relevant, channels, lockOwners));
  return { waitFor, deadlocks, possibleDeadlocks };
}

/** Could a wait on case `c` be ended by someone outside `set`, or right now? */
function caseWakeable(c: CaseModel, channel: ChannelModel | undefined, set: Set<number>): boolean {
  if (!channel || channel.corrupt) return true;
  if (c.op === "recv") {
    if (channel.closedNoSenders) return true;
    if (channel.length > 0 && !channel.streamReceiver) return true;
    if (channel.transitSenders > 0) return true;
    return channel.sendHolders.some((id) => !set.has(id));
  }
  if (channel.closedNoReceivers) return true;
  if (channel.capacity > 0 && channel.length < channel.capacity) return true;
  if (channel.transitReceivers > 0) return true;
  return channel.recvHolders.some((id) => !set.has(id));
}

/** The parties who could end `id`'s relevant waits, within `set`. */
function wakersWithin(waits: WaitModel[], set: Set<number>, channels: Map<number, ChannelModel>, lockOwners: Map<number, number>): number[] {
  const out: number[] = [];
  for (const wait of waits) {
    if (wait.lock !== undefined) {
      const owner = lockOwners.get(wait.lock);
      if (owner !== undefined && set.has(owner)) out.push(owner);
    }
    for (const c of wait.cases) for (const to of wakersOfCase(c, channels)) if (set.has(to)) out.push(to);
  }
  return out;
}

/** Splits `set` into groups connected by wait-for edges (either direction), smallest id first. */
function components(set: Set<number>, relevant: (id: number) => WaitModel[], channels: Map<number, ChannelModel>, lockOwners: Map<number, number>): number[][] {
  const parent = new Map<number, number>([...set].map((id) => [id, id]));
  const find = (id: number): number => {
    let root = id;
    while (parent.get(root) !== root) root = parent.get(root)!;
    parent.set(id, root);
    return root;
  };
  for (const id of set) for (const to of wakersWithin(relevant(id), set, channels, lockOwners)) parent.set(find(id), find(to));
  const groups = new Map<number, number[]>();
  for (const id of [...set].sort((a, b) => a - b)) {
    const root = find(id);
    groups.set(root, [...(groups.get(root) ?? []), id]);
  }
  return [...groups.values()];
}

/** The cycle in walking order (each party followed by one it waits for), and how long it has stood. */
function describeSet(
  members: number[],
  byId: Map<number, PartyModel>,
  relevant: (id: number) => WaitModel[],
  channels: Map<number, ChannelModel>,
  lockOwners: Map<number, number>,
): DeadlockSnapshot {
  const set = new Set(members);
  const order: number[] = [];
  let current: number | undefined = members[0];
  while (current !== undefined && !order.includes(current)) {
    order.push(current);
    const next: number | undefined = wakersWithin(relevant(current), set, channels, lockOwners).find((id) => !order.includes(id));
    current = next;
  }
  for (const id of members) if (!order.includes(id)) order.push(id);
  const cycle: DeadlockParty[] = order.map((id) => {
    const party = byId.get(id)!;
    const wait = relevant(id)[0]!;
    const first = wait.cases[0];
    const channel = first ? channels.get(first.channel) : undefined;
    return {
      interpreter: { id, name: party.name },
      op: wait.op,
      ...(first ? { channel: { id: first.channel, name: channel?.name ?? "" } } : {}),
    };
  });
  const sinceMs = Math.min(...members.flatMap((id) => relevant(id).map((w) => w.sinceMs)));
  return { cycle, sinceMs: Math.max(0, sinceMs) };
}
