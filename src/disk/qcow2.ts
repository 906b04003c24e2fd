/**
 * @module
 * Reads the qcow2 header fields ovm needs: the virtual size, and whether the
 * image names a backing file or an external data file. ovm always sets
 * backing files itself; an image that names its own could point at any host
 * file (`/etc/shadow`), so such a layer is refused before a VMM opens it.
 */
import { ValidationError } from "../errors.ts";

export interface Qcow2Info {
  version: number;
  virtualSize: number;
  clusterBits: number;
  backingFile?: string;
  externalDataFile: boolean;
}

const MAGIC = 0x514649fb; // "QFI\xfb"
const EXT_DATA_FILE = 0x44415441; // "DATA"
const INCOMPAT_EXTERNAL_DATA = 1n << 2n;

export function isQcow2Magic(head: Uint8Array): boolean {
  return head.byteLength >= 4 && new DataView(head.buffer, head.byteOffset).getUint32(0) === MAGIC;
}

/** Parses the header of a qcow2 image stored at `offset` inside `path`. */
export async function readQcow2Header(path: string, offset = 0): Promise<Qcow2Info> {
  using f = await Deno.open(path, { read: true });
  await f.seek(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(64 * 1024);
  let got = 0;
  while (got < buf.byteLength) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  const fail = (why: string): never => {
    throw new ValidationError(`"${path}" is not a usable qcow2 image: ${why}`);
  };
  if (got < 72) fail("it is shorter than a qcow2 header");
  const v = new DataView(buf.buffer, 0, got);
  if (v.getUint32(0) !== MAGIC) fail("the qcow2 magic is missing");
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) fail(`unsupported qcow2 version ${version}`);
  const backingOffset = v.getBigUint64(8);
  const backingSize = v.getUint32(16);
  const clusterBits = v.getUint32(20);
  const virtualSize = Number(v.getBigUint64(24));
  let backingFile: string | undefined;
  if (backingOffset !== 0n) {
    const o = Number(backingOffset);
    backingFile = o + backingSize <= got
      ? new TextDecoder().decode(buf.subarray(o, o + backingSize))
      : "(unreadable)";
  }
  let externalDataFile = false;
  if (version === 3) {
    if (got < 104) fail("the qcow2 v3 header is truncated");
    const incompat = v.getBigUint64(72);
    if (incompat & INCOMPAT_EXTERNAL_DATA) externalDataFile = true;
    const headerLength = v.getUint32(100);
    let p = headerLength;
    // Header extensions: {u32 type, u32 length, data padded to 8}; type 0 ends.
    for (let i = 0; i < 64 && p + 8 <= got; i++) {
      const type = v.getUint32(p);
      const len = v.getUint32(p + 4);
      if (type === 0) break;
      if (type === EXT_DATA_FILE) externalDataFile = true;
      p += 8 + Math.ceil(len / 8) * 8;
    }
  }
  return { version, virtualSize, clusterBits, backingFile, externalDataFile };
}

/** Refuses a layer that names its own backing file or an external data file. */
export function assertSelfContained(info: Qcow2Info, what: string): void {
  if (info.backingFile !== undefined) {
    throw new ValidationError(
      `${what} names its own backing file "${info.backingFile}"; refused`,
      {
        hint:
          "OVMS disk layers must not name backing files (ovm builds the chain from diskLayers); " +
          "strip the name with: qemu-img rebase -u -b '' FILE",
      },
    );
  }
  if (info.externalDataFile) {
    throw new ValidationError(`${what} uses an external data file; refused`, {
      hint: "OVMS disk layers must keep their data inside the image",
    });
  }
}
