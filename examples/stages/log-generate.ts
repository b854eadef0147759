/**
 * Stage "generate" of examples/pipeline-logs.ts: writes chunk `index` of
 * the access log (about 4 MiB of lines, the same for the same seed and
 * index) and counts what the pipeline must later find in it.
 */
import { account, emptyReport, LATENCY_BUCKETS, type LogReport, ROUTES } from "./log-format.js";

export const CHUNK_TEXT_BYTES = 4 * 1024 * 1024;

function mulberry32(state: number): () => number {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const METHODS = ["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
const STATUSES = [...Array(850).fill(200), ...Array(40).fill(201), ...Array(20).fill(204), ...Array(10).fill(301), ...Array(30).fill(304), ...Array(10).fill(400), ...Array(5).fill(401), ...Array(5).fill(403), ...Array(15).fill(404), 500, 500, 500, 500, 500, 500, 502, 502, 503, 503] as number[];
const AGENTS = ['"Mozilla/5.0 (X11; Linux x86_64)"', '"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4)"', '"curl/8.5.0"', '"Go-http-client/2.0"', '"kube-probe/1.29"'];

export interface GeneratedChunk {
  text: Uint8Array;
  report: LogReport;
  histogram: Uint32Array;
}

export default function generate(job: { seed: number; index: number }): GeneratedChunk {
  const random = mulberry32(job.seed * 1_000_003 + job.index);
  const report = emptyReport();
  const histogram = new Uint32Array(LATENCY_BUCKETS);
  let time = Date.UTC(2024, 4, 1) + job.index * 3_600_000;
  const lines: string[] = [];
  let bytes = 0;
  while (bytes < CHUNK_TEXT_BYTES) {
    time += Math.floor(random() * 20);
    const route = Math.floor(random() * ROUTES.length);
    const path = ROUTES[route]!.replace(/:id/g, () => String(1 + Math.floor(random() * 99_999)));
    const status = STATUSES[Math.floor(random() * STATUSES.length)]!;
    const size = Math.floor(random() * 100_000);
    // Mostly fast, with a long tail: exponential with a 40 ms mean, capped under 10 s.
    const latencyUs = Math.min(9_999_999, Math.floor(-Math.log(1 - random()) * 40_000));
    const client = `10.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}.${Math.floor(random() * 256)}`;
    const method = METHODS[Math.floor(random() * METHODS.length)];
    const agent = AGENTS[Math.floor(random() * AGENTS.length)];
    const line = `${new Date(time).toISOString()} ${client} ${method} ${path} ${status} ${size} ${Math.floor(latencyUs / 1000)}.${String(latencyUs % 1000).padStart(3, "0")}ms ${agent}\n`;
    lines.push(line);
    bytes += line.length;
    report.lines++;
    account(report, histogram, route, status, size, latencyUs);
  }
  const text = Buffer.from(lines.join(""), "latin1");
  return { text: new Uint8Array(text.buffer, text.byteOffset, text.byteLength), report, histogram };
}
