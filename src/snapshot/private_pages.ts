/**
 * @module
 * The pages a process changed in a private (copy-on-write) mapping of a
 * file: a restored VM maps its snapshot's memory template `MAP_PRIVATE`, so
 * the pages its guest wrote are exactly the mapping's private anonymous
 * pages. `/proc/<pid>/pagemap` tells them apart from the file's own pages —
 * one u64 per virtual page: bit 63 present, bit 62 swapped, bit 61 "file page
 * or shared anonymous"; a copied-on-write page is present (or swapped) with
 * bit 61 clear — and `/proc/<pid>/mem` reads them. Plain reads of procfs
 * files (ovm runs as root; the process should be stopped meanwhile, e.g. a
 * paused VM, so the set does not change while it is read).
 */
import { ValidationError } from "../errors.ts";
import type { PageRange } from "./ramdiff.ts";

const PAGE = 4096;
/** Bits 63, 62 and 61 of a pagemap entry, in its high 32-bit word. */
const PRESENT_HI = 0x80000000;
const SWAPPED_HI = 0x40000000;
const FILE_OR_SHARED_HI = 0x20000000;

/** One mapping of the file in the process: `[start, end)` virtual, from file offset `fileOffset`. */
export interface FileMapping {
  start: number;
  end: number;
  fileOffset: number;
  /** Whether the mapping is private (copy-on-write), the `p` in `rw-p`. */
  private: boolean;
}

/**
 * The mappings of `path` in process `pid` (`/proc/<pid>/maps`), in address
 * order; a mapping of a file since deleted still counts (its name ends in
 * " (deleted)").
 */
export async function fileMappings(pid: number, path: string): Promise<FileMapping[]> {
  const text = await Deno.readTextFile(`/proc/${pid}/maps`);
  const out: FileMapping[] = [];
  for (const line of text.split("\n")) {
    // start-end perms offset dev inode   path (the path may hold spaces)
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) \S+ \d+\s+(.*)$/.exec(line);
    if (!m) continue;
    const name = m[5];
    if (name !== path && name !== `${path} (deleted)`) continue;
    out.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      fileOffset: parseInt(m[4], 16),
      private: m[3][3] === "p",
    });
  }
  return out;
}

/**
 * The file ranges (page-aligned, sorted, disjoint, below `limit`) whose pages
 * process `pid` holds as private copies in `mappings`: what it wrote.
 */
export async function changedRanges(
  pid: number,
  mappings: FileMapping[],
  limit: number,
): Promise<PageRange[]> {
  const ranges: PageRange[] = [];
  using pm = await Deno.open(`/proc/${pid}/pagemap`, { read: true });
  const batch = 1 << 16; // pages per read: 512 KiB of pagemap
  const buf = new Uint8Array(batch * 8);
  const view = new DataView(buf.buffer);
  for (const m of mappings) {
    if (!m.private) {
      throw new ValidationError(
        `The mapping at 0x${m.start.toString(16)} of process ${pid} is shared, not copy-on-write`,
        { hint: "only a restored VM (private template mapping) has a page diff" },
      );
    }
    const pages = (m.end - m.start) / PAGE;
    let runStart = -1;
    let runEnd = -1;
    const flush = () => {
      if (runStart < 0) return;
      ranges.push([runStart, runEnd - runStart]);
      runStart = runEnd = -1;
    };
    for (let first = 0; first < pages; first += batch) {
      const n = Math.min(batch, pages - first);
      await pm.seek(((m.start / PAGE) + first) * 8, Deno.SeekMode.Start);
      let got = 0;
      while (got < n * 8) {
        const r = await pm.read(buf.subarray(got, n * 8));
        if (r === null) throw new Error(`/proc/${pid}/pagemap ended early`);
        got += r;
      }
      for (let i = 0; i < n; i++) {
        // The flags are the entry's top bits: its high 32-bit word suffices.
        const hi = view.getUint32(i * 8 + 4, true);
        const off = m.fileOffset + (first + i) * PAGE;
        const changed = (hi & (PRESENT_HI | SWAPPED_HI)) !== 0 && (hi & FILE_OR_SHARED_HI) === 0;
        if (!changed || off >= limit) {
          flush();
          continue;
        }
        if (runStart >= 0 && runEnd === off) runEnd += PAGE;
        else {
          flush();
          runStart = off;
          runEnd = off + PAGE;
        }
      }
    }
    flush();
  }
  ranges.sort((a, b) => a[0] - b[0]);
  return ranges;
}

/**
 * Copies the bytes of `ranges` (file offsets inside `mappings`) out of
 * process `pid`'s memory into a new file `dest`, back to back.
 */
export async function copyRanges(
  pid: number,
  mappings: FileMapping[],
  ranges: PageRange[],
  dest: string,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  using mem = await Deno.open(`/proc/${pid}/mem`, { read: true });
  using out = await Deno.open(dest, { write: true, createNew: true, mode: 0o600 });
  const buf = new Uint8Array(1 << 20);
  for (const [off, len] of ranges) {
    let done = 0;
    while (done < len) {
      options.signal?.throwIfAborted();
      const at = off + done;
      const m = mappings.find((m) => at >= m.fileOffset && at < m.fileOffset + (m.end - m.start));
      if (!m) throw new Error(`file offset ${at} is in no mapping of process ${pid}`);
      const want = Math.min(buf.byteLength, len - done, m.fileOffset + (m.end - m.start) - at);
      await mem.seek(m.start + (at - m.fileOffset), Deno.SeekMode.Start);
      let got = 0;
      while (got < want) {
        const n = await mem.read(buf.subarray(got, want));
        if (n === null) {
          throw new Error(`/proc/${pid}/mem ended at 0x${(m.start + got).toString(16)}`);
        }
        got += n;
      }
      let w = 0;
      while (w < want) w += await out.write(buf.subarray(w, want));
      done += want;
    }
  }
}
