/**
 * `node dist/bench/cost.js`: what one message costs the library's code, on
 * one thread, with no other thread in the way (no cache line moves between
 * cores, nobody waits): batches of 500 sendSync into an unbounded channel,
 * each followed by 500 recvSync, for the P1 and P2 payloads; beside them the codec alone
 * (encode, decode) and the copy a receiver must make (a 64-byte slice of
 * shared memory). A diagnostic for reading the P1/P2 rows of `npm run
 * bench`: a two-thread run cannot go faster than its slower side's cost here.
 */
import { createChannel } from "../src/index.js";
import { decode, Encoder } from "../src/serialization.js";
import { payloadFor, type PayloadKind } from "./lib/payload.js";
import { parseArgs } from "./lib/common.js";

const args = parseArgs();
const BATCH = 500;
/** Messages per round, a whole number of batches. */
const N = Math.ceil(Number(args.messages ?? 200_000) / BATCH) * BATCH;
const ROUNDS = Number(args.rounds ?? 8);

/** Median of the rounds after the first two (JIT warm-up), in ns per operation. */
function perOp(samples: number[]): string {
  const kept = samples.slice(2).sort((a, b) => a - b);
  return kept[kept.length >> 1]!.toFixed(0);
}

function channelCost(kind: PayloadKind): void {
  const payload = payloadFor(kind);
  const [rx, tx] = createChannel({ name: `cost-${kind}` });
  const send: number[] = [];
  const recv: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // Batches of BATCH messages in, then out: the ring stays in the cache, as
    // it does when a receiver keeps up; each side is timed on its own.
    let sendMs = 0;
    let recvMs = 0;
    for (let b = 0; b < N; b += BATCH) {
      let t = performance.now();
      for (let i = b; i < b + BATCH; i++) tx.sendSync(payload.make(i));
      sendMs += performance.now() - t;
      t = performance.now();
      for (let i = b; i < b + BATCH; i++) if (!payload.check(rx.recvSync(), i)) throw new Error(`${kind}: message ${i} is wrong`);
      recvMs += performance.now() - t;
    }
    send.push((sendMs * 1e6) / N);
    recv.push((recvMs * 1e6) / N);
  }
  console.log(`${kind}: sendSync ${perOp(send)} ns, recvSync ${perOp(recv)} ns per message (making and checking the payload included)`);
}

function codecCost(): void {
  const payload = payloadFor("object");
  const encoder = new Encoder();
  const length = encoder.encodeInPlace(payload.make(7));
  const bytes = encoder.scratch.slice(0, length);
  const enc: number[] = [];
  const dec: number[] = [];
  let sink = 0;
  for (let r = 0; r < ROUNDS; r++) {
    let t = performance.now();
    for (let i = 0; i < N; i++) sink += encoder.encodeInPlace(payload.make(i));
    enc.push(((performance.now() - t) * 1e6) / N);
    t = performance.now();
    for (let i = 0; i < N; i++) sink += (decode(bytes, undefined, length) as { id: number }).id;
    dec.push(((performance.now() - t) * 1e6) / N);
  }
  if (sink === 0) throw new Error("nothing encoded");
  console.log(`object codec alone: encode ${perOp(enc)} ns (making the object included), decode ${perOp(dec)} ns; ${length} bytes`);
}

function copyCost(): void {
  const data = new Uint8Array(new SharedArrayBuffer(1 << 20));
  const samples: number[] = [];
  let sink = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now();
    for (let i = 0; i < N; i++) sink += data.slice((i & 1023) * 128, (i & 1023) * 128 + 64).length;
    samples.push(((performance.now() - t) * 1e6) / N);
  }
  if (sink !== N * 64 * ROUNDS) throw new Error("bad copy");
  console.log(`a receiver's own copy of 64 bytes of shared memory (slice): ${perOp(samples)} ns`);
}

channelCost("bytes64");
channelCost("object");
codecCost();
copyCost();
