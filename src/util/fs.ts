/**
 * @module
 * Small filesystem helpers with the durability ovm needs: atomic writes
 * (temp file → fsync → rename → fsync of the directory) and existence checks.
 */
import { dirname, join } from "node:path";

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  using d = await Deno.open(dir, { read: true });
  await d.sync();
}

let tmpCounter = 0;
/** A name no other writer (process or task) in the same directory will pick. */
export function uniqueTempName(prefix = ".tmp"): string {
  const rand = crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${Deno.pid}-${++tmpCounter}-${rand[0].toString(36)}${rand[1].toString(36)}`;
}

/** Writes a whole file atomically: readers see the old content or the new, never a mix. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string,
  options: { mode?: number } = {},
): Promise<void> {
  const dir = dirname(path);
  const tmp = join(dir, uniqueTempName());
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  try {
    using f = await Deno.open(tmp, {
      write: true,
      createNew: true,
      mode: options.mode ?? 0o644,
    });
    let off = 0;
    while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
    await f.sync();
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await fsyncDir(dir);
}

export async function writeJsonAtomic(
  path: string,
  value: unknown,
  options: { mode?: number } = {},
): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n", options);
}

/** Reads a file, failing when it is larger than `maxBytes` (checked before reading). */
export async function readFileBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  using f = await Deno.open(path, { read: true });
  const st = await f.stat();
  if (st.size > maxBytes) {
    throw new RangeError(`"${path}" is ${st.size} bytes, over the limit of ${maxBytes} bytes`);
  }
  const buf = new Uint8Array(st.size);
  let off = 0;
  while (off < buf.byteLength) {
    const n = await f.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return buf.subarray(0, off);
}

/** The last `lines` lines of a text file (read from its last 64 KiB), or "" when unreadable. */
export async function tailLines(path: string, lines: number): Promise<string> {
  try {
    const st = await Deno.stat(path);
    using f = await Deno.open(path, { read: true });
    const start = Math.max(0, st.size - 64 * 1024);
    await f.seek(start, Deno.SeekMode.Start);
    const buf = new Uint8Array(st.size - start);
    let got = 0;
    while (got < buf.byteLength) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return new TextDecoder().decode(buf.subarray(0, got)).replaceAll("\r", "").trimEnd()
      .split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}
