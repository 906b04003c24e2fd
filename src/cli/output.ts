/**
 * @module
 * What the CLI prints. With `--json` stdout carries exactly one JSON document
 * (or NDJSON for streams) and everything for people goes to stderr.
 */

const enc = new TextEncoder();

export interface Writer {
  writeSync(p: Uint8Array): number;
  isTerminal(): boolean;
}

export class Output {
  readonly stdout: Writer;
  readonly stderr: Writer;
  readonly json: boolean;
  readonly quiet: boolean;

  constructor(options: { stdout?: Writer; stderr?: Writer; json?: boolean; quiet?: boolean } = {}) {
    this.stdout = options.stdout ?? Deno.stdout;
    this.stderr = options.stderr ?? Deno.stderr;
    this.json = options.json ?? false;
    this.quiet = options.quiet ?? false;
  }

  #write(w: Writer, s: string): void {
    const b = enc.encode(s);
    let off = 0;
    while (off < b.byteLength) off += w.writeSync(b.subarray(off));
  }

  /** A line of the result for people (suppressed under --json). */
  line(s = ""): void {
    if (!this.json) this.#write(this.stdout, s + "\n");
  }

  /** The machine-readable result (only under --json). */
  result(value: unknown): void {
    if (this.json) this.#write(this.stdout, JSON.stringify(value, null, 2) + "\n");
  }

  /** One NDJSON record (streams: logs, progress events). */
  record(value: unknown): void {
    this.#write(this.stdout, JSON.stringify(value) + "\n");
  }

  /** Progress and notes for people, always on stderr. */
  info(s: string): void {
    if (!this.quiet) this.#write(this.stderr, s + "\n");
  }

  warn(s: string): void {
    this.#write(this.stderr, `warning: ${s}\n`);
  }

  /** Raw text on stderr (progress bars redraw with \r). */
  raw(s: string): void {
    this.#write(this.stderr, s);
  }

  get stderrIsTerminal(): boolean {
    try {
      return this.stderr.isTerminal();
    } catch {
      return false;
    }
  }

  /** Prints rows as aligned columns. */
  table(header: string[], rows: string[][]): void {
    const widths = header.map((h, i) =>
      Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
    );
    const fmt = (r: string[]) =>
      r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd();
    this.line(fmt(header));
    for (const r of rows) this.line(fmt(r));
  }
}
