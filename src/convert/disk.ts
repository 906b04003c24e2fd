/**
 * @module
 * Root filesystem directory → raw disk image, reproducibly (spec §10.5).
 * ext4: `mkfs.ext4 -d` sized to fit plus a buffer, with the UUID and hash
 * seed derived from the image digest, `E2FSPROGS_FAKE_TIME` for the
 * superblock, and every inode's atime/ctime then pinned with debugfs
 * (mke2fs 1.47.0 copies ctime from the build directory, which no one can
 * set). erofs: `mkfs.erofs` with a fixed UUID and timestamp.
 */
import { join } from "node:path";
import { run } from "../process/mod.ts";
import { CommandError } from "../process/mod.ts";
import { ValidationError } from "../errors.ts";
import { sha256Hex } from "../manifest/mod.ts";

const BLOCK = 4096;
const MiB = 1024 * 1024;

export interface TreeSize {
  /** Data bytes rounded up to 4 KiB blocks (hardlinked inodes once). */
  blocks: number;
  inodes: number;
  files: number;
  bytes: number;
}

/** Walks the tree without following symlinks. */
export async function measureTree(root: string): Promise<TreeSize> {
  const seen = new Set<number>();
  const out: TreeSize = { blocks: 0, inodes: 1, files: 0, bytes: 0 };
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const p = join(dir, e.name);
      const st = await Deno.lstat(p);
      if (st.nlink && st.nlink > 1 && !st.isDirectory) {
        if (seen.has(st.ino!)) continue;
        seen.add(st.ino!);
      }
      out.inodes++;
      if (st.isDirectory) {
        out.blocks += BLOCK;
        await walk(p);
      } else if (st.isFile) {
        out.files++;
        out.bytes += st.size;
        out.blocks += Math.ceil(st.size / BLOCK) * BLOCK;
      } else if (st.isSymlink && st.size > 59) {
        out.blocks += BLOCK;
      }
    }
  };
  await walk(root);
  return out;
}

/** A UUID derived from `seed`, so the same image gives the same filesystem. */
export function derivedUuid(seed: string): string {
  const h = sha256Hex(seed);
  // Version 4 / variant bits set so tools treat it as an ordinary random UUID.
  const v = `4${h.slice(13, 16)}`;
  const variant = ((parseInt(h[16], 16) & 0x3) | 0x8).toString(16) + h.slice(17, 20);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${v}-${variant}-${h.slice(20, 32)}`;
}

export interface Ext4Options {
  /** Free space on top of the contents. */
  sizeBuffer: number;
  /** Seed for the UUID and hash seed (the image manifest digest). */
  seed: string;
  /** Every timestamp mkfs makes up: the image's creation time, or 0. */
  epoch: number;
  label?: string;
  signal?: AbortSignal;
}

function journalBytes(total: number): number {
  if (total < 512 * MiB) return 4 * MiB;
  if (total < 4096 * MiB) return 16 * MiB;
  return 64 * MiB;
}

/** Builds an ext4 image of `root` at `out`; returns its size in bytes. */
export async function buildExt4(root: string, out: string, options: Ext4Options): Promise<number> {
  const t = await measureTree(root);
  const inodes = Math.ceil(t.inodes * 1.1) + 256 + Math.floor(options.sizeBuffer / 65536);
  const meta = inodes * 256 + Math.ceil(t.blocks / BLOCK) * 8; // inode tables + extent/bitmap slack
  const uuid = derivedUuid(`ovms-convert:ext4:uuid:${options.seed}`);
  const hashSeed = derivedUuid(`ovms-convert:ext4:hash:${options.seed}`);
  let size = 0;
  for (let attempt = 0; attempt < 4; attempt++) {
    const content = Math.ceil((t.blocks + meta) * (1.08 + attempt * 0.15)) + 2 * MiB;
    const base = content + options.sizeBuffer;
    size = Math.ceil((base + journalBytes(base)) / MiB) * MiB;
    await Deno.remove(out).catch(() => {});
    try {
      await run("mkfs.ext4", [
        "-q",
        "-F",
        "-t",
        "ext4",
        "-b",
        String(BLOCK),
        "-I",
        "256",
        "-m",
        "0",
        "-N",
        String(inodes),
        "-J",
        `size=${journalBytes(base) / MiB}`,
        "-U",
        uuid,
        "-E",
        `hash_seed=${hashSeed},root_owner=0:0`,
        "-L",
        options.label ?? "root",
        "-d",
        root,
        out,
        `${size / 1024}k`,
      ], {
        env: {
          E2FSPROGS_FAKE_TIME: String(options.epoch),
          SOURCE_DATE_EPOCH: String(options.epoch),
        },
        signal: options.signal,
      });
    } catch (e) {
      const full = e instanceof CommandError && /allocate|no space|full|inodes/i.test(e.stderr);
      if (full && attempt < 3) continue;
      throw e;
    }
    await pinInodeTimes(out, options.epoch, options.signal);
    return size;
  }
  throw new ValidationError("mkfs.ext4 could not fit the root filesystem"); // unreachable
}

/** Sets atime and ctime of every in-use inode to `epoch` (mtime stays the image's). */
async function pinInodeTimes(image: string, epoch: number, signal?: AbortSignal): Promise<void> {
  const dump = (await run("dumpe2fs", [image], { signal })).stdout;
  const num = (re: RegExp) => Number(re.exec(dump)?.[1] ?? NaN);
  const perGroup = num(/^Inodes per group:\s+(\d+)/m);
  const firstIno = num(/^First inode:\s+(\d+)/m);
  const count = num(/^Inode count:\s+(\d+)/m);
  if (!perGroup || !firstIno || !count) {
    throw new ValidationError(`Unexpected dumpe2fs output for "${image}"`);
  }
  const free = new Uint8Array(count + 1);
  let group = -1;
  for (const line of dump.split("\n")) {
    const g = /^Group (\d+):/.exec(line);
    if (g) group = Number(g[1]);
    const f = /^\s+Free inodes:\s*(.*)$/.exec(line);
    if (!f || group < 0) continue;
    for (const part of f[1].split(",")) {
      const m = /(\d+)(?:-(\d+))?/.exec(part.trim());
      if (!m) continue;
      const a = Number(m[1]);
      const b = Number(m[2] ?? m[1]);
      for (let i = a; i <= b && i <= count; i++) free[i] = 1;
    }
  }
  const cmds: string[] = [];
  for (let ino = 1; ino <= count; ino++) {
    if (free[ino] || (ino !== 2 && ino < firstIno)) continue;
    for (const field of ["atime", "ctime"]) cmds.push(`sif <${ino}> ${field} ${epoch}`);
    for (const field of ["atime_extra", "ctime_extra"]) cmds.push(`sif <${ino}> ${field} 0`);
  }
  // A command file, not stdin: debugfs echoes every command, and a pipe both ways can deadlock.
  const file = `${image}.debugfs`;
  await Deno.writeTextFile(file, cmds.join("\n") + "\n");
  try {
    await run("debugfs", ["-w", "-f", file, image], {
      signal,
      env: { E2FSPROGS_FAKE_TIME: String(epoch) },
    });
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

export interface ErofsOptions {
  seed: string;
  epoch: number;
  signal?: AbortSignal;
}

/** Builds an erofs image of `root` at `out` (read-only; ovms-init overlays tmpfs). */
export async function buildErofs(
  root: string,
  out: string,
  options: ErofsOptions,
): Promise<number> {
  await Deno.remove(out).catch(() => {});
  await run("mkfs.erofs", [
    "--quiet",
    `-T${options.epoch}`,
    `-U${derivedUuid(`ovms-convert:erofs:uuid:${options.seed}`)}`,
    out,
    root,
  ], { env: { SOURCE_DATE_EPOCH: String(options.epoch) }, signal: options.signal });
  // Block devices are whole 512-byte sectors; erofs images already are 4 KiB aligned.
  const size = (await Deno.stat(out)).size;
  const aligned = Math.ceil(size / 4096) * 4096;
  if (aligned !== size) await Deno.truncate(out, aligned);
  return aligned;
}
