/**
 * The RESP (Redis protocol) module of examples/resp-server.ts, run by
 * offload() in each protocol interpreter.
 *
 * Shared nothing, as Dragonfly does: the keyspace is cut into one shard
 * per interpreter by a hash of the key (FNV-1a), and each interpreter owns
 * its shard alone. A connection's interpreter is the coordinator of its
 * commands: a command whose keys are all in its own shard runs at once; the
 * others go, batched per shard for each receive(), to the owners' inboxes
 * (one channel per interpreter, `globalThis.shardInboxes`/`shardSenders`)
 * as RESP bytes, and their replies come back as bytes with a length table.
 * MGET/MSET/DEL/EXISTS are split per shard and put back together in key
 * order; DBSIZE/FLUSHALL go to every shard. Replies leave in command order.
 *
 * What this does not give: atomicity across shards (a concurrent MGET may
 * see part of an MSET that spans shards) or one global order of commands
 * of different connections on different shards, as with Redis Cluster
 * (which refuses cross-slot MSET outright). Per key, commands run in the
 * order each connection sent them.
 *
 * Commands: PING, ECHO, SET (EX/PX/EXAT/PXAT/NX/XX/GET/KEEPTTL), GET, DEL,
 * EXISTS, INCR, INCRBY, DECR, DECRBY, MGET, MSET, DBSIZE, FLUSHALL,
 * FLUSHDB, SELECT 0, QUIT, HELLO (protocol 2), CLIENT (SETNAME, GETNAME,
 * ID, INFO, LIST, SETINFO), COMMAND (COUNT, INFO, DOCS, LIST), CONFIG GET,
 * INFO; RESP2 multibulk and inline commands.
 */
import { ChannelClosedError, type ConnectionInfo, type ProtocolContext, type RecvChannel, type Reply, type SendChannel } from "interpreters";
import { latin1, NEED_MORE, RespError, RespParser, type RespCommand } from "./resp-parser.js";
import { Keyspace, parseInteger, ReplyWriter } from "./resp-store.js";

declare global {
  /** The shards' inboxes (this interpreter reads its own index's). */
  var shardInboxes: RecvChannel<Uint8Array>[] | undefined;
  /** Send ends of the same inboxes. */
  var shardSenders: SendChannel<Uint8Array>[] | undefined;
}

const VERSION = "7.0.15";
/** A request to another shard not answered in this long is answered with an error. */
const SHARD_TIMEOUT_MS = 10_000;

let me = 0;
let shards = 1;
let peers: SendChannel<Uint8Array>[] = [];
const keyspace = new Keyspace();
const epoch = (Math.random() * 2 ** 31) >>> 0;
let nextRequest = 1;
const waiting = new Map<number, { resolve(parts: Uint8Array[]): void; since: number }>();

export function start(context: ProtocolContext): void {
  me = context.index;
  shards = context.interpreters;
  if (shards === 1) return;
  const inboxes = globalThis.shardInboxes;
  const senders = globalThis.shardSenders;
  if (!inboxes || !senders || inboxes.length !== shards || senders.length !== shards) {
    throw new Error(`resp: ${shards} interpreters need shardInboxes and shardSenders of ${shards} channels each (see examples/resp-server.ts)`);
  }
  inboxes.forEach((inbox, index) => {
    if (index !== me) inbox.close();
  });
  peers = senders;
  void serveInbox(inboxes[me]!);
  setInterval(expireWaiting, 1000).unref();
}

/** FNV-1a of the key's bytes: which shard owns it. */
export function shardOf(key: Uint8Array, count: number): number {
  return shardOfRange(key, 0, key.length, count);
}

function shardOfRange(buf: Uint8Array, from: number, to: number, count: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) {
    h ^= buf[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % count;
}

// ---------------------------------------------------------------- the shard side

const REQUEST = 1;
const RESPONSE = 2;
const REQUEST_HEADER = 15; // kind u8, from u16, epoch u32, id u32, count u32
const RESPONSE_HEADER = 13; // kind u8, epoch u32, id u32, count u32

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff;
  b[at + 1] = (v >>> 8) & 0xff;
  b[at + 2] = (v >>> 16) & 0xff;
  b[at + 3] = (v >>> 24) & 0xff;
}

async function serveInbox(inbox: RecvChannel<Uint8Array>): Promise<void> {
  const shardWriter = new ReplyWriter();
  try {
    for (;;) {
      const first = await inbox.recv();
      handleShardMessage(first, shardWriter);
      for (let next = inbox.tryRecv(); next.ok; next = inbox.tryRecv()) handleShardMessage(next.value, shardWriter);
    }
  } catch (err) {
    if (!(err instanceof ChannelClosedError)) throw err;
  }
}

function handleShardMessage(message: Uint8Array, out: ReplyWriter): void {
  if (message[0] === RESPONSE) {
    if (u32(message, 1) !== epoch) return; // for the interpreter this one replaced
    const id = u32(message, 5);
    const count = u32(message, 9);
    const parts: Uint8Array[] = new Array(count);
    let at = RESPONSE_HEADER + 4 * count;
    for (let k = 0; k < count; k++) {
      const n = u32(message, RESPONSE_HEADER + 4 * k);
      parts[k] = message.subarray(at, at + n);
      at += n;
    }
    const entry = waiting.get(id);
    waiting.delete(id);
    entry?.resolve(parts);
    return;
  }
  // A request: run each command on our keyspace, answer with each reply's length.
  const from = message[1]! | (message[2]! << 8);
  const requestEpoch = u32(message, 3);
  const id = u32(message, 7);
  const count = u32(message, 11);
  const parser = new RespParser();
  parser.push(message.subarray(REQUEST_HEADER));
  out.length = 0;
  out.ensure(RESPONSE_HEADER + 4 * count);
  out.length = RESPONSE_HEADER + 4 * count;
  let previous = out.length;
  for (let k = 0; k < count; k++) {
    const command = parser.readCommand();
    if (command === NEED_MORE || command === null) throw new Error("resp: a malformed shard request");
    keyspace.execute(command.text(0).toLowerCase(), command, out);
    putU32(out.buf, RESPONSE_HEADER + 4 * k, out.length - previous);
    previous = out.length;
  }
  const buf = out.buf;
  buf[0] = RESPONSE;
  putU32(buf, 1, requestEpoch);
  putU32(buf, 5, id);
  putU32(buf, 9, count);
  send(from, out.view());
}

/** Sends to shard `index`'s inbox: at once if there is room (the bytes are copied), else in order after the waiting ones. */
const backlog: Array<Array<Uint8Array>> = [];
const draining: boolean[] = [];
function send(index: number, bytes: Uint8Array): void {
  const queue = (backlog[index] ??= []);
  try {
    if (queue.length === 0 && peers[index]!.trySend(bytes)) return;
  } catch (err) {
    if (!(err instanceof ChannelClosedError)) throw err;
    return; // that interpreter is gone; its requester's timeout answers
  }
  queue.push(bytes.slice());
  if (draining[index]) return;
  draining[index] = true;
  void (async () => {
    try {
      while (queue.length > 0) {
        await peers[index]!.send(queue[0]!);
        queue.shift();
      }
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) throw err;
      queue.length = 0;
    } finally {
      draining[index] = false;
    }
  })();
}

function expireWaiting(): void {
  const now = Date.now();
  for (const [id, entry] of waiting) {
    if (now - entry.since < SHARD_TIMEOUT_MS) continue;
    waiting.delete(id);
    entry.resolve([]); // missing parts read as errors
  }
}

// ---------------------------------------------------------------- the coordinator side

type Kind = "keyless" | "key" | "keys" | "mget" | "mset" | "broadcast";
interface Spec {
  name: string;
  arity: number;
  kind: Kind;
}
const SPECS: Spec[] = [
  { name: "ping", arity: -1, kind: "keyless" },
  { name: "echo", arity: 2, kind: "keyless" },
  { name: "set", arity: -3, kind: "key" },
  { name: "get", arity: 2, kind: "key" },
  { name: "del", arity: -2, kind: "keys" },
  { name: "exists", arity: -2, kind: "keys" },
  { name: "incr", arity: 2, kind: "key" },
  { name: "incrby", arity: 3, kind: "key" },
  { name: "decr", arity: 2, kind: "key" },
  { name: "decrby", arity: 3, kind: "key" },
  { name: "mget", arity: -2, kind: "mget" },
  { name: "mset", arity: -3, kind: "mset" },
  { name: "dbsize", arity: 1, kind: "broadcast" },
  { name: "flushall", arity: -1, kind: "broadcast" },
  { name: "flushdb", arity: -1, kind: "broadcast" },
  { name: "select", arity: 2, kind: "keyless" },
  { name: "quit", arity: -1, kind: "keyless" },
  { name: "hello", arity: -1, kind: "keyless" },
  { name: "client", arity: -2, kind: "keyless" },
  { name: "command", arity: -1, kind: "keyless" },
  { name: "config", arity: -2, kind: "keyless" },
  { name: "info", arity: -1, kind: "keyless" },
];
const BY_NAME = new Map<string, Spec>();
for (const spec of SPECS) {
  BY_NAME.set(spec.name, spec);
  BY_NAME.set(spec.name.toUpperCase(), spec);
}

/** A reply that waits for other shards: where its parts are, and how they make the reply. */
interface Deferred {
  refs: Array<[shard: number, index: number]>;
  combine(parts: Array<Uint8Array | undefined>, out: ReplyWriter): void;
}

/** One shard's share of a receive(): RESP commands, and how many. */
class Batch {
  readonly writer = new ReplyWriter();
  count = 0;
  constructor() {
    this.writer.length = REQUEST_HEADER;
  }

  /** Adds a command (its raw bytes, or its arguments re-encoded); returns its index in the batch. */
  add(command: Uint8Array | Uint8Array[]): number {
    const w = this.writer;
    if (command instanceof Uint8Array) w.raw(command);
    else {
      w.arrayHeader(command.length);
      for (const arg of command) w.bulk(arg);
    }
    return this.count++;
  }
}

const shared = new ReplyWriter();

function encodeText(text: string): Uint8Array {
  return Buffer.from(text, "latin1");
}

const UNAVAILABLE = encodeText("-ERR shard unavailable (its interpreter did not answer)\r\n");

/** The connection's state machine. */
export default function connect(info: ConnectionInfo) {
  const parser = new RespParser();
  const client = { id: info.id, name: "", address: `${info.remoteAddress}:${info.remotePort}` };
  let closing = false;

  return {
    receive(bytes: Uint8Array): Reply | Promise<Reply> {
      if (closing) return undefined;
      parser.push(bytes);
      const out = shared;
      out.length = 0;
      let pieces: Array<Uint8Array | Deferred> | undefined;
      let batches: Array<Batch | undefined> | undefined;
      const cut = (): void => {
        if (out.length > 0) pieces!.push(out.take());
      };
      const defer = (deferred: Deferred): void => {
        pieces ??= [];
        cut();
        pieces.push(deferred);
      };
      const batchFor = (shard: number): Batch => {
        batches ??= [];
        return (batches[shard] ??= new Batch());
      };
      for (;;) {
        let command: RespCommand | null | typeof NEED_MORE;
        try {
          command = parser.readCommand();
        } catch (err) {
          if (!(err instanceof RespError)) throw err;
          out.error(`ERR ${err.message}`);
          closing = true;
          break;
        }
        if (command === NEED_MORE) break;
        if (command === null) continue;
        if (dispatch(command, out, batchFor, defer, client)) {
          closing = true;
          break;
        }
      }
      if (!pieces) return closing ? { write: out.take(), close: true } : out.length > 0 ? out.view() : undefined;
      cut();
      const close = closing;
      const done = pieces;
      return exchange(batches!).then((parts) => {
        const final = new ReplyWriter();
        for (const piece of done) {
          if (piece instanceof Uint8Array) final.raw(piece);
          else piece.combine(piece.refs.map(([shard, index]) => parts[shard]?.[index]), final);
        }
        return { write: final.view(), close };
      });
    },
  };
}

/** Sends each shard its batch and waits for every answer: parts[shard][index]. */
function exchange(batches: Array<Batch | undefined>): Promise<Array<Uint8Array[] | undefined>> {
  const answers: Array<Promise<Uint8Array[]> | undefined> = batches.map((batch, shard) => {
    if (!batch) return undefined;
    const id = nextRequest++;
    const buf = batch.writer.buf;
    buf[0] = REQUEST;
    buf[1] = me & 0xff;
    buf[2] = (me >>> 8) & 0xff;
    putU32(buf, 3, epoch);
    putU32(buf, 7, id);
    putU32(buf, 11, batch.count);
    const answered = new Promise<Uint8Array[]>((resolve) => waiting.set(id, { resolve, since: Date.now() }));
    send(shard, batch.writer.view());
    return answered;
  });
  return Promise.all(answers);
}

interface Client {
  id: number;
  name: string;
  address: string;
}

/**
 * Runs or routes one command; its reply is written to `out` now or
 * deferred. Returns true when the connection closes after it (QUIT).
 */
function dispatch(
  command: RespCommand,
  out: ReplyWriter,
  batchFor: (shard: number) => Batch,
  defer: (deferred: Deferred) => void,
  client: Client,
): boolean {
  const given = command.text(0);
  const spec = BY_NAME.get(given) ?? BY_NAME.get(given.toLowerCase());
  if (!spec) {
    out.error(unknownCommand(given, command.args));
    return false;
  }
  const argc = command.count;
  if ((spec.arity > 0 && argc !== spec.arity) || (spec.arity < 0 && argc < -spec.arity)) {
    out.error(`ERR wrong number of arguments for '${spec.name}' command`);
    return false;
  }
  const name = spec.name;
  if (spec.kind === "key") {
    // The hot path (GET, SET, INCR...): no argument views, only the key's string.
    const shard = shards === 1 ? 0 : shardOfRange(command.buf, command.starts[1]!, command.ends[1]!, shards);
    if (shard === me) keyspace.execute(name, command, out);
    else {
      const index = batchFor(shard).add(command.bytes);
      defer({ refs: [[shard, index]], combine: (parts, w) => w.raw(parts[0] ?? UNAVAILABLE) });
    }
    return false;
  }
  const args = command.args;
  switch (spec.kind) {
    case "keyless":
      return keyless(name, args, out, client);
    case "keys": {
      // DEL / EXISTS: per shard, a count; the reply is their sum.
      const perShard = groupKeys(args, 1, 1);
      let local = 0;
      const refs: Array<[number, number]> = [];
      for (const [shard, keys] of perShard) {
        if (shard === me) {
          for (const key of keys) if (name === "del" ? keyspace.delete(latin1(key)) : keyspace.exists(latin1(key))) local++;
        } else refs.push([shard, batchFor(shard).add([args[0]!, ...keys])]);
      }
      if (refs.length === 0) out.integer(local);
      else defer({ refs, combine: (parts, w) => sumIntegers(parts, local, w) });
      return false;
    }
    case "mget": {
      // One GET per key elsewhere; the reply is the bulk strings in key order.
      const local: Array<Uint8Array | undefined> = [];
      const refs: Array<[number, number]> = [];
      const where: number[] = []; // per key: -1 local, else index in refs
      for (let i = 1; i < argc; i++) {
        const key = args[i]!;
        const shard = shards === 1 ? 0 : shardOf(key, shards);
        if (shard === me) {
          local[i] = keyspace.get(latin1(key));
          where[i] = -1;
        } else {
          where[i] = refs.length;
          refs.push([shard, batchFor(shard).add([GET, key])]);
        }
      }
      if (refs.length === 0) {
        out.arrayHeader(argc - 1);
        for (let i = 1; i < argc; i++) out.bulk(local[i]);
      } else {
        defer({
          refs,
          combine: (parts, w) => {
            w.arrayHeader(argc - 1);
            for (let i = 1; i < argc; i++) {
              if (where[i] === -1) w.bulk(local[i]);
              else w.raw(parts[where[i]!] ?? UNAVAILABLE);
            }
          },
        });
      }
      return false;
    }
    case "mset": {
      if ((argc - 1) % 2 !== 0) {
        out.error("ERR wrong number of arguments for 'mset' command");
        return false;
      }
      const perShard = groupKeys(args, 1, 2);
      const refs: Array<[number, number]> = [];
      for (const [shard, pairs] of perShard) {
        if (shard === me) {
          for (let k = 0; k < pairs.length; k += 2) keyspace.set(latin1(pairs[k]!), pairs[k + 1]!.slice(), 0);
        } else refs.push([shard, batchFor(shard).add([MSET, ...pairs])]);
      }
      if (refs.length === 0) out.simple("OK");
      else defer({ refs, combine: (parts, w) => firstErrorOr(parts, "+OK\r\n", w) });
      return false;
    }
    case "broadcast": {
      if ((name === "flushall" || name === "flushdb") && argc > 1) {
        const mode = latin1(args[1]!).toLowerCase();
        if (argc > 2 || (mode !== "async" && mode !== "sync")) {
          out.error("ERR syntax error");
          return false;
        }
      }
      if (shards === 1) {
        keyspace.execute(name, command, out);
        return false;
      }
      const refs: Array<[number, number]> = [];
      for (let shard = 0; shard < shards; shard++) if (shard !== me) refs.push([shard, batchFor(shard).add([args[0]!])]);
      if (name === "dbsize") {
        const local = keyspace.size;
        defer({ refs, combine: (parts, w) => sumIntegers(parts, local, w) });
      } else {
        keyspace.clear();
        defer({ refs, combine: (parts, w) => firstErrorOr(parts, "+OK\r\n", w) });
      }
      return false;
    }
  }
}

const GET = encodeText("GET");
const MSET = encodeText("MSET");

/** Arguments from `first` on, in groups of `width` (a key and its value), by the shard of the group's key, in order. */
function groupKeys(args: Uint8Array[], first: number, width: number): Map<number, Uint8Array[]> {
  const groups = new Map<number, Uint8Array[]>();
  for (let i = first; i + width - 1 < args.length; i += width) {
    const shard = shards === 1 ? 0 : shardOf(args[i]!, shards);
    let group = groups.get(shard);
    if (!group) groups.set(shard, (group = []));
    for (let k = 0; k < width; k++) group.push(args[i + k]!);
  }
  return groups;
}

function sumIntegers(parts: Array<Uint8Array | undefined>, start: number, out: ReplyWriter): void {
  let sum = start;
  for (const part of parts) {
    if (!part || part[0] !== 0x3a) return out.raw(part ?? UNAVAILABLE);
    sum += Number(latin1(part, 1, part.length - 2));
  }
  out.integer(sum);
}

function firstErrorOr(parts: Array<Uint8Array | undefined>, ok: string, out: ReplyWriter): void {
  for (const part of parts) if (!part || part[0] === 0x2d) return out.raw(part ?? UNAVAILABLE);
  out.ascii(ok);
}

function unknownCommand(given: string, args: Uint8Array[]): string {
  let rest = "";
  for (let i = 1; i < args.length && rest.length < 128; i++) rest += `'${latin1(args[i]!).slice(0, 128 - rest.length)}' `;
  return `ERR unknown command '${given.slice(0, 128)}', with args beginning with: ${rest}`;
}

// ---------------------------------------------------------------- commands without keys

function keyless(name: string, args: Uint8Array[], out: ReplyWriter, client: Client): boolean {
  const argc = args.length;
  switch (name) {
    case "ping":
      if (argc > 2) out.error("ERR wrong number of arguments for 'ping' command");
      else if (argc === 2) out.bulk(args[1]!);
      else out.simple("PONG");
      return false;
    case "echo":
      out.bulk(args[1]!);
      return false;
    case "quit":
      out.simple("OK");
      return true;
    case "select": {
      const index = parseInteger(args[1]!);
      if (index === undefined || index > 2147483647n || index < -2147483648n) out.error("ERR value is not an integer or out of range");
      else if (index !== 0n) out.error("ERR DB index is out of range");
      else out.simple("OK");
      return false;
    }
    case "hello":
      hello(args, out, client);
      return false;
    case "client":
      clientCommand(args, out, client);
      return false;
    case "command":
      commandCommand(args, out);
      return false;
    case "config":
      configCommand(args, out);
      return false;
    case "info":
      out.bulkText(`# Server\r\nredis_version:${VERSION}\r\nredis_mode:standalone\r\nprocess_id:${process.pid}\r\nshards:${shards}\r\n`);
      return false;
  }
  out.error(`ERR unknown command '${name}'`);
  return false;
}

function hello(args: Uint8Array[], out: ReplyWriter, client: Client): void {
  if (args.length >= 2) {
    const version = parseInteger(args[1]!);
    if (version === undefined) return out.error("ERR Protocol version is not an integer or out of range");
    if (version !== 2n) return out.error("NOPROTO unsupported protocol version");
    for (let i = 2; i < args.length; i++) {
      const option = latin1(args[i]!).toLowerCase();
      if (option === "auth" && i + 2 < args.length) i += 2;
      else if (option === "setname" && i + 1 < args.length) {
        const name = latin1(args[++i]!);
        if (/[\s]/.test(name)) return out.error("ERR Client names cannot contain spaces, newlines or special characters.");
        client.name = name;
      } else return out.error(`ERR Syntax error in HELLO option '${latin1(args[i]!)}'`);
    }
  }
  out.arrayHeader(14);
  out.bulkText("server");
  out.bulkText("redis");
  out.bulkText("version");
  out.bulkText(VERSION);
  out.bulkText("proto");
  out.integer(2);
  out.bulkText("id");
  out.integer(client.id);
  out.bulkText("mode");
  out.bulkText("standalone");
  out.bulkText("role");
  out.bulkText("master");
  out.bulkText("modules");
  out.arrayHeader(0);
}

function clientInfo(client: Client): string {
  return `id=${client.id} addr=${client.address} laddr=? fd=-1 name=${client.name} age=0 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|info user=default redir=-1 resp=2\n`;
}

function clientCommand(args: Uint8Array[], out: ReplyWriter, client: Client): void {
  const sub = latin1(args[1]!).toLowerCase();
  const argc = args.length;
  const arity = (n: number, exact: boolean): boolean => {
    if (exact ? argc === n : argc >= n) return true;
    out.error(`ERR wrong number of arguments for 'client|${sub}' command`);
    return false;
  };
  switch (sub) {
    case "setname": {
      if (!arity(3, true)) return;
      const name = latin1(args[2]!);
      for (let i = 0; i < name.length; i++) {
        const c = name.charCodeAt(i);
        if (c < 0x21 || c > 0x7e) return out.error("ERR Client names cannot contain spaces, newlines or special characters.");
      }
      client.name = name;
      out.simple("OK");
      return;
    }
    case "getname":
      if (!arity(2, true)) return;
      out.bulk(client.name === "" ? null : encodeText(client.name));
      return;
    case "id":
      if (!arity(2, true)) return;
      out.integer(client.id);
      return;
    case "info":
      if (!arity(2, true)) return;
      out.bulkText(clientInfo(client));
      return;
    case "list":
      if (!arity(2, false)) return;
      out.bulkText(clientInfo(client));
      return;
    case "setinfo":
      if (!arity(4, true)) return;
      out.simple("OK");
      return;
    default:
      out.error(`ERR unknown subcommand '${latin1(args[1]!).slice(0, 128)}'. Try CLIENT HELP.`);
  }
}

function commandInfo(spec: Spec, out: ReplyWriter): void {
  const keyed = spec.kind !== "keyless" && spec.kind !== "broadcast";
  out.arrayHeader(10);
  out.bulkText(spec.name);
  out.integer(spec.arity);
  out.arrayHeader(0); // flags
  out.integer(keyed ? 1 : 0);
  out.integer(keyed ? (spec.kind === "key" ? 1 : -1) : 0);
  out.integer(keyed ? (spec.kind === "mset" ? 2 : 1) : 0);
  out.arrayHeader(0); // ACL categories
  out.arrayHeader(0); // tips
  out.arrayHeader(0); // key specs
  out.arrayHeader(0); // subcommands
}

function commandCommand(args: Uint8Array[], out: ReplyWriter): void {
  if (args.length === 1) {
    out.arrayHeader(SPECS.length);
    for (const spec of SPECS) commandInfo(spec, out);
    return;
  }
  const sub = latin1(args[1]!).toLowerCase();
  switch (sub) {
    case "count":
      out.integer(SPECS.length);
      return;
    case "list":
      out.arrayHeader(SPECS.length);
      for (const spec of SPECS) out.bulkText(spec.name);
      return;
    case "info": {
      const names = args.length > 2 ? args.slice(2).map((a) => latin1(a).toLowerCase()) : SPECS.map((s) => s.name);
      out.arrayHeader(names.length);
      for (const n of names) {
        const spec = BY_NAME.get(n);
        if (spec) commandInfo(spec, out);
        else out.bulk(null);
      }
      return;
    }
    case "docs": {
      // A map (flattened in RESP2): name -> its docs; ours are minimal.
      const names = args.length > 2 ? args.slice(2).map((a) => latin1(a).toLowerCase()).filter((n) => BY_NAME.has(n)) : SPECS.map((s) => s.name);
      out.arrayHeader(names.length * 2);
      for (const n of names) {
        out.bulkText(n);
        out.arrayHeader(4);
        out.bulkText("summary");
        out.bulkText(`the ${n.toUpperCase()} command`);
        out.bulkText("group");
        out.bulkText(BY_NAME.get(n)!.kind === "keyless" ? "connection" : "string");
      }
      return;
    }
    default:
      out.error(`ERR unknown subcommand '${latin1(args[1]!).slice(0, 128)}'. Try COMMAND HELP.`);
  }
}

const CONFIG: Record<string, string> = { save: "", appendonly: "no", databases: "1", maxmemory: "0" };

function configCommand(args: Uint8Array[], out: ReplyWriter): void {
  const sub = latin1(args[1]!).toLowerCase();
  if (sub === "get") {
    if (args.length < 3) return out.error("ERR wrong number of arguments for 'config|get' command");
    const found: Array<[string, string]> = [];
    for (let i = 2; i < args.length; i++) {
      const pattern = latin1(args[i]!).toLowerCase();
      for (const [key, value] of Object.entries(CONFIG)) if (globMatch(pattern, key) && !found.some(([k]) => k === key)) found.push([key, value]);
    }
    out.arrayHeader(found.length * 2);
    for (const [key, value] of found) {
      out.bulkText(key);
      out.bulkText(value);
    }
    return;
  }
  if (sub === "set" || sub === "resetstat" || sub === "rewrite") return out.simple("OK");
  out.error(`ERR unknown subcommand '${latin1(args[1]!).slice(0, 128)}'. Try CONFIG HELP.`);
}

/** Glob with * and ? (enough for CONFIG GET). */
function globMatch(pattern: string, text: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
  return re.test(text);
}

/** The reply when a handler threw or its interpreter died. */
export function failed(): Uint8Array {
  return encodeText("-ERR internal error: the connection's interpreter failed\r\n");
}

/** The reply to commands that arrive while the interpreter is full (offload "reject"). */
export function overloaded(): Uint8Array {
  return encodeText("-ERR server overloaded, try again later\r\n");
}
