/**
 * Creates (or finds, and checks) the JetStream objects behind one remote
 * channel: the work-queue stream, its durable pull consumer, and the KV
 * bucket holding the channel's state (naming.ts lists them). Idempotent:
 * every process that connects runs it; the first one creates, the others
 * find what it made, and options that disagree with it are refused.
 */
import { nanos } from "@nats-io/transport-node";
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { InterpretersError } from "../core.js";
import { CONSUMER_NAME, metaBucket, STATE_KEY, streamName, subjectPrefix } from "./naming.js";
import { initialState, encodeState } from "./state.js";
import { WIRE_HEADER_BYTES } from "./wire.js";

/** What the caller asked for; undefined = whatever the channel already has (or the default). */
export interface ChannelRequest {
  name: string;
  capacity?: number;
  replicas?: number;
  storage?: "file" | "memory";
  maxBufferBytes?: number;
  ackWait: number;
}

/** The channel as it is in the broker. */
export interface ChannelShape {
  capacity: number;
  replicas: number;
  storage: "file" | "memory";
  maxBufferBytes: number;
  /** Largest value (the core codec's bytes) a message may carry. */
  maxMessageBytes: number;
  /** The consumer's ack wait in ms (set by whoever created it): how long before an unacknowledged message is redelivered. */
  ackWait: number;
}

export const DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024;
/** Room left in the server's max_payload for the headers (Nats-Msg-Id) and the wire header. */
const HEADROOM_BYTES = 256;

export interface Provisioned {
  shape: ChannelShape;
  kv: KV;
}

export async function provision(js: JetStreamClient, jsm: JetStreamManager, request: ChannelRequest, maxPayload: number): Promise<Provisioned> {
  const stream = await ensureStream(jsm, request);
  const ackWaitNanos = await ensureConsumer(jsm, request);
  const shape = { ...shapeOf(stream, maxPayload), ackWait: Math.max(1, Math.round(ackWaitNanos / 1_000_000)) };
  const kv = await ensureBucket(js, request.name, shape);
  try {
    await kv.create(STATE_KEY, encodeState(initialState()));
  } catch (err) {
    if (!isWrongLastSequence(err)) throw err; // someone else made it first
  }
  return { shape, kv };
}

function wantedConfig(request: ChannelRequest): Partial<StreamConfig> & { name: string } {
  const capacity = request.capacity ?? Infinity;
  return {
    name: streamName(request.name),
    subjects: [`${subjectPrefix(request.name)}.*`],
    retention: RetentionPolicy.Workqueue,
    discard: DiscardPolicy.New,
    storage: request.storage === "memory" ? StorageType.Memory : StorageType.File,
    max_msgs: capacity === Infinity ? -1 : capacity,
    max_bytes: request.maxBufferBytes ?? DEFAULT_MAX_BUFFER_BYTES,
    max_msg_size: -1,
    num_replicas: request.replicas ?? 1,
    duplicate_window: nanos(120_000),
  };
}

async function ensureStream(jsm: JetStreamManager, request: ChannelRequest): Promise<StreamInfo> {
  const name = streamName(request.name);
  let existing = await streamInfo(jsm, name);
  if (!existing) {
    try {
      return await jsm.streams.add(wantedConfig(request));
    } catch (err) {
      existing = await streamInfo(jsm, name); // another process created it meanwhile?
      if (!existing) throw explain(err, request.name, "create its stream");
    }
  }
  checkAgrees(existing, request);
  return existing;
}

async function streamInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo | undefined> {
  try {
    return await jsm.streams.info(name);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === 10059) return undefined; // stream not found
    throw err;
  }
}

function shapeOf(info: StreamInfo, maxPayload: number): Omit<ChannelShape, "ackWait"> {
  const c = info.config;
  const limit = c.max_msg_size > 0 ? Math.min(c.max_msg_size, maxPayload) : maxPayload;
  return {
    capacity: c.max_msgs < 0 ? Infinity : c.max_msgs,
    replicas: c.num_replicas,
    storage: c.storage === StorageType.Memory ? "memory" : "file",
    maxBufferBytes: c.max_bytes,
    maxMessageBytes: Math.max(1, limit - HEADROOM_BYTES - WIRE_HEADER_BYTES),
  };
}

/** Refuses options given explicitly that the existing channel does not have. */
function checkAgrees(info: StreamInfo, request: ChannelRequest): void {
  const c = info.config;
  const problems: string[] = [];
  if (c.retention !== RetentionPolicy.Workqueue || c.discard !== DiscardPolicy.New) {
    throw new InterpretersError(
      `connectChannel("${request.name}"): stream ${info.config.name} exists but is not a remote channel's (retention ${c.retention}, discard ${c.discard}); remove it or choose another name`,
    );
  }
  const capacity = c.max_msgs < 0 ? Infinity : c.max_msgs;
  if (request.capacity !== undefined && request.capacity !== capacity) problems.push(`capacity ${capacity} (asked ${request.capacity})`);
  if (request.replicas !== undefined && request.replicas !== c.num_replicas) problems.push(`replicas ${c.num_replicas} (asked ${request.replicas})`);
  const storage = c.storage === StorageType.Memory ? "memory" : "file";
  if (request.storage !== undefined && request.storage !== storage) problems.push(`storage "${storage}" (asked "${request.storage}")`);
  if (request.maxBufferBytes !== undefined && request.maxBufferBytes !== c.max_bytes) problems.push(`maxBufferBytes ${c.max_bytes} (asked ${request.maxBufferBytes})`);
  if (problems.length > 0) {
    throw new InterpretersError(
      `connectChannel("${request.name}"): the channel already exists with ${problems.join(", ")}; connect with the same options (or leave them out to take the channel as it is), or use another name`,
    );
  }
}

/** Finds or creates the channel's consumer; returns its ack wait (nanoseconds). */
async function ensureConsumer(jsm: JetStreamManager, request: ChannelRequest): Promise<number> {
  const stream = streamName(request.name);
  try {
    return (await jsm.consumers.info(stream, CONSUMER_NAME)).config.ack_wait ?? nanos(request.ackWait);
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === 10014)) throw explain(err, request.name, "find its consumer"); // 10014: consumer not found
  }
  try {
    const info = await jsm.consumers.add(stream, {
      durable_name: CONSUMER_NAME,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(request.ackWait),
      max_deliver: -1,
      max_ack_pending: 20_000,
      max_waiting: 512,
    });
    return info.config.ack_wait ?? nanos(request.ackWait);
  } catch (err) {
    // Created by another process meanwhile (with its ack_wait): take that one.
    try {
      return (await jsm.consumers.info(stream, CONSUMER_NAME)).config.ack_wait ?? nanos(request.ackWait);
    } catch {
      throw explain(err, request.name, "create its consumer");
    }
  }
}

async function ensureBucket(js: JetStreamClient, name: string, shape: ChannelShape): Promise<KV> {
  const kvm = new Kvm(js);
  const bucket = metaBucket(name);
  try {
    return await kvm.create(bucket, { history: 1, replicas: shape.replicas, storage: shape.storage === "memory" ? StorageType.Memory : StorageType.File });
  } catch (err) {
    try {
      return await kvm.open(bucket);
    } catch {
      throw explain(err, name, "create its state bucket");
    }
  }
}

/** The JetStream "wrong last sequence" error: a compare-and-set lost to another writer. */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10071;
}

function explain(err: unknown, name: string, what: string): InterpretersError {
  const message = err instanceof Error ? err.message : String(err);
  return new InterpretersError(`connectChannel("${name}"): could not ${what}: ${message}`, { cause: err });
}
