/**
 * The shared state of one remote channel, kept in the KV bucket
 * `ICHMETA_<name>` under the key `state` (JSON, changed only by
 * compare-and-set: membership.ts), and the pure rules that change it.
 *
 * | field | meaning |
 * |---|---|
 * | `senders` | connected send ends: member id -> `{ beat, lease }` |
 * | `receivers` | connected receive ends, likewise |
 * | `sendClosed` | every send end that ever connected has closed (sticky): receivers drain, then the channel is closed |
 * | `recvClosed` | every receive end that ever connected has closed (sticky): senders fail, the stream is purged |
 *
 * A member is one end (send or receive) of one `connectChannel` call in one
 * process, connected from the call until every local handle of that end is
 * closed (including by the interpreters holding them exiting) or its process
 * stops renewing it: `beat` is a counter its owner bumps every `lease / 4`
 * ms, and any process that sees it unchanged for `lease` ms of its own clock
 * removes the member (it died), as the supervisor releases a dead
 * interpreter's ends.
 */

export interface Member {
  beat: number;
  /** Milliseconds without a new beat after which the member counts as gone. */
  lease: number;
}

export type Role = "senders" | "receivers";

export interface ChannelState {
  v: 1;
  senders: Record<string, Member>;
  receivers: Record<string, Member>;
  sendClosed: boolean;
  recvClosed: boolean;
}

export function initialState(): ChannelState {
  return { v: 1, senders: {}, receivers: {}, sendClosed: false, recvClosed: false };
}

export function encodeState(state: ChannelState): string {
  return JSON.stringify(state);
}

/** Parses a state record; a record that is not one (written by hand, corrupt) reads as a closed channel. */
export function decodeState(text: string): ChannelState {
  try {
    const parsed = JSON.parse(text) as Partial<ChannelState>;
    if (parsed && parsed.v === 1 && isMembers(parsed.senders) && isMembers(parsed.receivers)) {
      return {
        v: 1,
        senders: parsed.senders,
        receivers: parsed.receivers,
        sendClosed: parsed.sendClosed === true,
        recvClosed: parsed.recvClosed === true,
      };
    }
  } catch {
    // fall through
  }
  return { v: 1, senders: {}, receivers: {}, sendClosed: true, recvClosed: true };
}

function isMembers(value: unknown): value is Record<string, Member> {
  if (typeof value !== "object" || value === null) return false;
  for (const member of Object.values(value)) {
    if (typeof member !== "object" || member === null || typeof member.beat !== "number" || typeof member.lease !== "number") return false;
  }
  return true;
}

/** Whether the side `role` joins is closed for good (then a member can no longer join it). */
export function closedFor(state: ChannelState, role: Role): boolean {
  return role === "senders" ? state.sendClosed || state.recvClosed : state.recvClosed;
}

/** Adds member `id` to `role` unless that side is closed (then returns undefined: nothing to write). */
export function join(state: ChannelState, role: Role, id: string, lease: number): ChannelState | undefined {
  if (closedFor(state, role) || state[role][id]) return undefined;
  return { ...state, [role]: { ...state[role], [id]: { beat: 0, lease } } };
}

/**
 * Removes member `id` from `role` (if `beat` is given, only if its beat is
 * still that: an eviction that lost to a renewal writes nothing). The last
 * sender leaving closes the send side; the last receiver, the receive side.
 */
export function leave(state: ChannelState, role: Role, id: string, beat?: number): ChannelState | undefined {
  const member = state[role][id];
  if (!member || (beat !== undefined && member.beat !== beat)) return undefined;
  const members = { ...state[role] };
  delete members[id];
  const next: ChannelState = { ...state, [role]: members };
  if (Object.keys(members).length === 0) {
    if (role === "senders") next.sendClosed = true;
    else next.recvClosed = true;
  }
  return next;
}

/** Bumps the beat of each of `ids` still a member (the owner's renewal). */
export function renew(state: ChannelState, ids: Array<{ role: Role; id: string }>): ChannelState | undefined {
  let next: ChannelState | undefined;
  for (const { role, id } of ids) {
    const member = (next ?? state)[role][id];
    if (!member) continue;
    next ??= { ...state, senders: { ...state.senders }, receivers: { ...state.receivers } };
    next[role][id] = { ...member, beat: member.beat + 1 };
  }
  return next;
}
