/**
 * @module
 * Real files for VMMs that cannot read a disk image at an offset inside a
 * tar (everything but QEMU). Layers are copied out of their blobs into the
 * VM's directory and re-linked with backing names ovm writes itself (the
 * blobs' own qcow2 headers never name a backing file, section 7.2), or the
 * whole chain is flattened into one sparse raw file for raw-only VMMs.
 */
import { basename, dirname, join, relative } from "node:path";
import { VmmError } from "../../errors.ts";
import { run } from "../../process/mod.ts";
import type { DiskLayerFile } from "../adapter.ts";

/** A layer copied out of its blob; `path` is a plain image file. */
export interface LayerFile {
  path: string;
  format: "qcow2" | "raw";
}

/** True when every byte is zero (eight bytes at a time; the buffer is 8-aligned). */
function isZero(b: Uint8Array): boolean {
  const words = new BigUint64Array(b.buffer, b.byteOffset, b.byteLength >> 3);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = words.length << 3; i < b.byteLength; i++) if (b[i] !== 0) return false;
  return true;
}

/** Copies `length` bytes at `offset` of `src` into a new file, leaving holes where the source is zero. */
async function copyRange(
  src: string,
  dest: string,
  range: { offset: number; length: number; signal?: AbortSignal },
): Promise<void> {
  const { offset, length } = range;
  using from = await Deno.open(src, { read: true });
  using to = await Deno.open(dest, { write: true, createNew: true, mode: 0o600 });
  await from.seek(offset, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  let left = length;
  let pos = 0;
  while (left > 0) {
    range.signal?.throwIfAborted();
    const n = await from.read(buf.subarray(0, Math.min(buf.byteLength, left)));
    if (n === null) throw new Error(`"${src}" ends before offset ${offset + length}`);
    const chunk = buf.subarray(0, n);
    if (!isZero(chunk)) {
      await to.seek(pos, Deno.SeekMode.Start);
      let w = 0;
      while (w < n) w += await to.write(chunk.subarray(w));
    }
    pos += n;
    left -= n;
  }
  await to.truncate(length);
}

/**
 * Copies each layer into `dir` (`layer-<i>.<format>`) and points every qcow2
 * layer at the one below it (`qemu-img rebase -u`: header only; the name is
 * relative, so it resolves inside `dir`). The VMM then follows a chain that
 * ovm built, in ovm's own directory.
 */
export async function materializeLayers(
  layers: DiskLayerFile[],
  dir: string,
  options: { adapter: string; qemuImg?: string; signal?: AbortSignal },
): Promise<LayerFile[]> {
  const out: LayerFile[] = [];
  for (const [i, l] of layers.entries()) {
    const path = join(dir, `layer-${i}.${l.format}`);
    try {
      await copyRange(l.path, path, { offset: l.offset, length: l.length, signal: options.signal });
      if (i > 0 && l.format === "qcow2") {
        const below = out[i - 1];
        await run(options.qemuImg ?? "qemu-img", [
          "rebase",
          "-u",
          "-f",
          "qcow2",
          "-b",
          // Relative: resolved next to the image, so the chain needs no path
          // outside the VM directory (the VMM may not see one).
          basename(below.path),
          "-F",
          below.format,
          path,
        ], { signal: options.signal });
      }
    } catch (e) {
      throw new VmmError(options.adapter, "prepare", `copying disk layer ${i} failed`, {
        cause: e,
      });
    }
    out.push({ path, format: l.format });
  }
  return out;
}

/** Creates the instance's writable qcow2 overlay backed by `top`. */
export async function createOverlayOn(
  top: LayerFile,
  overlay: string,
  options: { adapter: string; virtualSize: number; qemuImg?: string; signal?: AbortSignal },
): Promise<void> {
  await run(options.qemuImg ?? "qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    relative(dirname(overlay), top.path),
    "-F",
    top.format,
    overlay,
    String(options.virtualSize),
  ], { signal: options.signal }).catch((e) => {
    throw new VmmError(options.adapter, "prepare", "creating the instance overlay failed", {
      cause: e,
    });
  });
}

/** The chain as one qemu `json:` filename that reads every layer in place at its offset. */
export function chainJsonFilename(layers: DiskLayerFile[]): string {
  let node: Record<string, unknown> | null = null;
  for (const l of layers) {
    const raw: Record<string, unknown> = {
      driver: "raw",
      offset: l.offset,
      size: l.length,
      file: { driver: "file", filename: l.path },
    };
    node = l.format === "raw" ? raw : { driver: "qcow2", file: raw, backing: node };
  }
  return `json:${JSON.stringify(node)}`;
}

/**
 * Flattens the chain into a sparse raw image at `dest` (`qemu-img convert -O
 * raw`: zero clusters stay holes), for VMMs that take raw images only. It is a
 * per-instance copy: writes go to it, never to the layers.
 */
export async function flattenToRaw(
  layers: DiskLayerFile[],
  dest: string,
  options: { adapter: string; qemuImg?: string; signal?: AbortSignal },
): Promise<void> {
  await run(options.qemuImg ?? "qemu-img", [
    "convert",
    "-O",
    "raw",
    "-S",
    "4k",
    chainJsonFilename(layers),
    dest,
  ], { signal: options.signal }).catch((e) => {
    throw new VmmError(options.adapter, "prepare", "flattening the disk chain to raw failed", {
      cause: e,
    });
  });
}
