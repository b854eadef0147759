/**
 * The bridge: the module a process's bridge interpreter runs
 * (connect-channel.ts starts it and calls these exports). It owns the
 * process's NATS connection for one server list and serves every remote
 * channel connected through it:
 *
 *     user thread(s)                 bridge interpreter                      NATS JetStream
 *     SendChannel ── rendezvous ──▶ SendPump ── publish (msg id) ──────────▶ stream ICH_<name>
 *     RecvChannel ◀─ rendezvous ─── RecvPump ◀─ fetch / ackAck ──────────── consumer "receivers"
 *                                   Membership ◀─ compare-and-set / watch ─▶ KV ICHMETA_<name>
 *
 * The user's ends are ordinary local channels of capacity 0, so everything
 * a local channel does works on them unchanged, in any interpreter: sync and
 * async calls, select, timeouts, signals, moving ends. Because the bridge has
 * its own thread, a `sendSync`/`recvSync` blocking the caller's thread (main
 * thread included) does not block the network I/O that completes it.
 */
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { type RecvChannel, type SendChannel, InterpretersError } from "../core.js";
import { Membership } from "./membership.js";
import { metaBucket, newMemberId, roomSubject, senderSubject, STATE_KEY, streamName } from "./naming.js";
import { Kvm } from "@nats-io/kv";
import { encodeState } from "./state.js";
import { provision, type ChannelShape, type Provisioned } from "./provision.js";
import { RecvPump, type RecvCounts } from "./recv-pump.js";
import { SendPump, type SendCounts } from "./send-pump.js";
import { SequenceCheck } from "./sequence-check.js";
import type { ChannelState } from "./state.js";

/** The oldest server whose JetStream API the client (@nats-io/jetstream v3) supports. */
const MIN_SERVER_VERSION = [2, 9, 4] as const;

interface Broker {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** The same, with a short timeout: for the polls that are repeated anyway (is the channel drained?). */
  jsmPoll: JetStreamManager;
  maxPayload: number;
  timeout: number;
  /** Called after every reconnection (the server may have restarted and forgotten open pull requests). */
  onReconnect: Set<() => void>;
}

/**
 * How long a publish waits for the broker's answer before it is sent again
 * (with the same message id): short, because a broker that crashed never
 * answers, and every send of a bounded channel waits behind the publish.
 */
const PUBLISH_TIMEOUT_MS = 2000;

let broker: Broker | undefined;

// nats.js builds an Error for every request it completes (RequestOne.cancel
// rejects its settled promise with a new RequestError, even with
// noAsyncTraces), one per publish and per ackAck: with stack traces that was
// 8-15% of this thread's time. This thread runs only the bridge, whose errors
// travel as messages, so it keeps no stacks.
Error.stackTraceLimit = 0;

export interface BrokerInfo {
  server: string;
  version: string;
  maxPayload: number;
}

/** Connects to one of `servers` (reconnecting for ever after that) and checks that JetStream is there. */
export async function connectBroker(servers: string[], timeout: number): Promise<BrokerInfo> {
  if (broker) throw new InterpretersError("internal error: this bridge is already connected");
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers,
      timeout,
      name: `interpreters bridge (pid ${process.pid})`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      pingInterval: 10_000,
      // Without this, every request (each publish, each ackAck) captures a stack trace for its error: a quarter of the bridge's time.
      noAsyncTraces: true,
    });
  } catch (err) {
    throw new InterpretersError(
      `connectChannel: cannot reach a NATS server at ${servers.join(", ")} within ${timeout} ms (${(err as Error).message}); is nats-server running, with JetStream on (-js)?`,
      { cause: err },
    );
  }
  const version = nc.info?.version ?? "0.0.0";
  if (olderThan(version, MIN_SERVER_VERSION)) {
    await nc.close();
    throw new InterpretersError(`connectChannel: the NATS server at ${nc.getServer()} is version ${version}; remote channels need ${MIN_SERVER_VERSION.join(".")} or later`);
  }
  let jsm: JetStreamManager;
  try {
    jsm = await jetstreamManager(nc, { timeout });
  } catch (err) {
    await nc.close();
    throw new InterpretersError(
      `connectChannel: the NATS server at ${nc.getServer()} has no JetStream (${(err as Error).message}); start it with -js (and a store directory: -sd DIR)`,
      { cause: err },
    );
  }
  const js = jetstream(nc, { timeout });
  const jsmPoll = await jetstreamManager(nc, { timeout: Math.min(timeout, PUBLISH_TIMEOUT_MS), checkAPI: false });
  broker = { nc, js, jsm, jsmPoll, maxPayload: nc.info?.max_payload ?? 1024 * 1024, timeout, onReconnect: new Set() };
  const listeners = broker.onReconnect;
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "reconnect") for (const listener of listeners) listener();
    }
  })().catch(() => {});
  return { server: nc.getServer(), version, maxPayload: broker.maxPayload };
}

/** Drains and closes the connection (after every session has ended). */
export async function disconnectBroker(): Promise<void> {
  const b = broker;
  broker = undefined;
  if (b && !b.nc.isClosed()) await b.nc.drain().catch(() => b.nc.close());
}

export interface ChannelSpec {
  name: string;
  role: "both" | "send" | "recv";
  capacity?: number;
  replicas?: number;
  storage?: "file" | "memory";
  maxBufferBytes?: number;
  ackWait: number;
  lease: number;
}

export interface Prepared {
  id: number;
  shape: ChannelShape;
}

/** What a session did (remoteChannelStats): counts of this process's two pumps, and the channel as the broker has it. */
export interface RemoteChannelStats {
  channel: string;
  /** This connection's member id (the sender id in message ids). */
  member: string;
  capacity: number;
  replicas: number;
  /** The channel's shared state as last seen: connected ends (all processes) and whether each side is closed. */
  state: { senders: number; receivers: number; sendClosed: boolean; recvClosed: boolean };
  /** Messages the broker holds for the channel (stored, or delivered and not yet acknowledged); undefined once this connection has ended. */
  stream?: { messages: number; bytes: number };
  /** This process's sends, while connected as a sender. */
  send?: SendCounts & { outcome: string };
  recv?: RecvCounts & { outcome: string; duplicatesSuppressed: number; outOfOrder: number; pump: ReturnType<RecvPump["inside"]> };
  /** The last warnings (dropped messages and the like), oldest first. */
  warnings: string[];
}

const sessions = new Map<number, Session>();
let nextSession = 1;

/**
 * Creates or finds the channel's objects in the broker and joins its state
 * as a sender and/or receiver (as `spec.role` says). The ends come with
 * serveChannel.
 */
export async function prepareChannel(spec: ChannelSpec): Promise<Prepared> {
  const b = connected();
  const provisioned = await provision(b.js, b.jsm, { ...spec }, b.maxPayload);
  const session = new Session(b, spec, provisioned);
  await session.join();
  const id = nextSession++;
  sessions.set(id, session);
  return { id, shape: provisioned.shape };
}

/** Serves session `id` with the bridge's ends of its two local channels; resolves when both directions are done. */
export async function serveChannel(id: number, toBroker: RecvChannel<unknown>, fromBroker: SendChannel<unknown>): Promise<RemoteChannelStats> {
  const session = sessions.get(id);
  if (!session) throw new InterpretersError(`internal error: no prepared session ${id}`);
  try {
    return await session.serve(toBroker, fromBroker);
  } finally {
    sessions.delete(id);
  }
}

/** Session `id`'s report with the stream's state from the broker; undefined once the session has ended. */
export async function sessionStats(id: number): Promise<RemoteChannelStats | undefined> {
  const session = sessions.get(id);
  if (!session) return undefined;
  const report = session.report();
  const info = await connected().jsmPoll.streams.info(streamName(report.channel)).catch(() => undefined);
  if (info) report.stream = { messages: info.state.messages, bytes: info.state.bytes };
  return report;
}

/**
 * Removes channel `name` from the broker: marks it closed both ways (so that
 * every connected process's ends close, through their watch), then deletes
 * its stream (and consumer) and its state bucket. Resolves whether it existed.
 */
export async function removeChannel(name: string): Promise<boolean> {
  const b = connected();
  const kvm = new Kvm(b.js);
  let existed = false;
  try {
    const kv = await kvm.open(metaBucket(name));
    await kv.put(STATE_KEY, encodeState({ v: 1, senders: {}, receivers: {}, sendClosed: true, recvClosed: true }));
    existed = true;
  } catch {
    // no state bucket
  }
  // Give connected processes a moment to see "closed" before their stream disappears.
  if (existed) await new Promise((resolve) => setTimeout(resolve, 200));
  existed = (await b.jsm.streams.delete(streamName(name)).catch(() => false)) || existed;
  await b.jsm.streams.delete(`KV_${metaBucket(name)}`).catch(() => false);
  return existed;
}

/** Ends a prepared session that will never be served (its caller failed before passing the ends). */
export async function abandonChannel(id: number): Promise<void> {
  const session = sessions.get(id);
  sessions.delete(id);
  await session?.abandon();
}

function connected(): Broker {
  if (!broker) throw new InterpretersError("internal error: the bridge is not connected");
  return broker;
}

class Session {
  readonly #b: Broker;
  readonly #spec: ChannelSpec;
  readonly #p: Provisioned;
  readonly #id = newMemberId();
  readonly #membership: Membership;
  readonly #check = new SequenceCheck();
  #sendPump: SendPump | undefined;
  #recvPump: RecvPump | undefined;
  #sendOutcome = "";
  #recvOutcome = "";
  #purged = false;
  readonly #warnings: string[] = [];

  constructor(b: Broker, spec: ChannelSpec, provisioned: Provisioned) {
    this.#b = b;
    this.#spec = spec;
    this.#p = provisioned;
    this.#membership = new Membership({
      kv: provisioned.kv,
      channel: spec.name,
      id: this.#id,
      lease: spec.lease,
      onState: (state) => this.#onState(state),
      onEvicted: (role) => {
        this.#warn(`remote channel "${spec.name}": this process's ${role === "senders" ? "send" : "receive"} end was removed by another process: no heartbeat of ours reached the broker for ${spec.lease} ms`);
        if (role === "senders") this.#sendPump?.stopRemotely();
        else this.#recvPump?.stopRemotely();
      },
      onEvicting: (role, id, unchangedMs) =>
        this.#warn(`remote channel "${spec.name}": removed ${role === "senders" ? "sender" : "receiver"} ${id}, whose heartbeat had not changed for ${Math.round(unchangedMs)} ms (its process is gone, or cut off)`),
    });
  }

  async join(): Promise<void> {
    const roles: Array<"senders" | "receivers"> = [];
    if (this.#spec.role !== "recv") roles.push("senders");
    if (this.#spec.role !== "send") roles.push("receivers");
    await this.#membership.start(roles);
  }

  async serve(toBroker: RecvChannel<unknown>, fromBroker: SendChannel<unknown>): Promise<RemoteChannelStats> {
    const warn = (message: string): void => this.#warn(message);
    const shape = this.#p.shape;
    const directions: Array<Promise<void>> = [];
    if (this.#membership.holds("senders")) {
      this.#sendPump = new SendPump({
        js: this.#b.js,
        nc: this.#b.nc,
        roomSubject: shape.capacity === Infinity ? undefined : roomSubject(this.#spec.name),
        channel: this.#spec.name,
        subject: senderSubject(this.#spec.name, this.#id),
        senderId: this.#id,
        window: shape.capacity === Infinity ? 128 : 1,
        publishTimeout: Math.min(this.#b.timeout, PUBLISH_TIMEOUT_MS),
        local: toBroker,
        warn,
      });
      if (this.#membership.state?.recvClosed) this.#sendPump.stopRemotely();
      directions.push(
        this.#sendPump.run().then(async (outcome) => {
          this.#sendOutcome = outcome;
          await this.#leave("senders");
        }),
      );
    } else {
      toBroker.close(); // role "recv", or the channel was closed: local sends fail with ChannelClosedError
      this.#sendOutcome = "not connected";
    }
    if (this.#membership.holds("receivers")) {
      this.#recvPump = new RecvPump({
        nc: this.#b.nc,
        jsm: this.#b.jsmPoll,
        stream: streamName(this.#spec.name),
        channel: this.#spec.name,
        local: fromBroker,
        window: shape.capacity === Infinity ? 256 : Math.min(shape.capacity, 64),
        // The consumer's ack wait, whoever created it (not this connection's option).
        hold: Math.min(1000, shape.ackWait / 4),
        ackWait: shape.ackWait,
        ackTimeout: this.#b.timeout,
        check: this.#check,
        roomSubject: shape.capacity === Infinity ? undefined : roomSubject(this.#spec.name),
        sendClosed: () => this.#membership.state?.sendClosed === true,
        warn,
      });
      const pump = this.#recvPump;
      const reconnected = (): void => pump.reconnected();
      this.#b.onReconnect.add(reconnected);
      directions.push(
        this.#recvPump.run().then(async (outcome) => {
          this.#b.onReconnect.delete(reconnected);
          this.#recvOutcome = outcome;
          const state = await this.#leave("receivers");
          // Drained: whatever the stream still holds was acknowledged already (see RecvPump's drainedNow).
          if (state?.recvClosed || outcome === "drained") await this.#purge();
        }),
      );
    } else {
      fromBroker.close(); // role "send", or every receiver was gone: local receives fail with ChannelClosedError
      this.#recvOutcome = "not connected";
    }
    try {
      await Promise.all(directions);
    } finally {
      this.#membership.stop();
    }
    return this.report();
  }

  #warn(message: string): void {
    this.#warnings.push(message);
    if (this.#warnings.length > 20) this.#warnings.shift();
    process.emitWarning(message, "RemoteChannelWarning");
  }

  /** Leaves the channel without having served it. */
  async abandon(): Promise<void> {
    await this.#leave("senders");
    await this.#leave("receivers");
    this.#membership.stop();
  }

  report(): RemoteChannelStats {
    const state = this.#membership.state;
    const report: RemoteChannelStats = {
      channel: this.#spec.name,
      member: this.#id,
      capacity: this.#p.shape.capacity,
      replicas: this.#p.shape.replicas,
      state: {
        senders: state ? Object.keys(state.senders).length : 0,
        receivers: state ? Object.keys(state.receivers).length : 0,
        sendClosed: state?.sendClosed ?? false,
        recvClosed: state?.recvClosed ?? false,
      },
      warnings: [...this.#warnings],
    };
    if (this.#sendPump) report.send = { ...this.#sendPump.counts, outcome: this.#sendOutcome };
    if (this.#recvPump) {
      report.recv = {
        ...this.#recvPump.counts,
        outcome: this.#recvOutcome,
        duplicatesSuppressed: this.#check.duplicates,
        outOfOrder: this.#check.outOfOrder,
        pump: this.#recvPump.inside(),
      };
    }
    return report;
  }

  async #leave(role: "senders" | "receivers"): Promise<ChannelState | undefined> {
    try {
      return await this.#membership.leave(role);
    } catch {
      return undefined; // the broker stayed unreachable: the lease will run out and others remove us
    }
  }

  #onState(state: ChannelState): void {
    if (state.recvClosed) {
      this.#sendPump?.stopRemotely();
      this.#recvPump?.stopRemotely();
      void this.#purge();
    }
    this.#recvPump?.wake();
  }

  /** Drops what the stream holds once every receiver is gone (nobody can receive it: local channels drop too). */
  async #purge(): Promise<void> {
    if (this.#purged) return;
    this.#purged = true;
    await this.#b.jsm.streams.purge(streamName(this.#spec.name)).catch(() => {});
  }
}

function olderThan(version: string, minimum: readonly number[]): boolean {
  const parts = version.split(/[.-]/).map((p) => Number.parseInt(p, 10));
  for (let i = 0; i < minimum.length; i++) {
    const have = parts[i] ?? 0;
    if (have !== minimum[i]) return have < minimum[i]!;
  }
  return false;
}
