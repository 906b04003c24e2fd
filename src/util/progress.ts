/**
 * @module
 * Transfer progress on stderr, in one of three shapes: bars (one per blob in
 * flight and an overall one with bytes, rate and ETA) on a terminal; one
 * quiet line per finished blob otherwise; or NDJSON events for programs
 * (`--progress=json`, and implied by `--json`). stdout is never touched.
 */
import { formatBytes } from "./size.ts";

/** The structural shape of transfer events (the copy engine's `CopyEvent`s fit it). */
export interface TransferEvent {
  type: string;
  digest?: string;
  size?: number;
  bytes?: number;
  offset?: number;
  status?: string;
  reason?: string;
  reference?: string;
}

export type ProgressMode = "auto" | "tty" | "plain" | "json" | "none";

export interface ProgressSink {
  raw(s: string): void;
  readonly stderrIsTerminal: boolean;
}

interface Active {
  size: number;
  bytes: number;
  offset: number;
}

const REDRAW_MS = 100;
const JSON_PROGRESS_MS = 250;
const MAX_BARS = 6;

export function parseProgressMode(v: string | undefined): ProgressMode | undefined {
  if (v === undefined) return undefined;
  if (["auto", "tty", "plain", "json", "none"].includes(v)) return v as ProgressMode;
  return undefined;
}

export class Progress {
  #sink: ProgressSink;
  #mode: Exclude<ProgressMode, "auto">;
  #active = new Map<string, Active>();
  #planned = new Set<string>();
  #total = 0;
  #doneBytes = 0;
  #startedAt = Date.now();
  #lastDraw = 0;
  #drawnLines = 0;
  #lastJson = new Map<string, number>();
  #now: () => number;

  constructor(sink: ProgressSink, mode: ProgressMode, options: { now?: () => number } = {}) {
    this.#sink = sink;
    this.#now = options.now ?? Date.now;
    this.#mode = mode === "auto" ? (sink.stderrIsTerminal ? "tty" : "plain") : mode;
  }

  get mode(): Exclude<ProgressMode, "auto"> {
    return this.#mode;
  }

  /** Feeds one event; bound so it can be passed as a callback. */
  event = (e: TransferEvent): void => {
    if (this.#mode === "none") return;
    if (this.#mode === "json") return this.#json(e);
    switch (e.type) {
      case "plan":
        if (e.digest && !this.#planned.has(e.digest)) {
          this.#planned.add(e.digest);
          this.#total += e.size ?? 0;
        }
        break;
      case "blob-start":
        this.#active.set(e.digest!, {
          size: e.size ?? 0,
          bytes: e.offset ?? 0,
          offset: e.offset ?? 0,
        });
        if (this.#mode === "plain" && e.offset) {
          this.#sink.raw(`resuming ${short(e.digest)} at ${formatBytes(e.offset)}\n`);
        }
        break;
      case "blob-progress": {
        const a = this.#active.get(e.digest!);
        if (a) a.bytes = e.bytes ?? a.bytes;
        break;
      }
      case "blob-retry":
        if (this.#mode === "plain") {
          this.#sink.raw(
            `retrying ${short(e.digest)} from ${formatBytes(e.offset ?? 0)}: ${e.reason}\n`,
          );
        }
        break;
      case "blob-done":
        this.#active.delete(e.digest!);
        this.#doneBytes += e.size ?? 0;
        if (this.#mode === "plain") {
          this.#sink.raw(
            `${(e.status ?? "done").padEnd(7)} ${short(e.digest)} ${formatBytes(e.size ?? 0)}\n`,
          );
        }
        break;
      case "manifest-done":
        if (this.#mode === "plain") {
          this.#sink.raw(`manifest ${short(e.digest)}${e.reference ? ` as ${e.reference}` : ""}\n`);
        }
        break;
    }
    if (this.#mode === "tty") this.#draw(false);
  };

  /** Draws the final state and leaves the cursor below it. */
  finish(): void {
    if (this.#mode === "tty") this.#draw(true);
  }

  #json(e: TransferEvent): void {
    if (e.type === "blob-progress") {
      const now = this.#now();
      const last = this.#lastJson.get(e.digest!) ?? 0;
      if (now - last < JSON_PROGRESS_MS && e.bytes !== e.size) return;
      this.#lastJson.set(e.digest!, now);
    }
    this.#sink.raw(JSON.stringify({ time: new Date(this.#now()).toISOString(), ...e }) + "\n");
  }

  #draw(final: boolean): void {
    const now = this.#now();
    // Nothing planned yet: no empty "0 B/0 B" frame.
    if (this.#total === 0 && this.#active.size === 0) return;
    if (!final && now - this.#lastDraw < REDRAW_MS) return;
    this.#lastDraw = now;
    const lines: string[] = [];
    let inflight = 0;
    let resumed = 0;
    for (const [digest, a] of this.#active) {
      inflight += a.bytes;
      resumed += a.offset;
      if (lines.length < MAX_BARS) {
        lines.push(
          `${short(digest)} ${bar(a.bytes, a.size, 24)} ${formatBytes(a.bytes)}/${
            formatBytes(a.size)
          }`,
        );
      }
    }
    if (this.#active.size > MAX_BARS) lines.push(`… and ${this.#active.size - MAX_BARS} more`);
    const done = this.#doneBytes + inflight;
    const secs = Math.max(0.001, (now - this.#startedAt) / 1000);
    const rate = Math.max(0, done - resumed) / secs;
    const eta = rate > 0 && this.#total > done
      ? ` ETA ${formatEta((this.#total - done) / rate)}`
      : "";
    lines.push(
      `total ${bar(done, this.#total, 24)} ${formatBytes(done)}/${formatBytes(this.#total)} ${
        formatBytes(rate)
      }/s${eta}`,
    );
    let s = this.#drawnLines > 0 ? `\x1b[${this.#drawnLines}A` : "";
    for (const l of lines) s += `\r\x1b[2K${l}\n`;
    // Clear lines left over from a taller previous frame.
    for (let i = lines.length; i < this.#drawnLines; i++) s += "\r\x1b[2K\n";
    const extra = Math.max(0, this.#drawnLines - lines.length);
    if (extra) s += `\x1b[${extra}A`;
    this.#drawnLines = lines.length;
    this.#sink.raw(s);
  }
}

function short(digest?: string): string {
  return digest ? digest.slice(7, 19) : "?";
}

function bar(n: number, total: number, width: number): string {
  const frac = total > 0 ? Math.min(1, n / total) : 1;
  const full = Math.round(frac * width);
  return `[${"=".repeat(full)}${" ".repeat(width - full)}] ${
    String(Math.floor(frac * 100)).padStart(3)
  }%`;
}

function formatEta(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 60) return `${Math.ceil(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.ceil(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}
