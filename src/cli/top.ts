/**
 * `npx interpreters top URL [--once]`: the inspector's picture in a
 * terminal, from its JSON (`URL/snapshot.json` once, or `URL/events`
 * while it runs). On a terminal it redraws in place (at most 10 times a
 * second); on a pipe it prints plain frames, one after another. A lost
 * connection is retried every second, saying so.
 */
import { request } from "node:http";
import { parseArgs } from "node:util";
import { renderText } from "../inspect/text.js";
import { type Snapshot, snapshotFromJson } from "../inspect/types.js";

export const TOP_USAGE = `Usage: npx interpreters top URL [--once]

Shows what an inspector (serveInspector(), or INTERPRETERS_INSPECT=host:port)
serves at URL, e.g. http://127.0.0.1:7777/ : interpreters, channels with
their fill, who waits for whom, deadlocks and possible deadlocks.

Options:
  --once         print one frame and exit
  -h, --help     this text
`;

/** The inspector's base URL from what the user typed (a page URL or /snapshot.json works too). */
export function inspectorBase(text: string): URL {
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new Error(`top: ${JSON.stringify(text)} is not a URL; give the inspector's address, e.g. http://127.0.0.1:7777/`);
  }
  if (url.protocol !== "http:") throw new Error(`top: ${url.protocol} is not supported; the inspector speaks http`);
  url.pathname = url.pathname.replace(/(snapshot\.json|events)$/, "");
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  url.search = "";
  return url;
}

function fetchText(url: URL): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url.href} answered ${res.statusCode}: ${body.trim()}`))));
    });
    req.on("timeout", () => req.destroy(new Error(`${url.href} did not answer within 10 s`)));
    req.on("error", reject);
    req.end();
  });
}

/** Calls `onSnapshot` for every server-sent snapshot until `signal` aborts; rejects if the connection fails. */
function followEvents(url: URL, onSnapshot: (s: Snapshot) => void, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(new URL("events", url), { signal }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`${url.href}events answered ${res.statusCode}`));
        res.resume();
        return;
      }
      let buffer = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = event
            .split("\n")
            .filter((line) => line.startsWith("data: "))
            .map((line) => line.slice(6))
            .join("\n");
          if (data) onSnapshot(snapshotFromJson(data));
        }
      });
      res.on("end", () => reject(new Error("the inspector closed the connection")));
      res.on("error", reject);
    });
    req.on("error", (err) => (signal.aborted ? resolve() : reject(err)));
    req.end();
  });
}

/** Runs `top`; returns the exit code. */
export async function topCommand(argv: string[], out: NodeJS.WriteStream = process.stdout): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { once: { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  } catch (err) {
    process.stderr.write(`interpreters top: ${err instanceof Error ? err.message : String(err)}\n${TOP_USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    out.write(TOP_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    process.stderr.write(`interpreters top: give one URL (the inspector's address), got ${parsed.positionals.length}\n${TOP_USAGE}`);
    return 2;
  }
  let base: URL;
  try {
    base = inspectorBase(parsed.positionals[0]!);
  } catch (err) {
    process.stderr.write(`interpreters ${(err as Error).message}\n`);
    return 2;
  }
  const tty = out.isTTY === true;
  const frame = (s: Snapshot) => renderText(s, { color: tty, width: tty ? out.columns || 120 : 160, source: base.href });
  if (parsed.values.once) {
    try {
      out.write(frame(snapshotFromJson(await fetchText(new URL("snapshot.json", base)))) + "\n");
      return 0;
    } catch (err) {
      process.stderr.write(`interpreters top: cannot read ${base.href}snapshot.json: ${(err as Error).message}\n`);
      return 1;
    }
  }

  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  let lastDrawn = 0;
  let pending: Snapshot | undefined;
  let timer: NodeJS.Timeout | undefined;
  const draw = (s: Snapshot) => {
    if (tty) out.write(`\x1b[H\x1b[2J${frame(s)}\n`);
    else out.write(`${frame(s)}\n\n`);
    lastDrawn = performance.now();
  };
  // At most 10 frames a second on a terminal, 1 a second on a pipe.
  const minGap = tty ? 100 : 1000;
  const onSnapshot = (s: Snapshot) => {
    pending = s;
    const wait = lastDrawn + minGap - performance.now();
    if (wait <= 0) {
      draw(s);
      pending = undefined;
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = undefined;
        if (pending) draw(pending);
        pending = undefined;
      }, wait);
    }
  };
  if (tty) out.write("\x1b[?25l"); // hide the cursor while drawing
  try {
    while (!controller.signal.aborted) {
      try {
        await followEvents(base, onSnapshot, controller.signal);
      } catch (err) {
        if (controller.signal.aborted) break;
        process.stderr.write(`interpreters top: ${base.href}: ${(err as Error).message}; retrying in 1 s (Ctrl-C to stop)\n`);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  } finally {
    clearTimeout(timer);
    if (tty) out.write("\x1b[?25h");
    process.off("SIGINT", stop);
    process.off("SIGTERM", stop);
  }
  return 0;
}
