/**
 * @module
 * The RAM snapshot blob (`application/vnd.ovms.ramsnap.v1+lz4`): a sequence
 * of standard LZ4 frames, so `lz4 -d` decodes it to the raw sections
 * (guest memory, then device state), plus two skippable frames that `lz4 -d`
 * ignores: a header (format, sections, restore metadata) first and a frame
 * index last. Every chunk is an independent frame, so compression and
 * decompression run in parallel and the index gives random access.
 *
 * Spec: `spec/ovms-v0.1.md`, section "RAM snapshot blob".
 */
import { Buffer } from "node:buffer";
import { compressFrame, decompressFrame } from "lz4-napi";
import { ValidationError } from "../errors.ts";
import {
  closeFd,
  dataRanges,
  type Lz4Library,
  lz4Library,
  MADV_SEQUENTIAL,
  MAP_PRIVATE,
  type Mapping,
  mmap,
  openFd,
  PROT_READ,
} from "../../ffi/mod.ts";

export const RAMSNAP_FORMAT = "ovms.ramsnap";
export const RAMSNAP_VERSION = 1;
/** The header `format` of a RAM diff layer (`src/snapshot/ramdiff.ts`), same framing. */
export const RAMDIFF_FORMAT = "ovms.ramdiff";
export const DEFAULT_CHUNK = 4 << 20;

const SKIPPABLE_HEADER = 0x184d2a50;
const SKIPPABLE_INDEX = 0x184d2a5e;
const LZ4_MAGIC = 0x184d2204;
const TRAILER_TAG = 0x58495352; // "RSIX" little-endian
const MAX_HEADER_BYTES = 1 << 20;
const MAX_INDEX_BYTES = 64 << 20;

export interface SectionSource {
  name: string;
  path: string;
  size: number;
}

export interface RamsnapHeader {
  format: typeof RAMSNAP_FORMAT | typeof RAMDIFF_FORMAT;
  version: number;
  chunkSize: number;
  sections: { name: string; size: number }[];
  metadata: Record<string, unknown>;
  /** Diff layers only: the digest of the layer below. */
  base?: string;
  /** Diff layers only: the guest memory size the layer applies to. */
  memoryBytes?: number;
  /** Diff layers only: the granularity of its ranges (4096). */
  pageSize?: number;
}

/** One frame: section index, offset in the section, offset in the blob, compressed length, length, all-zero. */
export type FrameEntry = [number, number, number, number, number, 0 | 1];

export interface RamsnapIndex {
  frames: FrameEntry[];
}

function skippable(magic: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + payload.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, magic, true);
  v.setUint32(4, payload.byteLength, true);
  out.set(payload, 8);
  return out;
}

function isAllZero(b: Uint8Array): boolean {
  const words = b.byteLength >>> 3;
  const w = new BigUint64Array(b.buffer, b.byteOffset, words);
  for (let i = 0; i < words; i++) if (w[i] !== 0n) return false;
  for (let i = words << 3; i < b.byteLength; i++) if (b[i] !== 0) return false;
  return true;
}

async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let got = 0;
  while (got < buf.byteLength) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return got;
}

/**
 * Encodes sections into a ramsnap stream with `concurrency` chunks compressed
 * at once; memory stays bounded by about `2 × concurrency × chunkSize`.
 */
export function encodeRamsnap(
  sections: SectionSource[],
  options: {
    metadata?: Record<string, unknown>;
    chunkSize?: number;
    concurrency?: number;
    signal?: AbortSignal;
    /** A diff layer's header fields (`ramdiff.ts` sets them). */
    diff?: { base: string; memoryBytes: number; pageSize: number };
  } = {},
): ReadableStream<Uint8Array> {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
  const concurrency = Math.max(1, options.concurrency ?? navigator.hardwareConcurrency ?? 2);
  const header: RamsnapHeader = {
    format: options.diff ? RAMDIFF_FORMAT : RAMSNAP_FORMAT,
    version: RAMSNAP_VERSION,
    chunkSize,
    ...(options.diff ?? {}),
    sections: sections.map((s) => ({ name: s.name, size: s.size })),
    metadata: options.metadata ?? {},
  };
  const frames: FrameEntry[] = [];
  let blobOffset = 0;

  async function* produce(): AsyncGenerator<Uint8Array> {
    const h = skippable(SKIPPABLE_HEADER, new TextEncoder().encode(JSON.stringify(header)));
    blobOffset += h.byteLength;
    yield h;
    // One compressed all-zero frame per length, reused for every hole.
    const zeroFrames = new Map<number, Promise<Uint8Array>>();
    const zeroFrame = (len: number) => {
      let p = zeroFrames.get(len);
      if (!p) {
        p = compressFrame(Buffer.alloc(len)).then((b) => new Uint8Array(b));
        zeroFrames.set(len, p);
      }
      return p;
    };
    for (let si = 0; si < sections.length; si++) {
      const s = sections[si];
      using f = await Deno.open(s.path, { read: true });
      // Holes (untouched guest RAM on tmpfs) are never read: their frames are the zero frame.
      let ranges: [number, number][];
      try {
        ranges = dataRanges(s.path, 0, s.size);
      } catch {
        ranges = [[0, s.size]];
      }
      let ri = 0;
      const hasData = (a: number, b: number) => {
        while (ri < ranges.length && ranges[ri][1] <= a) ri++;
        return ri < ranges.length && ranges[ri][0] < b;
      };
      let offset = 0;
      const inflight: Promise<{ frame: Uint8Array; len: number; zero: boolean; at: number }>[] = [];
      while (offset < s.size || inflight.length > 0) {
        options.signal?.throwIfAborted();
        // Chunks are read in order, one at a time; compression runs `concurrency` wide.
        while (offset < s.size && inflight.length < concurrency) {
          const at = offset;
          const len = Math.min(chunkSize, s.size - offset);
          offset += len;
          if (!hasData(at, at + len)) {
            inflight.push(zeroFrame(len).then((frame) => ({ frame, len, zero: true, at })));
            continue;
          }
          const buf = new Uint8Array(len);
          await f.seek(at, Deno.SeekMode.Start);
          const got = await readFull(f, buf);
          if (got !== len) {
            throw new ValidationError(
              `Section "${s.name}" (${s.path}) ended at ${at + got} bytes, expected ${s.size}`,
            );
          }
          const zero = isAllZero(buf);
          inflight.push(
            compressFrame(Buffer.from(buf.buffer, 0, len)).then((b) => ({
              frame: new Uint8Array(b),
              len,
              zero,
              at,
            })),
          );
        }
        const r = await inflight.shift()!;
        frames.push([si, r.at, blobOffset, r.frame.byteLength, r.len, r.zero ? 1 : 0]);
        blobOffset += r.frame.byteLength;
        yield r.frame;
      }
    }
    const json = new TextEncoder().encode(JSON.stringify({ frames } satisfies RamsnapIndex));
    const payload = new Uint8Array(json.byteLength + 8);
    payload.set(json);
    const v = new DataView(payload.buffer);
    v.setUint32(json.byteLength, json.byteLength, true);
    v.setUint32(json.byteLength + 4, TRAILER_TAG, true);
    yield skippable(SKIPPABLE_INDEX, payload);
  }

  const it = produce();
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const { done, value } = await it.next();
      if (done) ctrl.close();
      else ctrl.enqueue(value);
    },
    async cancel() {
      await it.return(undefined);
    },
  });
}

function bad(path: string, why: string): never {
  throw new ValidationError(`RAM snapshot "${path}" is invalid: ${why}`, {
    hint: "the blob is truncated or corrupt; pull or create the snapshot again",
  });
}

/**
 * Reads and checks the header and the frame index of a ramsnap blob (or, with
 * `format: RAMDIFF_FORMAT`, of a RAM diff layer: the same framing).
 */
export async function readRamsnapLayout(
  path: string,
  options: { format?: typeof RAMSNAP_FORMAT | typeof RAMDIFF_FORMAT } = {},
): Promise<{ header: RamsnapHeader; index: RamsnapIndex; size: number }> {
  const format = options.format ?? RAMSNAP_FORMAT;
  using f = await Deno.open(path, { read: true });
  const size = (await f.stat()).size;
  if (size < 16) bad(path, `it is ${size} bytes, shorter than any snapshot`);
  const head = new Uint8Array(8);
  await readFull(f, head);
  const hv = new DataView(head.buffer);
  if (hv.getUint32(0, true) !== SKIPPABLE_HEADER) bad(path, "the header frame is missing");
  const hlen = hv.getUint32(4, true);
  if (hlen > MAX_HEADER_BYTES || 8 + hlen > size) bad(path, `the header claims ${hlen} bytes`);
  const hjson = new Uint8Array(hlen);
  await readFull(f, hjson);
  let header: RamsnapHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(hjson));
  } catch {
    return bad(path, "the header is not JSON");
  }
  if (header?.format !== format || header.version !== RAMSNAP_VERSION) {
    const hint = header?.format === RAMDIFF_FORMAT
      ? " (a RAM diff layer, not a full snapshot)"
      : header?.format === RAMSNAP_FORMAT
      ? " (a full RAM snapshot, not a diff layer)"
      : "";
    bad(path, `unknown format "${header?.format}" version ${header?.version}${hint}`);
  }
  if (
    !Array.isArray(header.sections) ||
    header.sections.some((s) =>
      typeof s.name !== "string" || !Number.isSafeInteger(s.size) || s.size < 0
    ) ||
    !Number.isSafeInteger(header.chunkSize) || header.chunkSize <= 0 || header.chunkSize > 64 << 20
  ) {
    bad(path, "the header's sections or chunk size are malformed");
  }
  const tail = new Uint8Array(8);
  await f.seek(size - 8, Deno.SeekMode.Start);
  await readFull(f, tail);
  const tv = new DataView(tail.buffer);
  if (tv.getUint32(4, true) !== TRAILER_TAG) {
    bad(path, "the frame index trailer is missing (truncated?)");
  }
  const ilen = tv.getUint32(0, true);
  const istart = size - 8 - ilen - 8;
  if (ilen > MAX_INDEX_BYTES || istart < 8 + hlen) {
    bad(path, `the frame index claims ${ilen} bytes`);
  }
  await f.seek(istart, Deno.SeekMode.Start);
  const ihead = new Uint8Array(8);
  await readFull(f, ihead);
  const iv = new DataView(ihead.buffer);
  if (iv.getUint32(0, true) !== SKIPPABLE_INDEX || iv.getUint32(4, true) !== ilen + 8) {
    bad(path, "the frame index header does not match its trailer");
  }
  const ijson = new Uint8Array(ilen);
  await readFull(f, ijson);
  let index: RamsnapIndex;
  try {
    index = JSON.parse(new TextDecoder().decode(ijson));
  } catch {
    return bad(path, "the frame index is not JSON");
  }
  // Frames must tile each section exactly, in order, and lie between header and index.
  const expectedAt = header.sections.map(() => 0);
  let blobAt = 8 + hlen;
  for (const fr of index.frames ?? []) {
    if (
      !Array.isArray(fr) || fr.length !== 6 || !fr.every((x) => Number.isSafeInteger(x) && x >= 0)
    ) {
      bad(path, "a frame index entry is malformed");
    }
    const [si, at, coff, clen, len] = fr;
    if (si >= header.sections.length || at !== expectedAt[si] || coff !== blobAt) {
      bad(path, "the frame index does not tile the sections in order");
    }
    if (len === 0 || len > header.chunkSize || clen === 0) {
      bad(path, "a frame has an impossible size");
    }
    expectedAt[si] += len;
    blobAt += clen;
  }
  if (blobAt !== istart) bad(path, "the frames do not end where the index starts");
  header.sections.forEach((s, i) => {
    if (expectedAt[i] !== s.size) bad(path, `section "${s.name}" is not fully covered by frames`);
  });
  return { header, index, size };
}

export interface Lz4Block {
  /** Offset of the block's data within the frame. */
  offset: number;
  size: number;
  /** Stored uncompressed. */
  raw: boolean;
}

/** Walks an LZ4 frame's block headers (no decompression). */
export function lz4FrameBlocks(frame: Uint8Array): { blocks: Lz4Block[]; blockMax: number } {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  if (frame.byteLength < 7 || v.getUint32(0, true) !== LZ4_MAGIC) {
    throw new RangeError("not an LZ4 frame");
  }
  const flg = frame[4];
  const bd = frame[5];
  if ((flg >> 6) !== 1) throw new RangeError("unsupported LZ4 frame version");
  if ((flg & 0x20) === 0) {
    throw new RangeError("LZ4 frame with linked blocks (ovm writes independent blocks)");
  }
  const hasBlockChecksum = (flg & 0x10) !== 0;
  const hasContentSize = (flg & 0x08) !== 0;
  const hasDictId = (flg & 0x01) !== 0;
  const blockMax = [0, 0, 0, 0, 64 << 10, 256 << 10, 1 << 20, 4 << 20][(bd >> 4) & 7];
  if (!blockMax) throw new RangeError("bad LZ4 block size");
  let p = 6 + (hasContentSize ? 8 : 0) + (hasDictId ? 4 : 0) + 1;
  const blocks: Lz4Block[] = [];
  while (true) {
    if (p + 4 > frame.byteLength) throw new RangeError("truncated LZ4 frame");
    const word = v.getUint32(p, true);
    p += 4;
    if (word === 0) break;
    const size = word & 0x7fffffff;
    if (size > blockMax) throw new RangeError("LZ4 block larger than its maximum");
    if (p + size > frame.byteLength) throw new RangeError("truncated LZ4 frame");
    blocks.push({ offset: p, size, raw: (word >>> 31) === 1 });
    p += size + (hasBlockChecksum ? 4 : 0);
  }
  return { blocks, blockMax };
}

/**
 * The most bytes an LZ4 frame can decode to, from its block headers alone —
 * checked before decompressing, so an lz4 bomb never reaches memory.
 */
export function lz4FrameBound(frame: Uint8Array): number {
  const { blocks, blockMax } = lz4FrameBlocks(frame);
  return blocks.length * blockMax;
}

export type DecodeEngine = "liblz4" | "lz4-napi";

/**
 * Decodes a ramsnap blob into one file per section. Refuses a blob whose
 * sections exceed `limits` (the declared guest memory, say) before writing,
 * and deletes every output file when anything fails. Uses liblz4 through FFI
 * (decoding straight into the mapped output) when it loads, else lz4-napi.
 */
export async function decodeRamsnap(
  path: string,
  targets: Record<string, string>,
  options: {
    limits?: Record<string, number>;
    concurrency?: number;
    signal?: AbortSignal;
    engine?: DecodeEngine;
    format?: typeof RAMSNAP_FORMAT | typeof RAMDIFF_FORMAT;
  } = {},
): Promise<RamsnapHeader & { engine: DecodeEngine }> {
  const layout = await readRamsnapLayout(path, { format: options.format });
  const { header } = layout;
  for (const s of header.sections) {
    const limit = options.limits?.[s.name];
    if (limit !== undefined && s.size > limit) {
      bad(path, `section "${s.name}" declares ${s.size} bytes, over the limit of ${limit}`);
    }
    if (!(s.name in targets)) bad(path, `no target for section "${s.name}"`);
  }
  const lib = options.engine === "lz4-napi" ? undefined : lz4Library();
  if (options.engine === "liblz4" && !lib) {
    throw new ValidationError("liblz4.so.1 cannot be loaded", { hint: "install liblz4-1" });
  }
  const created: string[] = [];
  try {
    for (const s of header.sections) {
      using out = await Deno.open(targets[s.name], { write: true, create: true, truncate: true });
      created.push(targets[s.name]);
      await out.truncate(s.size); // sparse: all-zero frames need no write
    }
    const work = layout.index.frames.filter((fr) => fr[5] === 0);
    const concurrency = Math.max(1, options.concurrency ?? navigator.hardwareConcurrency ?? 2);
    if (lib) await decodeNative(lib, path, layout, targets, work, concurrency, options.signal);
    else await decodeBuffered(path, header, targets, work, concurrency, options.signal);
    return { ...header, engine: lib ? "liblz4" : "lz4-napi" };
  } catch (e) {
    for (const p of created) await Deno.remove(p).catch(() => {});
    throw e;
  }
}

function frameBlocksOrBad(path: string, frame: Uint8Array, coff: number, chunkSize: number) {
  let parsed;
  try {
    parsed = lz4FrameBlocks(frame);
  } catch (e) {
    return bad(path, `frame at ${coff}: ${(e as Error).message}`);
  }
  const bound = parsed.blocks.length * parsed.blockMax;
  if (bound > chunkSize + parsed.blockMax) {
    bad(path, `frame at ${coff} could expand to ${bound} bytes`);
  }
  return parsed.blocks;
}

/** liblz4 path: the blob is mapped; blocks decode from it into a per-worker buffer. */
async function decodeNative(
  lib: Lz4Library,
  path: string,
  layout: { header: RamsnapHeader; size: number },
  targets: Record<string, string>,
  work: FrameEntry[],
  concurrency: number,
  signal?: AbortSignal,
): Promise<void> {
  const { header } = layout;
  const srcFd = openFd(path);
  let mapping: Mapping;
  try {
    mapping = mmap(srcFd, layout.size, { prot: PROT_READ, flags: MAP_PRIVATE });
  } finally {
    closeFd(srcFd);
  }
  using src = mapping;
  src.advise(MADV_SEQUENTIAL);
  {
    let next = 0;
    // Each worker decodes into its own reused buffer and writes it with one
    // write(), so all-zero chunks stay holes in the sparse output.
    const worker = async () => {
      const buf = new Uint8Array(header.chunkSize);
      const bufPtr = Deno.UnsafePointer.of(buf)!;
      const files = new Map<number, Deno.FsFile>();
      try {
        while (next < work.length) {
          signal?.throwIfAborted();
          const [si, at, coff, clen, len] = work[next++];
          const framePtr = Deno.UnsafePointer.offset(src.pointer, coff)!;
          const frame = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(framePtr, clen));
          const blocks = frameBlocksOrBad(path, frame, coff, header.chunkSize);
          let off = 0;
          for (const b of blocks) {
            const room = len - off;
            if (b.raw) {
              if (b.size > room) bad(path, `frame at ${coff} decodes to more than ${len} bytes`);
              buf.set(frame.subarray(b.offset, b.offset + b.size), off);
              off += b.size;
            } else {
              try {
                off += await lib.decompressBlock(
                  Deno.UnsafePointer.offset(framePtr, b.offset)!,
                  b.size,
                  Deno.UnsafePointer.offset(bufPtr, off)!,
                  room,
                );
              } catch (e) {
                return bad(
                  path,
                  `frame at ${coff}: ${(e as Error).message} (indexed length ${len})`,
                );
              }
            }
          }
          if (off !== len) bad(path, `frame at ${coff} decoded to ${off} bytes, expected ${len}`);
          let out = files.get(si);
          if (!out) {
            out = await Deno.open(targets[header.sections[si].name], { write: true });
            files.set(si, out);
          }
          await out.seek(at, Deno.SeekMode.Start);
          let w = 0;
          while (w < len) w += await out.write(buf.subarray(w, len));
        }
      } finally {
        for (const f of files.values()) f.close();
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }
}

/** lz4-napi path: frames are read, decoded to buffers and written. */
async function decodeBuffered(
  path: string,
  header: RamsnapHeader,
  targets: Record<string, string>,
  work: FrameEntry[],
  concurrency: number,
  signal?: AbortSignal,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    using src = await Deno.open(path, { read: true });
    const outs = new Map<number, Deno.FsFile>();
    try {
      while (next < work.length) {
        signal?.throwIfAborted();
        const [si, at, coff, clen, len] = work[next++];
        const frame = new Uint8Array(clen);
        await src.seek(coff, Deno.SeekMode.Start);
        if ((await readFull(src, frame)) !== clen) bad(path, "a frame is truncated");
        frameBlocksOrBad(path, frame, coff, header.chunkSize);
        let data: Uint8Array;
        try {
          data = await decompressFrame(Buffer.from(frame.buffer));
        } catch (e) {
          return bad(path, `frame at ${coff} does not decompress: ${(e as Error).message}`);
        }
        if (data.byteLength !== len) {
          bad(path, `frame at ${coff} decoded to ${data.byteLength} bytes, expected ${len}`);
        }
        let out = outs.get(si);
        if (!out) {
          out = await Deno.open(targets[header.sections[si].name], { write: true });
          outs.set(si, out);
        }
        await out.seek(at, Deno.SeekMode.Start);
        let off = 0;
        while (off < data.byteLength) off += await out.write(data.subarray(off));
      }
    } finally {
      for (const o of outs.values()) o.close();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
