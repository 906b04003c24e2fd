/**
 * @module
 * Disk-layer blobs: an uncompressed tar holding exactly one regular file, the
 * disk image (`disk.qcow2` or `disk.raw`). ovm writes the file's data at
 * offset 512, so a VMM can use the blob in place (QEMU: a `raw` node with
 * `offset`), with no second copy of a multi-GB disk. Sizes of 8 GiB and more
 * use the GNU base-256 size encoding, which keeps the data at offset 512.
 */
import { ValidationError } from "../errors.ts";

const BLOCK = 512;
const enc = new TextEncoder();

function writeOctal(buf: Uint8Array, off: number, len: number, value: number): void {
  const s = value.toString(8).padStart(len - 1, "0");
  buf.set(enc.encode(s), off);
  buf[off + len - 1] = 0;
}

/** A ustar header for one regular file, owner 0:0, mode 0644, mtime 0 (reproducible). */
export function tarHeader(name: string, size: number): Uint8Array {
  if (enc.encode(name).byteLength > 99) throw new RangeError(`tar entry name too long: ${name}`);
  const h = new Uint8Array(BLOCK);
  h.set(enc.encode(name), 0);
  writeOctal(h, 100, 8, 0o644);
  writeOctal(h, 108, 8, 0);
  writeOctal(h, 116, 8, 0);
  if (size < 8 ** 11) {
    writeOctal(h, 124, 12, size);
  } else {
    // GNU base-256: high bit set, big-endian binary in the remaining bytes.
    h[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      h[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  writeOctal(h, 136, 12, 0);
  h.fill(0x20, 148, 156);
  h[156] = 0x30; // '0' regular file
  h.set(enc.encode("ustar\u0000"), 257);
  h.set(enc.encode("00"), 263);
  let sum = 0;
  for (const b of h) sum += b;
  writeOctal(h, 148, 7, sum);
  h[155] = 0x20;
  return h;
}

/** The bytes that follow the data: padding to a block, then two zero blocks. */
export function tarTrailer(size: number): Uint8Array {
  const pad = (BLOCK - (size % BLOCK)) % BLOCK;
  return new Uint8Array(pad + 2 * BLOCK);
}

/** Streams `path` wrapped as a one-file tar without holding it in memory. */
export async function diskTarStream(
  path: string,
  entryName: string,
): Promise<{ stream: ReadableStream<Uint8Array>; size: number }> {
  const st = await Deno.stat(path);
  if (!st.isFile) throw new ValidationError(`"${path}" is not a regular file`);
  const header = tarHeader(entryName, st.size);
  const trailer = tarTrailer(st.size);
  const file = await Deno.open(path, { read: true });
  const reader = file.readable.getReader();
  let phase = 0;
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      if (phase === 0) {
        phase = 1;
        ctrl.enqueue(header);
        return;
      }
      if (phase === 1) {
        const { done, value } = await reader.read();
        if (!done) {
          ctrl.enqueue(value);
          return;
        }
        phase = 2;
        ctrl.enqueue(trailer);
        ctrl.close();
      }
    },
    async cancel(reason) {
      await reader.cancel(reason).catch(() => {});
    },
  });
  return { stream, size: BLOCK + st.size + trailer.byteLength };
}

export interface TarEntryLocation {
  name: string;
  /** Byte offset of the file data inside the blob. */
  offset: number;
  size: number;
}

function readOctal(h: Uint8Array, off: number, len: number): number {
  if (h[off] & 0x80) {
    let v = 0n;
    for (let i = off + 1; i < off + len; i++) v = (v << 8n) | BigInt(h[i]);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError("size too large");
    return Number(v);
  }
  const s = new TextDecoder().decode(h.subarray(off, off + len)).replace(/[\0 ]+$/, "").trim();
  if (!/^[0-7]*$/.test(s)) throw new RangeError(`bad octal field "${s}"`);
  return s ? parseInt(s, 8) : 0;
}

/** Locates the disk file inside a disk-layer blob; rejects anything but one regular file. */
export async function locateDiskInTar(path: string): Promise<TarEntryLocation> {
  using f = await Deno.open(path, { read: true });
  const st = await f.stat();
  const h = new Uint8Array(BLOCK);
  let got = 0;
  while (got < BLOCK) {
    const n = await f.read(h.subarray(got));
    if (n === null) break;
    got += n;
  }
  const fail = (why: string): never => {
    throw new ValidationError(`Disk layer "${path}" is not a valid OVMS disk tar: ${why}`, {
      hint: "disk layers are uncompressed tars holding one regular file (ovm pack writes them)",
    });
  };
  if (got < BLOCK) fail("it is shorter than one tar header");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
  let declared: number;
  try {
    declared = readOctal(h, 148, 8);
  } catch {
    return fail("the header checksum is not a number");
  }
  if (declared !== sum) fail("the header checksum does not match");
  const type = h[156];
  if (type !== 0x30 && type !== 0) {
    fail(`the first entry is not a regular file (type "${String.fromCharCode(type)}")`);
  }
  const nameEnd = h.indexOf(0);
  const name = new TextDecoder().decode(
    h.subarray(0, nameEnd < 0 || nameEnd > 100 ? 100 : nameEnd),
  );
  if (name.includes("/") || name === "" || name.startsWith(".")) {
    fail(`unexpected entry name "${name}"`);
  }
  let size: number;
  try {
    size = readOctal(h, 124, 12);
  } catch (e) {
    return fail((e as Error).message);
  }
  if (BLOCK + size > st.size) {
    fail(`the entry claims ${size} bytes but the blob is ${st.size} bytes`);
  }
  return { name, offset: BLOCK, size };
}
