/**
 * @module
 * The RAM diff layer (`application/vnd.ovms.ramsnap.diff.v1+lz4`): the guest
 * pages a restored VM changed relative to the memory it was restored from
 * (its _base_: a full ramsnap, or that plus earlier diff layers). Same
 * framing as the ramsnap blob (a header skippable frame, one LZ4 frame per
 * chunk, the frame index at the end), so `lz4 -d` still decodes it, with
 * three sections:
 *
 * - `ranges`: the changed ranges of guest memory, page-aligned, sorted and
 *   disjoint, as pairs of u64 little-endian `offset, length`;
 * - `pages`: the bytes of those ranges, back to back;
 * - `device-state`: the VMM's device state at the time of the snapshot.
 *
 * The header names the base layer's digest and the guest memory size, so a
 * layer applied onto anything else is refused before a byte is written.
 *
 * Spec: `spec/ovms-v0.1.md` section 8.6.
 */
import { Buffer } from "node:buffer";
import { join } from "node:path";
import { decompressFrame } from "lz4-napi";
import { ValidationError } from "../errors.ts";
import {
  decodeRamsnap,
  encodeRamsnap,
  lz4FrameBound,
  RAMDIFF_FORMAT,
  type RamsnapHeader,
  readRamsnapLayout,
} from "./ramsnap.ts";

/** The page size of diff ranges (x86_64 guests). */
export const RAMDIFF_PAGE = 4096;

/** Largest device-state section a diff layer may carry (as for full snapshots). */
export const RAMDIFF_MAX_DEVICE_STATE = 256 << 20;

/** A changed range of guest memory: `[offset, length]` in bytes, page-aligned. */
export type PageRange = [number, number];

export interface RamDiffLayout {
  header: RamsnapHeader & { base: string; memoryBytes: number; pageSize: number };
  ranges: PageRange[];
  /** Bytes of changed memory (the `pages` section). */
  pageBytes: number;
  deviceStateBytes: number;
}

function bad(path: string, why: string, hint?: string): never {
  throw new ValidationError(`RAM diff layer "${path}" is invalid: ${why}`, {
    hint: hint ?? "the layer is truncated or corrupt; pull or create the snapshot again",
  });
}

/**
 * Encodes a diff layer. `pages` holds the ranges' bytes back to back;
 * `work` is a directory for the binary range list (a section file).
 */
export async function encodeRamDiff(
  layer: { ranges: PageRange[]; pages: string; deviceState: string; work: string },
  options: {
    base: string;
    memoryBytes: number;
    metadata?: Record<string, unknown>;
    chunkSize?: number;
    signal?: AbortSignal;
  },
): Promise<ReadableStream<Uint8Array>> {
  checkRanges(layer.ranges, options.memoryBytes, (why) => bad("(new layer)", why));
  const bin = new Uint8Array(layer.ranges.length * 16);
  const v = new DataView(bin.buffer);
  layer.ranges.forEach(([off, len], i) => {
    v.setBigUint64(i * 16, BigInt(off), true);
    v.setBigUint64(i * 16 + 8, BigInt(len), true);
  });
  const rangesFile = join(layer.work, "ranges.bin");
  await Deno.writeFile(rangesFile, bin);
  const pageBytes = layer.ranges.reduce((n, r) => n + r[1], 0);
  const pagesSize = (await Deno.stat(layer.pages)).size;
  if (pagesSize !== pageBytes) {
    throw new ValidationError(
      `The changed pages file "${layer.pages}" is ${pagesSize} bytes, its ranges cover ${pageBytes}`,
    );
  }
  const deviceStateBytes = (await Deno.stat(layer.deviceState)).size;
  return encodeRamsnap([
    { name: "ranges", path: rangesFile, size: bin.byteLength },
    { name: "pages", path: layer.pages, size: pageBytes },
    { name: "device-state", path: layer.deviceState, size: deviceStateBytes },
  ], {
    metadata: options.metadata,
    chunkSize: options.chunkSize,
    signal: options.signal,
    diff: { base: options.base, memoryBytes: options.memoryBytes, pageSize: RAMDIFF_PAGE },
  });
}

/** Ranges must be page-aligned, non-empty, sorted, disjoint and inside the guest's memory. */
function checkRanges(ranges: PageRange[], memoryBytes: number, fail: (why: string) => never) {
  let end = 0;
  for (const [i, [off, len]] of ranges.entries()) {
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || len <= 0) {
      fail(`range ${i} is [${off}, ${len}]`);
    }
    if (off % RAMDIFF_PAGE || len % RAMDIFF_PAGE) {
      fail(`range ${i} [${off}, +${len}] is not aligned to ${RAMDIFF_PAGE}-byte pages`);
    }
    if (off < end) fail(`range ${i} at ${off} overlaps or precedes the range before it`);
    if (off + len > memoryBytes) {
      fail(`range ${i} [${off}, +${len}] lies outside the ${memoryBytes}-byte guest memory`);
    }
    end = off + len;
  }
}

/**
 * Reads and checks a diff layer without writing anything: the header (format,
 * base digest, memory size, page size), that its sections are exactly
 * `ranges`, `pages`, `device-state` within their limits, that the frames tile
 * them (truncation), and the range list itself (decoded; it is small).
 * `expect` refuses a layer for another base or memory size.
 */
export async function readRamDiff(
  path: string,
  expect: { memoryBytes: number; base?: string },
): Promise<RamDiffLayout> {
  const layout = await readRamsnapLayout(path, { format: RAMDIFF_FORMAT });
  const h = layout.header;
  if (typeof h.base !== "string" || !/^sha256:[a-f0-9]{64}$/.test(h.base)) {
    bad(path, `its header names no base layer digest (base: ${JSON.stringify(h.base)})`);
  }
  if (h.pageSize !== RAMDIFF_PAGE) bad(path, `its page size is ${h.pageSize}, not ${RAMDIFF_PAGE}`);
  if (!Number.isSafeInteger(h.memoryBytes) || (h.memoryBytes ?? 0) <= 0) {
    bad(path, `its memory size is ${h.memoryBytes}`);
  }
  if (h.memoryBytes !== expect.memoryBytes) {
    bad(
      path,
      `it is for a guest of ${h.memoryBytes} bytes of memory, the snapshot has ${expect.memoryBytes}`,
      "the layers belong to different snapshots; pull the snapshot again",
    );
  }
  if (expect.base !== undefined && h.base !== expect.base) {
    bad(
      path,
      `it is a diff on ${h.base}, but the layer below it is ${expect.base}`,
      "the chain's layers do not belong together; pull the snapshot again",
    );
  }
  const names = h.sections.map((s) => s.name).join(",");
  if (names !== "ranges,pages,device-state") {
    bad(path, `its sections are "${names}", expected "ranges,pages,device-state"`);
  }
  const [rs, ps, ds] = h.sections;
  const maxRanges = (expect.memoryBytes / RAMDIFF_PAGE) * 16;
  if (rs.size % 16 || rs.size > maxRanges) bad(path, `its range list is ${rs.size} bytes`);
  if (ps.size > expect.memoryBytes) {
    bad(path, `its pages section declares ${ps.size} bytes, over the guest memory`);
  }
  if (ds.size > RAMDIFF_MAX_DEVICE_STATE) {
    bad(path, `its device state declares ${ds.size} bytes, over ${RAMDIFF_MAX_DEVICE_STATE}`);
  }
  // The range list: its frames, bound-checked before decompression.
  const bin = new Uint8Array(rs.size);
  using f = await Deno.open(path, { read: true });
  for (const [si, at, coff, clen, len, zero] of layout.index.frames) {
    if (si !== 0 || zero) continue;
    const frame = new Uint8Array(clen);
    await f.seek(coff, Deno.SeekMode.Start);
    let got = 0;
    while (got < clen) {
      const n = await f.read(frame.subarray(got));
      if (n === null) bad(path, "the range list is truncated");
      got += n;
    }
    let bound: number;
    try {
      bound = lz4FrameBound(frame);
    } catch (e) {
      return bad(path, `the range list: ${(e as Error).message}`);
    }
    if (bound > h.chunkSize + (4 << 20)) bad(path, `a range-list frame could expand to ${bound}`);
    let data: Uint8Array;
    try {
      data = await decompressFrame(Buffer.from(frame.buffer));
    } catch (e) {
      return bad(path, `the range list does not decompress: ${(e as Error).message}`);
    }
    if (data.byteLength !== len) bad(path, "a range-list frame decodes to another length");
    bin.set(data, at);
  }
  const v = new DataView(bin.buffer);
  const ranges: PageRange[] = [];
  for (let i = 0; i < rs.size; i += 16) {
    ranges.push([Number(v.getBigUint64(i, true)), Number(v.getBigUint64(i + 8, true))]);
  }
  checkRanges(ranges, expect.memoryBytes, (why) => bad(path, why));
  const covered = ranges.reduce((n, r) => n + r[1], 0);
  if (covered !== ps.size) {
    bad(path, `its ranges cover ${covered} bytes, its pages section holds ${ps.size}`);
  }
  return {
    header: h as RamDiffLayout["header"],
    ranges,
    pageBytes: ps.size,
    deviceStateBytes: ds.size,
  };
}

/**
 * Writes a checked diff layer ({@linkcode readRamDiff}) onto `memory` (an
 * existing file of the guest's memory size) and its device state to
 * `deviceState`. `work` holds the decoded pages meanwhile (tmpfs).
 */
export async function applyRamDiff(
  path: string,
  layout: RamDiffLayout,
  targets: { memory: string; deviceState: string; work: string },
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const pages = join(targets.work, `pages-${crypto.randomUUID()}`);
  const ranges = join(targets.work, `ranges-${crypto.randomUUID()}`);
  try {
    await decodeRamsnap(path, {
      ranges,
      pages,
      "device-state": targets.deviceState,
    }, {
      format: RAMDIFF_FORMAT,
      limits: {
        ranges: layout.ranges.length * 16,
        pages: layout.pageBytes,
        "device-state": RAMDIFF_MAX_DEVICE_STATE,
      },
      signal: options.signal,
    });
    await writeRanges(pages, layout.ranges, targets.memory, options);
  } finally {
    await Deno.remove(pages).catch(() => {});
    await Deno.remove(ranges).catch(() => {});
  }
}

/**
 * Writes the bytes of `ranges`, stored back to back in `pages`, into the
 * existing file `memory` at their offsets.
 */
export async function writeRanges(
  pages: string,
  ranges: PageRange[],
  memory: string,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  using src = await Deno.open(pages, { read: true });
  using dst = await Deno.open(memory, { write: true });
  const buf = new Uint8Array(1 << 20);
  for (const [off, len] of ranges) {
    let done = 0;
    while (done < len) {
      options.signal?.throwIfAborted();
      const want = Math.min(buf.byteLength, len - done);
      let got = 0;
      while (got < want) {
        const n = await src.read(buf.subarray(got, want));
        if (n === null) {
          throw new ValidationError(`"${pages}" ended before its ranges were written`);
        }
        got += n;
      }
      await dst.seek(off + done, Deno.SeekMode.Start);
      let w = 0;
      while (w < want) w += await dst.write(buf.subarray(w, want));
      done += want;
    }
  }
}
