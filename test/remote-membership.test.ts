/**
 * Membership (src/remote/membership.ts) against a stand-in for the KV
 * bucket, no broker needed. Reads of the state key are direct gets, which
 * any replica may answer; one that has just restarted answers "no message"
 * until it catches up. Such a read once closed a channel both ways in the
 * middle of a run (the leader-kill cluster test: a sender's `send` failed
 * with "every receive handle is closed"). A missing key is now read again,
 * and taken as a removed channel only if it stays missing.
 */
import type { KV } from "@nats-io/kv";
import { suite, assert } from "./_harness.js";
import { Membership, MISSING_STATE_MS } from "../src/remote/membership.js";
import { decodeState, encodeState, initialState, type ChannelState } from "../src/remote/state.js";

const test = suite("remote-membership");

/** The one key of a channel's state bucket; `missingReads` gets answer null first, as a lagging replica does. */
class StandInKv {
  value = encodeState(initialState());
  revision = 1;
  missingReads = 0;
  gets = 0;
  async get(): Promise<unknown> {
    this.gets++;
    if (this.missingReads > 0) {
      this.missingReads--;
      return null;
    }
    const text = this.value;
    return { operation: "PUT", revision: this.revision, string: () => text };
  }
  async update(_key: string, value: string, revision: number): Promise<number> {
    if (revision !== this.revision) throw Object.assign(new Error("wrong last sequence"), { code: 10071 });
    this.value = value;
    return ++this.revision;
  }
  async watch(): Promise<AsyncIterable<unknown> & { stop(): void }> {
    let stop!: () => void;
    const stopped = new Promise<void>((resolve) => (stop = resolve));
    return {
      stop,
      async *[Symbol.asyncIterator]() {
        await stopped;
      },
    };
  }
}

function member(kv: StandInKv, seen: ChannelState[], evicted: string[]): Membership {
  return new Membership({
    kv: kv as unknown as KV,
    channel: "t",
    id: "me",
    lease: 60_000,
    onState: (state) => seen.push(state),
    onEvicted: (role) => evicted.push(role),
  });
}

test("a state key that reads as missing for a moment (a replica catching up) does not close the channel", async () => {
  const kv = new StandInKv();
  kv.missingReads = 3;
  const seen: ChannelState[] = [];
  const evicted: string[] = [];
  const m = member(kv, seen, evicted);
  try {
    const state = await m.start(["receivers"]);
    assert.ok(state.receivers["me"], `joined as a receiver: ${JSON.stringify(state)}`);
    assert.not.ok(seen.some((s) => s.sendClosed || s.recvClosed), `a closed state was reported: ${JSON.stringify(seen)}`);
    assert.equal(evicted, []);
    assert.ok(decodeState(kv.value).receivers["me"], "the join was written");
    assert.ok(kv.gets >= 4, `the missing key was read again (${kv.gets} reads)`);
  } finally {
    m.stop();
  }
});

test(`a state key missing for good (${MISSING_STATE_MS} ms) still reads as a removed channel: closed both ways`, async () => {
  const kv = new StandInKv();
  kv.missingReads = Number.MAX_SAFE_INTEGER;
  const seen: ChannelState[] = [];
  const m = member(kv, seen, []);
  const started = Date.now();
  try {
    const state = await m.start(["receivers"]);
    assert.ok(state.sendClosed && state.recvClosed, JSON.stringify(state));
    assert.ok(Date.now() - started >= MISSING_STATE_MS, `gave up after ${Date.now() - started} ms`);
  } finally {
    m.stop();
  }
}, { timeout: 60_000 });

test.run();
