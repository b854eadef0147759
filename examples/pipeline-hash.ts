/**
 * A CPU-heavy pipeline and its speed-up over one thread: block numbers go
 * through "compress" (build 256 KiB of text, deflate it at level 6; one
 * worker per core) and "hash" (SHA-256 of the compressed bytes), in input
 * order. Then the same work runs inline in the main thread, and the two
 * lists of digests must be the same.
 *
 *   npm run build && node dist/examples/pipeline-hash.js [--blocks n] [--workers n]
 */
import { createHash } from "node:crypto";
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { pipeline, stage } from "interpreters";
import { progress } from "./pipeline-progress.js";
import { BLOCK_BYTES, compress, hash } from "./stages/hash-blocks.js";

const { values: options } = parseArgs({
  options: {
    blocks: { type: "string", default: "400" },
    workers: { type: "string", default: String(availableParallelism()) },
  },
});
const blocks = Number(options.blocks);
const workers = Math.max(1, Number(options.workers));
const module = new URL("./stages/hash-blocks.js", import.meta.url);

function* numbers(): Generator<number> {
  for (let i = 0; i < blocks; i++) yield i;
}

// ---- in a pipeline ----
const started = performance.now();
const hashing = pipeline<{ index: number; bytes: number; digest: string }>({
  name: "hash",
  source: numbers(),
  stages: [stage(module, { export: "compress", name: "compress", workers }), stage(module, { export: "hash", name: "hash" })],
});
const bar = progress("pipeline", blocks, "blocks");
hashing.on("stats", (stats) => bar.update(stats.stages[1]!.out, { "blocks/s": String(stats.stages[1]!.itemsPerSecond), bottleneck: stats.bottleneck ?? "none" }));
const parallel: string[] = [];
let compressedBytes = 0;
for await (const result of hashing) {
  if (result.index !== parallel.length) throw new Error(`block ${result.index} came out in place of ${parallel.length}`);
  parallel.push(result.digest);
  compressedBytes += result.bytes;
}
const stats = await hashing.done;
bar.stop();
const pipelineSeconds = (performance.now() - started) / 1000;

// ---- in one thread ----
const one = progress("one thread", blocks, "blocks");
const inlineStarted = performance.now();
const inline: string[] = [];
for (let i = 0; i < blocks; i++) {
  inline.push(hash(compress(i)).digest);
  if (i % 20 === 0) one.update(i, {});
}
one.stop();
const inlineSeconds = (performance.now() - inlineStarted) / 1000;

const mib = (blocks * BLOCK_BYTES) / 1024 / 1024;
console.log(`${blocks} blocks (${mib.toFixed(0)} MiB of text, ${(compressedBytes / 1024 / 1024).toFixed(1)} MiB deflated)`);
console.log(`  pipeline (compress x${workers}, hash x1): ${pipelineSeconds.toFixed(2)} s (${(mib / pipelineSeconds).toFixed(1)} MiB/s), interpreters' start included`);
console.log(`  one thread:                  ${inlineSeconds.toFixed(2)} s (${(mib / inlineSeconds).toFixed(1)} MiB/s)`);
console.log(`  speed-up: ${(inlineSeconds / pipelineSeconds).toFixed(2)}x on ${availableParallelism()} cores`);
for (const s of stats.stages) console.log(`  ${s.name.padEnd(9)} busy ${s.busyMsPerSecond} / back-pressured ${s.backpressuredMsPerSecond} / idle ${s.idleMsPerSecond} ms per second; p50 ${s.serviceUs.p50} µs per block`);
const digestOf = (list: string[]): string => createHash("sha256").update(list.join("\n")).digest("hex").slice(0, 16);
if (digestOf(parallel) === digestOf(inline)) console.log(`output checked: OK (the same ${blocks} digests in the same order as one thread; digest of digests ${digestOf(inline)})`);
else {
  console.log("output checked: WRONG (the pipeline's digests differ from one thread's)");
  process.exitCode = 1;
}
