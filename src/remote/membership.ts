/**
 * One connected process's membership in a remote channel's shared state
 * (state.ts): joining as a sender and/or receiver, renewing its lease,
 * leaving, removing members whose lease ran out, and telling the pumps
 * whenever the state changes (a KV watch, plus every read the renewals do).
 *
 * Every change is a compare-and-set on the one `state` key: read, apply a
 * rule of state.ts, write with the revision read; a writer that lost the
 * race reads again. Broker trouble (a restart, a leader election) is retried
 * with backoff until `giveUpAfter`.
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { isWrongLastSequence } from "./provision.js";
import { STATE_KEY } from "./naming.js";
import { type ChannelState, decodeState, encodeState, join, leave, renew, type Role } from "./state.js";
import { backoff, sleep } from "./timing.js";

export interface MembershipOptions {
  kv: KV;
  /** The channel's name, for messages. */
  channel: string;
  id: string;
  lease: number;
  /** Called with every state seen (in order of revision). */
  onState(state: ChannelState): void;
  /** Called when a role this member held was removed by someone else (its lease ran out). */
  onEvicted(role: Role): void;
  /** Called when this member removed another whose lease ran out (diagnostics). */
  onEvicting?(role: Role, id: string, unchangedMs: number): void;
}

interface Watched {
  beat: number;
  since: number;
}

export class Membership {
  readonly #o: MembershipOptions;
  readonly #roles = new Set<Role>();
  #revision = 0;
  #state: ChannelState | undefined;
  #stopped = false;
  #renewTimer: NodeJS.Timeout | undefined;
  #watch: { stop(): void } | undefined;
  /** When each other member's beat last changed, by our clock: "senders/<id>" -> ... */
  readonly #watched = new Map<string, Watched>();
  /**
   * When a request of ours to the broker last failed (performance.now()).
   * While we cannot read the state we cannot tell a member that stopped
   * renewing from one whose renewals are held up like ours (a leader
   * election, a restart): a lease is only counted from after that.
   */
  #lastFailure = 0;

  constructor(options: MembershipOptions) {
    this.#o = options;
  }

  get state(): ChannelState | undefined {
    return this.#state;
  }

  /** Joins `roles` (those whose side is still open); returns the state after. Starts renewing and watching. */
  async start(roles: Role[]): Promise<ChannelState> {
    let state = await this.#read();
    for (const role of roles) {
      state = await this.#change((s) => join(s, role, this.#o.id, this.#o.lease));
      if (state[role][this.#o.id]) this.#roles.add(role);
    }
    this.#scheduleRenewal();
    void this.#runWatch();
    return state;
  }

  holds(role: Role): boolean {
    return this.#roles.has(role);
  }

  /** Leaves `role` (idempotent); the last member of a side closes it (state.ts). */
  async leave(role: Role): Promise<ChannelState | undefined> {
    if (!this.#roles.delete(role)) return this.#state;
    return this.#change((s) => leave(s, role, this.#o.id));
  }

  /** Stops renewing and watching (after leaving, or when the process's bridge shuts down). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#renewTimer);
    this.#watch?.stop();
  }

  async #read(): Promise<ChannelState> {
    return this.#seen(await this.#getState());
  }

  /**
   * The state entry. A missing key is asked for again: reads are direct
   * gets, which any replica of the bucket may answer, and a replica that
   * has just restarted (a leader killed and back) answers "no message"
   * until it has caught up. Taking that for a removed channel closed it
   * both ways for good, in the middle of a run: a sender's next `send`
   * failed with "every receive handle is closed". So the channel is taken
   * as removed only if the key stays missing for MISSING_STATE_MS; a live
   * member learns of a real removal sooner, from the closed state that
   * removeChannel writes before it deletes anything.
   */
  async #getState(): Promise<KvEntry | null> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      const entry = await this.#retrying(() => this.#o.kv.get(STATE_KEY));
      if (entry !== null || this.#stopped || Date.now() - started > MISSING_STATE_MS) return entry;
      this.#lastFailure = performance.now(); // like a failed request: leases are not counted through it
      await sleep(backoff(attempt));
    }
  }

  #seen(entry: KvEntry | null, written?: { state: ChannelState; revision: number }): ChannelState {
    let state: ChannelState;
    let revision: number;
    if (written) {
      ({ state, revision } = written);
    } else if (entry === null || entry.operation !== "PUT") {
      // The state was deleted (the channel was removed): closed both ways.
      state = { v: 1, senders: {}, receivers: {}, sendClosed: true, recvClosed: true };
      revision = entry?.revision ?? Number.MAX_SAFE_INTEGER;
    } else {
      state = decodeState(entry.string());
      revision = entry.revision;
    }
    if (revision >= this.#revision || this.#state === undefined) {
      this.#revision = revision;
      this.#state = state;
      this.#track(state);
      for (const role of [...this.#roles]) {
        if (!state[role][this.#o.id]) {
          this.#roles.delete(role);
          this.#o.onEvicted(role);
        }
      }
      this.#o.onState(state);
    }
    return this.#state!;
  }

  /** Applies `rule` by compare-and-set until it sticks (or there is nothing to write). */
  async #change(rule: (state: ChannelState) => ChannelState | undefined): Promise<ChannelState> {
    for (let attempt = 0; ; attempt++) {
      const entry = await this.#getState();
      const current = entry && entry.operation === "PUT" ? decodeState(entry.string()) : undefined;
      if (!entry || !current) return this.#seen(entry);
      const next = rule(current);
      if (next === undefined) return this.#seen(entry);
      try {
        const revision = await this.#o.kv.update(STATE_KEY, encodeState(next), entry.revision);
        return this.#seen(null, { state: next, revision });
      } catch (err) {
        if (!isWrongLastSequence(err)) this.#lastFailure = performance.now();
        if (isWrongLastSequence(err)) {
          await sleep(Math.random() * Math.min(50, 2 ** attempt)); // someone else wrote: read again
          continue;
        }
        if (this.#stopped) throw err;
        await sleep(backoff(attempt));
      }
    }
  }

  /** Runs `request`, retrying broker trouble with backoff until `giveUpAfter` ms have passed. */
  async #retrying<T>(request: () => Promise<T>): Promise<T> {
    const started = Date.now();
    for (let attempt = 0; ; attempt++) {
      try {
        return await request();
      } catch (err) {
        this.#lastFailure = performance.now();
        if (this.#stopped || Date.now() - started > giveUpAfter(this.#o.lease)) throw err;
        await sleep(backoff(attempt));
      }
    }
  }

  #scheduleRenewal(): void {
    if (this.#stopped) return;
    this.#renewTimer = setTimeout(() => void this.#renewAndEvict(), this.#o.lease / 4);
    this.#renewTimer.unref();
  }

  async #renewAndEvict(): Promise<void> {
    try {
      const mine = [...this.#roles].map((role) => ({ role, id: this.#o.id }));
      if (mine.length > 0) await this.#change((s) => renew(s, mine));
      else await this.#read();
      const now = performance.now();
      for (const [key, watched] of this.#watched) {
        const [role, id] = key.split("/") as [Role, string];
        const member = this.#state?.[role][id];
        const unchangedFor = now - Math.max(watched.since, this.#lastFailure);
        if (member && unchangedFor > member.lease) {
          const after = await this.#change((s) => leave(s, role, id, watched.beat));
          if (!after[role][id]) this.#o.onEvicting?.(role, id, unchangedFor);
        }
      }
    } catch {
      // the broker is unreachable: try again at the next round
      this.#lastFailure = performance.now();
    } finally {
      this.#scheduleRenewal();
    }
  }

  /** Remembers when each other member's beat last changed, by this process's clock. */
  #track(state: ChannelState): void {
    const now = performance.now();
    const present = new Set<string>();
    for (const role of ["senders", "receivers"] as const) {
      for (const [id, member] of Object.entries(state[role])) {
        if (id === this.#o.id) continue;
        const key = `${role}/${id}`;
        present.add(key);
        const watched = this.#watched.get(key);
        if (!watched || watched.beat !== member.beat) this.#watched.set(key, { beat: member.beat, since: now });
      }
    }
    for (const key of this.#watched.keys()) if (!present.has(key)) this.#watched.delete(key);
  }

  async #runWatch(): Promise<void> {
    while (!this.#stopped) {
      try {
        const watch = await this.#o.kv.watch({ key: STATE_KEY });
        this.#watch = watch;
        if (this.#stopped) watch.stop();
        for await (const entry of watch) this.#seen(entry);
      } catch {
        // the watch failed (broker restart): renewals keep reading the state meanwhile
      }
      if (!this.#stopped) await sleep(250);
    }
  }
}

/** How long the state key may read as missing before the channel is taken as removed (see Membership.#getState). */
export const MISSING_STATE_MS = 10_000;

/** How long a membership change keeps retrying through broker trouble. */
function giveUpAfter(lease: number): number {
  return Math.max(30_000, 2 * lease);
}
