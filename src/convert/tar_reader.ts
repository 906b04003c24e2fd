/**
 * @module
 * A streaming tar reader for container image layers: ustar, PAX extended
 * headers (`x`, and `g` read and ignored) and GNU long names (`L`, `K`).
 * Entries come out one at a time and each body must be consumed (or is
 * skipped) before the next header is read, so a layer is never held in memory.
 */
import { ValidationError } from "../errors.ts";

const BLOCK = 512;
/** PAX and GNU long-name records larger than this are refused (they are metadata, not data). */
const MAX_META_BYTES = 1 << 20;

export type TarEntryType =
  | "file"
  | "hardlink"
  | "symlink"
  | "chardev"
  | "blockdev"
  | "directory"
  | "fifo";

export interface TarHeader {
  /** The entry name as written in the archive (not normalised). */
  name: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  /** `SCHILY.xattr.*` PAX records, by attribute name; values are raw bytes. */
  xattrs: Map<string, Uint8Array>;
}

export interface TarEntry {
  header: TarHeader;
  /** The body in chunks; reading it is optional (unread bytes are skipped). */
  body(): AsyncGenerator<Uint8Array>;
}

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  #it: AsyncIterator<Uint8Array>;
  #buf: Uint8Array = new Uint8Array(0);
  #off = 0;
  #done = false;
  /** Bytes consumed so far (for error messages). */
  position = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#it = stream[Symbol.asyncIterator]();
  }

  async #fill(): Promise<boolean> {
    while (this.#off >= this.#buf.byteLength) {
      if (this.#done) return false;
      const r = await this.#it.next();
      if (r.done) {
        this.#done = true;
        return false;
      }
      this.#buf = r.value;
      this.#off = 0;
    }
    return true;
  }

  /** Up to `max` bytes (at least one), or null at the end. */
  async chunk(max: number): Promise<Uint8Array | null> {
    if (!(await this.#fill())) return null;
    const n = Math.min(max, this.#buf.byteLength - this.#off);
    const out = this.#buf.subarray(this.#off, this.#off + n);
    this.#off += n;
    this.position += n;
    return out;
  }

  /** Exactly `n` bytes, or null when the stream ends first. */
  async exact(n: number): Promise<Uint8Array | null> {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const c = await this.chunk(n - got);
      if (!c) return got === 0 ? null : truncated(this.position);
      out.set(c, got);
      got += c.byteLength;
    }
    return out;
  }

  async skip(n: number): Promise<void> {
    while (n > 0) {
      const c = await this.chunk(n);
      if (!c) truncated(this.position);
      n -= c.byteLength;
    }
  }

  async cancel(): Promise<void> {
    await this.#it.return?.();
  }
}

function truncated(pos: number): never {
  throw new ValidationError(`Layer tar is truncated at byte ${pos}`);
}

const dec = new TextDecoder();

function cstr(b: Uint8Array, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return dec.decode(z < 0 ? s : s.subarray(0, z));
}

/** Octal, or GNU base-256 when the high bit of the first byte is set. */
function num(b: Uint8Array, off: number, len: number, what: string): number {
  if (b[off] & 0x80) {
    let v = b[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i];
    if (!Number.isSafeInteger(v)) throw new ValidationError(`Tar header ${what} is too large`);
    return v;
  }
  const s = cstr(b, off, len).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new ValidationError(`Tar header ${what} "${s}" is not octal`);
  return parseInt(s, 8);
}

function checksumOk(b: Uint8Array): boolean {
  const want = num(b, 148, 8, "checksum");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : b[i];
  return sum === want;
}

/** Parses PAX records `LEN KEY=VALUE\n`; values stay bytes (xattrs may be binary). */
function parsePax(data: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  let off = 0;
  while (off < data.byteLength) {
    const sp = data.indexOf(0x20, off);
    if (sp < 0) break;
    const len = Number(dec.decode(data.subarray(off, sp)));
    if (!Number.isInteger(len) || len <= 0 || off + len > data.byteLength) {
      throw new ValidationError("Malformed PAX extended header record");
    }
    const rec = data.subarray(sp + 1, off + len - 1); // drop the trailing "\n"
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(dec.decode(rec.subarray(0, eq)), rec.slice(eq + 1));
    off += len;
  }
  return out;
}

const TYPES: Record<string, TarEntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "chardev",
  "4": "blockdev",
  "5": "directory",
  "6": "fifo",
};

/**
 * Iterates the entries of a tar stream. Unknown entry types are refused:
 * silently dropping them would make a different root filesystem than the
 * image's author built.
 */
export async function* readTar(stream: ReadableStream<Uint8Array>): AsyncGenerator<TarEntry> {
  const r = new ByteReader(stream);
  let pax = new Map<string, Uint8Array>();
  let longName: string | undefined;
  let longLink: string | undefined;
  try {
    while (true) {
      const h = await r.exact(BLOCK);
      // End of stream without the zero blocks is tolerated, like GNU tar. After them,
      // the rest (record padding) is read so a caller hashing the stream sees it all.
      if (!h) return;
      if (h.every((x) => x === 0)) {
        while (await r.chunk(1 << 20)) { /* drain */ }
        return;
      }
      if (!checksumOk(h)) {
        throw new ValidationError(`Bad tar header checksum at byte ${r.position - BLOCK}`, {
          hint: "the layer is not a tar archive, or it is corrupt",
        });
      }
      const flag = String.fromCharCode(h[156]);
      const size = num(h, 124, 12, "size");
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
        if (size > MAX_META_BYTES) {
          throw new ValidationError(`Tar metadata record of ${size} bytes is over the 1 MiB limit`);
        }
        const data = (await r.exact(padded)) ?? truncated(r.position);
        const body = data.subarray(0, size);
        if (flag === "x") pax = parsePax(body);
        else if (flag === "L") longName = cstr(body, 0, body.byteLength);
        else if (flag === "K") longLink = cstr(body, 0, body.byteLength);
        continue;
      }
      const type = TYPES[flag];
      if (!type) {
        throw new ValidationError(`Unsupported tar entry type "${flag}" for "${cstr(h, 0, 100)}"`);
      }
      const magic = cstr(h, 257, 6);
      const prefix = magic.startsWith("ustar") && h[345] !== 0 ? cstr(h, 345, 155) : "";
      let name = longName ?? (prefix ? `${prefix}/${cstr(h, 0, 100)}` : cstr(h, 0, 100));
      let linkname = longLink ?? cstr(h, 157, 100);
      const text = (k: string) => {
        const v = pax.get(k);
        return v === undefined ? undefined : dec.decode(v);
      };
      name = text("path") ?? name;
      linkname = text("linkpath") ?? linkname;
      const paxNum = (k: string, dflt: number) => {
        const v = text(k);
        if (v === undefined) return dflt;
        const n = Number(v);
        if (!Number.isFinite(n) || n < 0) throw new ValidationError(`Bad PAX ${k} "${v}"`);
        return n;
      };
      const bodySize = paxNum("size", size);
      const xattrs = new Map<string, Uint8Array>();
      for (const [k, v] of pax) {
        if (k.startsWith("SCHILY.xattr.")) xattrs.set(k.slice("SCHILY.xattr.".length), v);
      }
      const header: TarHeader = {
        name,
        type,
        mode: num(h, 100, 8, "mode") & 0o7777,
        uid: paxNum("uid", num(h, 108, 8, "uid")),
        gid: paxNum("gid", num(h, 116, 8, "gid")),
        size: type === "file" ? bodySize : 0,
        mtime: Math.floor(paxNum("mtime", num(h, 136, 12, "mtime"))),
        linkname,
        devmajor: num(h, 329, 8, "devmajor"),
        devminor: num(h, 337, 8, "devminor"),
        xattrs,
      };
      pax = new Map();
      longName = longLink = undefined;
      // Hardlinks and others may declare a size but carry no data we use; skip it all.
      const dataPadded = Math.ceil(bodySize / BLOCK) * BLOCK;
      let left = header.type === "file" ? bodySize : 0;
      const skipAfter = dataPadded - left;
      const body = async function* (): AsyncGenerator<Uint8Array> {
        while (left > 0) {
          const c = await r.chunk(Math.min(left, 1 << 20));
          if (!c) truncated(r.position);
          left -= c.byteLength;
          yield c;
        }
      };
      yield { header, body };
      if (left > 0) await r.skip(left);
      await r.skip(skipAfter);
    }
  } catch (e) {
    await r.cancel().catch(() => {});
    throw e;
  }
}
