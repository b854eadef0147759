/**
 * Progress for the pipeline examples: a cli-progress bar on a terminal
 * (cli-progress: the progress bar the project already uses), a plain line
 * every few seconds on a pipe, driven by the pipeline's 'stats' event.
 */
import cliProgress from "cli-progress";

export interface Progress {
  update(done: number, fields: Record<string, string>): void;
  stop(): void;
}

export function progress(label: string, total: number, unit: string): Progress {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} {bar} {percentage}% | {value}/{total} ${unit} | {detail}`, stream: process.stderr, hideCursor: true, etaBuffer: 20 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { detail: "starting" });
    return {
      update: (done, fields) => bar.update(done, { detail: Object.entries(fields).map(([k, v]) => `${k} ${v}`).join(" | ") }),
      stop: () => bar.stop(),
    };
  }
  let last = 0;
  return {
    update: (done, fields) => {
      if (Date.now() - last < 5000) return;
      last = Date.now();
      process.stderr.write(`${label}: ${done}/${total} ${unit} (${Math.round((done / total) * 100)}%) ${Object.entries(fields).map(([k, v]) => `${k} ${v}`).join(", ")}\n`);
    },
    stop: () => {},
  };
}
