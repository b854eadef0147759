/**
 * `npx interpreters lab [options]`: runs the buffer-semantics lab
 * (src/lab/) and prints the table (or JSON with --json); with --out DIR,
 * writes DIR/report.html, DIR/results.json and DIR/results.csv.
 *
 * A progress bar (cli-progress) goes to stderr when stderr is a terminal
 * and --json is not given; on a pipe nothing but the result is printed.
 * Exit codes: 0 done, 1 a check failed (a message unaccounted for, or
 * out of order), 2 bad options.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { SingleBar } from "cli-progress";
import { LabOptionError, type LabOptions, parseLabOptions, USAGE } from "../lab/options.js";
import { renderReport } from "../lab/report.js";
import { overflowSupported, type Progress, runLab } from "../lab/run.js";
import { formatReport, resultsToCsv, resultsToJson } from "../lab/table.js";

function progressFor(options: LabOptions): { progress: Progress; stop(): void } {
  const show = options.progress === "always" || (options.progress === "auto" && process.stderr.isTTY === true && !options.json);
  if (!show) return { progress: { update() {} }, stop() {} };
  const bar = new SingleBar(
    {
      format: "lab [{bar}] {percentage}% | {label} | ETA {eta_formatted}",
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
      fps: 10,
    },
    { format: "lab [{bar}] {percentage}% | {label} | ETA {eta_formatted}", barCompleteChar: "█", barIncompleteChar: "░" },
  );
  let started = false;
  return {
    progress: {
      update(done, total, label) {
        if (!started) {
          bar.start(total, 0, { label });
          started = true;
        }
        bar.update(done, { label });
      },
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** Runs `lab` with the words after it; returns the exit code. */
export async function labCommand(argv: string[]): Promise<number> {
  let options: LabOptions | "help";
  try {
    options = parseLabOptions(argv);
  } catch (err) {
    if (!(err instanceof LabOptionError)) throw err;
    process.stderr.write(`interpreters lab: ${err.message}\n`);
    return 2;
  }
  if (options === "help") {
    process.stdout.write(USAGE);
    return 0;
  }
  for (const policy of options.overflows) {
    if (!overflowSupported(policy)) {
      process.stderr.write(
        `interpreters lab: --overflow ${policy}: the channels of this version have no overflow policies yet (issue 13, "Channels, part 2", adds them); run with --overflow wait\n`,
      );
      return 2;
    }
  }
  const { progress, stop } = progressFor(options);
  let result;
  try {
    result = await runLab(options, progress);
  } finally {
    stop();
  }
  process.stdout.write(options.json ? `${resultsToJson(result)}\n` : `${formatReport(result)}\n`);
  if (options.out) {
    const dir = resolve(options.out);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "report.html"), await renderReport(result));
    writeFileSync(join(dir, "results.json"), `${resultsToJson(result)}\n`);
    writeFileSync(join(dir, "results.csv"), resultsToCsv(result));
    // The files are news, not the result: stderr, so a pipe still gets nothing but the result.
    process.stderr.write(`wrote ${join(dir, "report.html")}, results.json and results.csv\n`);
  }
  return result.rows.some((r) => r.lost !== 0 || r.outOfOrder !== 0) ? 1 : 0;
}
