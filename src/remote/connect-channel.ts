/**
 * connectChannel: a channel carried by NATS JetStream, with the same
 * RecvChannel/SendChannel ends as a local channel, so that stages of a
 * pipeline can run on other machines (or in other processes) unchanged.
 *
 * The ends returned are local channels of capacity 0 whose other ends are
 * held by this thread's bridge interpreter (bridge.ts), which moves
 * messages between them and the broker. One bridge (one interpreter, one
 * NATS connection) serves every channel this thread connects through the
 * same server list; it ends when the last of them is done.
 */
import { create, type Interpreter, createChannel, type RecvChannel, type SendChannel, InterpretersError } from "../core.js";
import type { BrokerInfo, ChannelSpec, Prepared, RemoteChannelStats } from "./bridge.js";
import { checkChannelName, localName } from "./naming.js";

export interface ConnectChannelOptions {
  /**
   * The most messages the broker holds for the channel: a positive integer
   * (a full channel makes `send` wait) or Infinity (the default: bounded only
   * by `maxBufferBytes`). 0 (rendezvous) is refused: see connectChannel.
   * Leave it out to take an existing channel as it is.
   */
  capacity?: number;
  /** Copies of the channel's stream kept by a JetStream cluster: 1 (default) to 5. */
  replicas?: number;
  /** Milliseconds for connecting and for each request to the broker (default 10 000). */
  timeout?: number;
  /** Which ends this process uses: "both" (default), "send" or "recv". The other end is returned closed and never counts as connected. */
  role?: "both" | "send" | "recv";
  /** Where the broker keeps the messages: "file" (default; survives a broker restart) or "memory". */
  storage?: "file" | "memory";
  /** The broker's byte budget for the channel's messages (default 256 MiB): a full budget makes `send` wait. */
  maxBufferBytes?: number;
  /**
   * Milliseconds before the broker redelivers a message whose receiving
   * process died before acknowledging it (default 30 000). Set when the
   * channel is created; a channel that exists keeps its own.
   */
  ackWait?: number;
  /** Milliseconds without a heartbeat after which a process's ends count as closed, as if it had closed them (default 15 000). */
  lease?: number;
}

const DEFAULT_TIMEOUT = 10_000;
const DEFAULT_ACK_WAIT = 30_000;
const DEFAULT_LEASE = 15_000;
/** Messages a process's sends to an unbounded remote channel may have in a local buffer before its bridge takes them. */
export const LOCAL_SEND_BUFFER = 64;

const bridgeModule = new URL(import.meta.url.endsWith(".ts") ? "./bridge.ts" : "./bridge.js", import.meta.url);

interface Bridge {
  interpreter: Interpreter;
  info: BrokerInfo;
  /** Channels connected or connecting through it. */
  users: number;
}

/** This thread's bridges, by server list. */
const bridges = new Map<string, Promise<Bridge>>();

/** The connection behind each end connectChannel returned in this thread (for remoteChannelStats). */
interface Connection {
  bridge: Bridge;
  session: number;
  /** Settles when the session has ended (final is then set, unless the bridge failed). */
  served?: Promise<void>;
  final?: RemoteChannelStats;
}
const connections = new WeakMap<object, Connection>();

/**
 * Connects to the remote channel `name` on the NATS JetStream servers
 * `servers` (URLs such as "nats://10.0.0.5:4222", an array, or a
 * comma-separated string; any one reachable is enough), creating it if no
 * process has yet. Returns its ends, receiving end first, with the same
 * methods, errors and close semantics as a local channel's, usable in any
 * interpreter (pass them as you would local ends: they move).
 *
 * Semantics, beside a local channel's:
 * - `send` resolves when this process's bridge has taken the message. For a
 *   bounded channel the bridge takes the next one only after the broker has
 *   stored the previous (so a process has at most one message between a
 *   resolved `send` and the broker, and per-sender order holds); for
 *   Infinity it keeps up to 128 publishes in flight. When the broker holds
 *   `capacity` messages, sends wait (backpressure), and resume after a
 *   receive anywhere frees a place.
 * - Every message goes to one receiver, in any connected process. A
 *   receiving process pulls a message only while one of its receivers
 *   waits, hands it over, then acknowledges it (confirmed by the broker); if
 *   the process dies before that, the broker redelivers it to another
 *   receiver after `ackWait` (at-least-once), and a message redelivered to a
 *   process that already received it is dropped there (per-sender sequence
 *   check). Messages of one sender arrive in the order sent, except one that
 *   was redelivered or (Infinity only) whose publish was retried after a
 *   broker failure while later ones were stored.
 * - `tryRecv` takes a message only while the bridge offers one: it pulls
 *   while a receiver of this process waits (blocked in recv, recvSync,
 *   select, iteration), and stops a second after offers are no longer taken.
 * - The channel closes as a local one does, across processes: when every
 *   connected send end has closed (every local handle of it closed, or its
 *   process gone for `lease` ms), receivers everywhere get what is left,
 *   then ChannelClosedError; when every connected receive end has closed,
 *   sends everywhere fail with ChannelClosedError and what the broker holds
 *   is dropped. Closing is recorded in the broker and is final for the
 *   name. A process connects both ends unless `role` says otherwise, so a
 *   process that only receives should pass `role: "recv"` (closing its send
 *   end instead would count as a sender finishing).
 * - While any of its ends is open, the bridge keeps the process alive (like
 *   a socket): close the ends, or let the interpreters holding them end.
 * - Values must be plain data: SharedArrayBuffers, channel ends and
 *   Lock/Semaphore/Event cannot cross machines. Such a message is dropped by
 *   the bridge with a RemoteChannelWarning (the local send has completed by
 *   then). A message larger than the server's max_payload (minus ~270 bytes)
 *   fails at once with MessageTooLargeError.
 *
 * Capacity 0 is refused with RangeError: a rendezvous across a broker would
 * make every send a round trip through a stream of one message with no real
 * handover; capacity 1 is the closest.
 *
 * Rejects (nothing connected) with RangeError for bad options or name,
 * InterpretersError when no server answers within `timeout` ms, when the
 * server lacks JetStream or is older than 2.9.4, or when the channel exists
 * with options that disagree with those given.
 */
export async function connectChannel<T = unknown>(
  servers: string | string[],
  name: string,
  options: ConnectChannelOptions = {},
): Promise<[RecvChannel<T>, SendChannel<T>]> {
  const serverList = checkServers(servers);
  checkChannelName(name);
  const spec = checkOptions(name, options);
  const timeout = options.timeout ?? DEFAULT_TIMEOUT;
  const bridge = await acquireBridge(serverList, timeout);
  let prepared: Prepared;
  try {
    prepared = await bridge.interpreter.call<Prepared>(bridgeModule, "prepareChannel", spec);
  } catch (err) {
    releaseBridge(serverList, bridge);
    throw unwrap(err);
  }
  const channelOptions = { capacity: 0, name: localName(name), maxMessageBytes: prepared.shape.maxMessageBytes };
  let userRx: RecvChannel<T>, pumpTx: SendChannel<T>, pumpRx: RecvChannel<T>, userTx: SendChannel<T>;
  try {
    [userRx, pumpTx] = createChannel<T>(channelOptions);
  // Unbounded: sends go into a local buffer the bridge drains in batches (a rendezvous per message would
  // cost a wake-up of the bridge each, a third of the throughput). Bounded: the bridge takes a message
  // only when it can publish it, so the broker's limit is the channel's.
    const sendBuffer = prepared.shape.capacity === Infinity ? LOCAL_SEND_BUFFER : 0;
    [pumpRx, userTx] = createChannel<T>({ ...channelOptions, capacity: sendBuffer });
  } catch (err) {
    await bridge.interpreter.call(bridgeModule, "abandonChannel", prepared.id).catch(() => {});
    releaseBridge(serverList, bridge);
    throw err;
  }
  if (spec.role === "send") userRx.close();
  if (spec.role === "recv") userTx.close();
  const connection: Connection = { bridge, session: prepared.id };
  connections.set(userRx, connection);
  connections.set(userTx, connection);
  connection.served = bridge.interpreter
    .call<RemoteChannelStats>(bridgeModule, "serveChannel", prepared.id, pumpRx, pumpTx)
    .then(
      (report) => {
        connection.final = report;
      },
      (err: unknown) => {
        process.emitWarning(`remote channel "${name}": its bridge failed, so its ends here are closed: ${(err as Error).message}`, "RemoteChannelWarning");
      },
    )
    .finally(() => releaseBridge(serverList, bridge));
  return [userRx, userTx];
}

/**
 * What this process's bridge knows about the remote channel behind `end`
 * (one of the two handles connectChannel returned in this thread; not a
 * clone): this connection's counts (messages stored, publishes retried,
 * delivered, redelivered, duplicates suppressed, dropped with a warning,
 * ...), the channel's shared state, and how many messages the broker holds.
 * Once the connection has ended (both of its directions done), its final
 * counts. Rejects with TypeError for any other object.
 */
export async function remoteChannelStats(end: RecvChannel<unknown> | SendChannel<unknown>): Promise<RemoteChannelStats> {
  const connection = connections.get(end);
  if (!connection) throw new TypeError("remoteChannelStats: this is not an end returned by connectChannel in this thread");
  if (!connection.final) {
    const live = await connection.bridge.interpreter.call<RemoteChannelStats | undefined>(bridgeModule, "sessionStats", connection.session).catch(() => undefined);
    if (live) return live;
    await connection.served; // it has just ended
  }
  if (connection.final) return connection.final;
  throw new InterpretersError("remoteChannelStats: the connection's bridge has gone");
}

/**
 * Deletes the remote channel `name` from the broker: its messages, its
 * consumer and its recorded state. Processes still connected to it see it
 * closed both ways (their sends and receives fail with ChannelClosedError);
 * a later connectChannel creates it afresh. The way to reuse a name whose
 * channel was closed (closing is otherwise final). Resolves whether the
 * channel existed; rejects like connectChannel when no server answers.
 */
export async function removeChannel(servers: string | string[], name: string, options: { timeout?: number } = {}): Promise<boolean> {
  const serverList = checkServers(servers);
  checkChannelName(name);
  const timeout = checkMillis("timeout", options.timeout, DEFAULT_TIMEOUT);
  const bridge = await acquireBridge(serverList, timeout);
  try {
    return await bridge.interpreter.call<boolean>(bridgeModule, "removeChannel", name);
  } catch (err) {
    throw unwrap(err);
  } finally {
    releaseBridge(serverList, bridge);
  }
}

function checkServers(servers: unknown): string[] {
  const list = typeof servers === "string" ? servers.split(",") : servers;
  if (!Array.isArray(list) || list.length === 0 || list.some((s) => typeof s !== "string" || s.trim() === "")) {
    throw new TypeError(`connectChannel: servers must be a server URL ("nats://host:4222"), a comma-separated list of them, or an array of them; got ${JSON.stringify(servers)}`);
  }
  return list.map((s: string) => s.trim());
}

function checkMillis(what: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new RangeError(`connectChannel: ${what} must be a positive integer number of milliseconds, got ${String(value)}`);
  }
  return value;
}

function checkOptions(name: string, o: ConnectChannelOptions): ChannelSpec {
  if (typeof o !== "object" || o === null) throw new TypeError(`connectChannel: options must be an object`);
  const capacity = o.capacity;
  if (capacity === 0) {
    throw new RangeError(
      `connectChannel("${name}"): capacity 0 (rendezvous) is not supported on a remote channel: a broker cannot hand a message from a sender to a waiting receiver in one step; use capacity 1 (at most one message in the broker) instead`,
    );
  }
  if (capacity !== undefined && capacity !== Infinity && (typeof capacity !== "number" || !Number.isInteger(capacity) || capacity < 1 || capacity > 2 ** 31 - 1)) {
    throw new RangeError(`connectChannel("${name}"): capacity must be a positive integer (bounded) or Infinity (unbounded), got ${String(capacity)}`);
  }
  const replicas = o.replicas;
  if (replicas !== undefined && (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 1 || replicas > 5)) {
    throw new RangeError(`connectChannel("${name}"): replicas must be an integer from 1 to 5, got ${String(replicas)}`);
  }
  const role = o.role ?? "both";
  if (role !== "both" && role !== "send" && role !== "recv") {
    throw new RangeError(`connectChannel("${name}"): role must be "both", "send" or "recv", got ${JSON.stringify(role)}`);
  }
  if (o.storage !== undefined && o.storage !== "file" && o.storage !== "memory") {
    throw new RangeError(`connectChannel("${name}"): storage must be "file" or "memory", got ${JSON.stringify(o.storage)}`);
  }
  const maxBufferBytes = o.maxBufferBytes;
  if (maxBufferBytes !== undefined && (typeof maxBufferBytes !== "number" || !Number.isInteger(maxBufferBytes) || maxBufferBytes <= 0)) {
    throw new RangeError(`connectChannel("${name}"): maxBufferBytes must be a positive integer number of bytes, got ${String(maxBufferBytes)}`);
  }
  checkMillis("timeout", o.timeout, DEFAULT_TIMEOUT);
  return {
    name,
    role,
    capacity,
    replicas,
    storage: o.storage,
    maxBufferBytes,
    ackWait: checkMillis("ackWait", o.ackWait, DEFAULT_ACK_WAIT),
    lease: checkMillis("lease", o.lease, DEFAULT_LEASE),
  };
}

async function acquireBridge(servers: string[], timeout: number): Promise<Bridge> {
  const key = servers.join(",");
  for (;;) {
    let pending = bridges.get(key);
    if (!pending) {
      pending = startBridge(servers, timeout);
      bridges.set(key, pending);
      pending.catch(() => bridges.delete(key));
    }
    const bridge = await pending.catch((err: unknown) => {
      throw unwrap(err);
    });
    if (bridges.get(key) !== pending) continue; // it was shutting down: start another
    bridge.users++;
    return bridge;
  }
}

async function startBridge(servers: string[], timeout: number): Promise<Bridge> {
  const interpreter = await create({ name: "nats-bridge" });
  try {
    const info = await interpreter.call<BrokerInfo>(bridgeModule, "connectBroker", servers, timeout);
    const bridge: Bridge = { interpreter, info, users: 0 };
    interpreter.once("exit", () => {
      const key = servers.join(",");
      if (bridges.get(key) !== undefined) void bridges.get(key)!.then((b) => b === bridge && bridges.delete(key), () => {});
    });
    return bridge;
  } catch (err) {
    await interpreter.terminate().catch(() => {});
    throw err;
  }
}

function releaseBridge(servers: string[], bridge: Bridge): void {
  if (--bridge.users > 0) return;
  const key = servers.join(",");
  void bridges.get(key)?.then((current) => {
    if (current !== bridge || bridge.users > 0) return;
    bridges.delete(key);
    void bridge.interpreter
      .call(bridgeModule, "disconnectBroker")
      .catch(() => {})
      .finally(() => bridge.interpreter.close().catch(() => {}));
  });
}

/** An error from the bridge arrives as ExecutionFailed; give the caller the message it carries. */
function unwrap(err: unknown): Error {
  const remote = (err as { remote?: { name: string; message: string } }).remote;
  if (remote) {
    const error = remote.name === "RangeError" ? new RangeError(remote.message) : new InterpretersError(remote.message, { cause: err });
    return error;
  }
  return err instanceof Error ? err : new Error(String(err));
}
