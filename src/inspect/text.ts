/**
 * A snapshot as text, for `npx interpreters top`: deadlocks and possible
 * deadlocks first, then interpreters, channels with fill bars, the
 * wait-for edges and pipeline stages. Colours only when asked (a
 * terminal); names are shown with control characters made visible, so a
 * channel named with escape sequences cannot move the cursor or clear
 * the screen.
 */
import type { Snapshot } from "./types.js";

export interface TextOptions {
  /** ANSI colours (a terminal). */
  color: boolean;
  /** Columns available. */
  width: number;
  /** Shown in the title line (where the snapshot came from). */
  source?: string;
}

/** A name as printable text: control characters (C0, DEL, C1) become \xNN. */
export function printable(name: string): string {
  return name.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

function ms(value: number): string {
  return value < 1000 ? `${Math.round(value)} ms` : value < 60_000 ? `${(value / 1000).toFixed(1)} s` : `${Math.floor(value / 60_000)} min ${Math.round((value % 60_000) / 1000)} s`;
}

function count(n: number): string {
  return n < 10_000 ? String(n) : n < 10_000_000 ? `${(n / 1000).toFixed(1)}k` : `${(n / 1e6).toFixed(1)}M`;
}

function bytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(1)} MiB`;
}

/** A bar of `width` cells, `fraction` of them full. */
export function bar(fraction: number, width: number): string {
  const f = Math.max(0, Math.min(1, Number.isFinite(fraction) ? fraction : 0));
  const full = Math.round(f * width);
  return "█".repeat(full) + "░".repeat(width - full);
}

function table(headers: string[], rows: string[][], right: Set<number>, width: number): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => [...r[i]!].length)));
  const line = (cells: string[]) => {
    const text = cells.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
    return [...text].length > width ? [...text].slice(0, width - 1).join("") + "…" : text;
  };
  return [line(headers), ...rows.map(line)];
}

/** The frame `top` draws for `snapshot`. */
export function renderText(snapshot: Snapshot, options: TextOptions): string {
  const paint = (code: string, text: string) => (options.color ? `\x1b[${code}m${text}\x1b[0m` : text);
  const names = new Map(snapshot.interpreters.map((i) => [i.id, printable(i.name)]));
  const channelNames = new Map(snapshot.channels.map((c) => [c.id, printable(c.name)]));
  const who = (id: number) => (id === 0 ? "main" : `${id} ${names.get(id) ?? "?"}`);
  const party = (p: Snapshot["deadlocks"][number]["cycle"][number]) =>
    `${p.interpreter.id} "${printable(p.interpreter.name)}" ${p.op}${p.channel ? ` channel ${p.channel.id} "${printable(p.channel.name)}"` : ""}`;
  const out: string[] = [];
  const detection = snapshot.detection ? ` · deadlock detection: ${snapshot.detection.mode} after ${snapshot.detection.afterMs} ms` : "";
  out.push(paint("1", `interpreters top${options.source ? ` · ${options.source}` : ""} · ${new Date(snapshot.at).toLocaleTimeString()}${detection}`));
  if (snapshot.error) out.push(paint("33", `note: ${snapshot.error}`));
  for (const d of snapshot.deadlocks) out.push(paint("1;31", `DEADLOCK for ${ms(d.sinceMs)}: ${d.cycle.map(party).join(" → ")} → back to the first`));
  for (const d of snapshot.possibleDeadlocks) out.push(paint("33", `possible deadlock for ${ms(d.sinceMs)} (only an async wait keeps it open): ${d.cycle.map(party).join(" → ")}`));
  out.push("");

  out.push(paint("1", `INTERPRETERS (${snapshot.interpreters.length})`));
  out.push(
    ...table(
      ["id", "name", "state", "waits"],
      snapshot.interpreters.map((i) => [
        String(i.id),
        printable(i.name),
        i.state,
        (i.waiting ?? [])
          .map((w) => `${w.async ? "await " : ""}${w.op} ${w.lock !== undefined ? `lock ${w.lock}` : w.channel !== undefined ? `channel ${w.channel} "${channelNames.get(w.channel) ?? ""}"` : ""} for ${ms(w.sinceMs)}${w.timeout ? " (timeout)" : ""}`)
          .join("; ") || "—",
      ]),
      new Set([0]),
      options.width,
    ).map((l) => `  ${l}`),
  );
  out.push("");

  out.push(paint("1", `CHANNELS (${snapshot.channels.length})`));
  out.push(
    ...table(
      ["id", "name", "cap", "fill", "", "senders → receivers", "waiting", "sent/recv", "dropped", "state"],
      snapshot.channels.map((c) => {
        const fraction = c.capacity === Infinity ? c.bytes / Math.max(1, c.maxBufferBytes) : c.capacity === 0 ? (c.length > 0 ? 1 : 0) : c.length / c.capacity;
        const label = c.capacity === Infinity ? `${c.length} (${bytes(c.bytes)})` : c.capacity === 0 ? `${c.length} offered` : `${c.length}/${c.capacity}`;
        const waiting = [
          c.waitingSenders.length ? `send ${c.waitingSenders.map(who).join(",")}` : "",
          c.waitingReceivers.length ? `recv ${c.waitingReceivers.map(who).join(",")}` : "",
        ].filter(Boolean);
        return [
          String(c.id),
          printable(c.name) || "—",
          c.capacity === Infinity ? "∞" : String(c.capacity),
          bar(fraction, 12),
          label,
          `${c.senders.map(who).join(",") || "—"} → ${c.receivers.map(who).join(",") || "—"}`,
          waiting.join("; ") || "—",
          `${count(c.sent)}/${count(c.received)}`,
          String(c.dropped),
          c.corrupt ? `CORRUPT: ${printable(c.corrupt)}` : c.closed ? "closed" : "open",
        ];
      }),
      new Set([0, 2, 8]),
      options.width,
    ).map((l) => `  ${l}`),
  );
  out.push("");

  const dead = new Set(snapshot.deadlocks.flatMap((d) => d.cycle.map((p) => p.interpreter.id)));
  const maybe = new Set(snapshot.possibleDeadlocks.flatMap((d) => d.cycle.map((p) => p.interpreter.id)));
  out.push(paint("1", `WAIT-FOR (${snapshot.waitFor.length})`));
  if (snapshot.waitFor.length === 0) out.push("  nobody waits");
  for (const e of snapshot.waitFor) {
    const what = e.channel !== undefined ? `channel ${e.channel} "${channelNames.get(e.channel) ?? ""}"` : `lock ${e.lock}`;
    const inDeadlock = dead.has(e.from) && dead.has(e.to);
    const inPossible = maybe.has(e.from) && maybe.has(e.to);
    const text = `  ${who(e.from)} ${e.async ? "┄┄▶" : "──▶"} ${who(e.to)}   (${what})${inDeadlock ? "  DEADLOCK" : inPossible ? "  possible deadlock" : ""}`;
    out.push(inDeadlock ? paint("31", text) : inPossible ? paint("33", text) : text);
  }

  if (snapshot.pipelines.length > 0) {
    out.push("");
    for (const p of snapshot.pipelines) {
      out.push(paint("1", `PIPELINE ${printable(p.name)} · ${ms(p.elapsedMs)} · ${p.inFlight} in flight${p.bottleneck ? ` · bottleneck: ${printable(p.bottleneck)}` : ""}`));
      out.push(
        ...table(
          ["stage", "workers", "queued", "", "busy/bp/idle ms per s", "items/s", "in/out", "dropped", "failed"],
          p.stages.map((s) => [
            printable(s.name) + (p.bottleneck === s.name ? " *" : ""),
            String(s.workers),
            bar(s.capacity === Infinity ? 0 : s.capacity === 0 ? (s.queued > 0 ? 1 : 0) : s.queued / s.capacity, 10),
            `${s.queued}/${s.capacity === Infinity ? "∞" : s.capacity}`,
            `${Math.round(s.busyMsPerSecond)}/${Math.round(s.backpressuredMsPerSecond)}/${Math.round(s.idleMsPerSecond)}`,
            String(Math.round(s.itemsPerSecond)),
            `${count(s.in)}/${count(s.out)}`,
            String(s.dropped),
            String(s.failed),
          ]),
          new Set([1, 5, 7, 8]),
          options.width,
        ).map((l) => `  ${l}`),
      );
    }
  }
  return out.join("\n");
}
