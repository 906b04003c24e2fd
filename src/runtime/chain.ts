/**
 * @module
 * Turns a manifest's `diskLayers` into the files of a backing chain without
 * copying anything: each layer is its blob in the store, used in place at the
 * tar's data offset. Every qcow2 layer's header is read and refused when it
 * names a backing file or an external data file — before any VMM opens it —
 * because such a name could point at any host file.
 */
import { assertSelfContained, locateDiskInTar, readQcow2Header } from "../disk/mod.ts";
import { NotFoundError, ValidationError } from "../errors.ts";
import { type DiskLayer, isDigest } from "../manifest/mod.ts";
import type { ContentStore } from "../store/mod.ts";
import type { DiskLayerFile } from "../vmm/adapter.ts";

export async function assembleChain(
  store: ContentStore,
  layers: DiskLayer[],
): Promise<DiskLayerFile[]> {
  const out: DiskLayerFile[] = [];
  for (const [i, layer] of layers.entries()) {
    const what = `disk layer ${i} (${layer.ref})`;
    if (!isDigest(layer.ref)) {
      throw new NotFoundError(`The ${what} is a registry reference, not a local blob`, {
        hint: "pull the artifact first with 'ovm pull' so every layer is in the local store",
      });
    }
    if (layer.format === "ovfms") {
      throw new ValidationError(`The ${what} has format "ovfms", which ovm cannot run`, {
        hint: "ovfms is reserved in OVMS v0.1; use qcow2 or raw layers",
      });
    }
    if (layer.format === "raw" && i > 0) {
      throw new ValidationError(`The ${what} is raw, but only the base layer may be raw`);
    }
    await store.stat(layer.ref);
    const path = store.blobPath(layer.ref);
    const loc = await locateDiskInTar(path);
    let virtualSize = loc.size;
    if (layer.format === "qcow2") {
      const info = await readQcow2Header(path, loc.offset);
      assertSelfContained(info, `The ${what}`);
      virtualSize = info.virtualSize;
    }
    if (virtualSize !== layer.size) {
      throw new ValidationError(
        `The ${what} has a virtual size of ${virtualSize} bytes, but the manifest says ${layer.size}`,
      );
    }
    out.push({ path, offset: loc.offset, length: loc.size, format: layer.format, virtualSize });
  }
  return out;
}

/**
 * The version string a Linux bzImage carries (`kernel_version` in the setup
 * header), e.g. "6.1.0-56-cloud-amd64"; undefined for other files.
 */
export async function readKernelVersion(path: string): Promise<string | undefined> {
  try {
    using f = await Deno.open(path, { read: true });
    // kernel_version is a u16 offset from 0x200, so it lies within the first 64 KiB + 512.
    const buf = new Uint8Array(0x10000 + 0x200);
    let got = 0;
    while (got < buf.byteLength) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    const v = new DataView(buf.buffer, 0, got);
    if (got < 0x210 || v.getUint32(0x202, true) !== 0x53726448) return undefined; // "HdrS"
    const ptr = v.getUint16(0x20e, true) + 0x200;
    if (ptr >= got) return undefined;
    const end = buf.indexOf(0, ptr);
    const s = new TextDecoder().decode(buf.subarray(ptr, end < 0 ? got : end));
    return s.split(" ")[0] || undefined;
  } catch {
    return undefined;
  }
}
