/**
 * @module
 * Writes an artifact in the spec's download layout (`ovm export`, and the
 * containerd shim's checkpoints) — `manifest.json` (the OVMS manifest),
 * `blobs/sha256-<hex>`, and `metadata/oci-manifest.json` (the exact OCI
 * manifest bytes, so that `ovm push DIR` republishes the same digest).
 * `importExportDir` (import_dir.ts) reads it back.
 */
import { dirname, join, resolve } from "node:path";
import { AlreadyExistsError } from "../errors.ts";
import { type ContentStore, loadArtifact } from "../store/mod.ts";
import { exists, uniqueTempName } from "../util/fs.ts";

/** Writes `ref` into the new or empty directory `dir`, atomically (temp dir, then rename). */
export async function exportArtifact(
  store: ContentStore,
  ref: string,
  dir: string,
  options: { signal?: AbortSignal } = {},
) {
  const target = resolve(dir);
  if (await exists(target)) {
    const entries = [];
    for await (const e of Deno.readDir(target)) entries.push(e.name);
    if (entries.length > 0) {
      throw new AlreadyExistsError(`Export directory "${dir}" exists and is not empty`, {
        hint: "choose a new directory; export never overwrites",
      });
    }
    await Deno.remove(target);
  }
  const a = await loadArtifact(store, ref);
  const tmp = join(dirname(target), uniqueTempName(".ovm-export"));
  await Deno.mkdir(join(tmp, "blobs"), { recursive: true });
  await Deno.mkdir(join(tmp, "metadata"));
  try {
    await Deno.writeFile(join(tmp, "manifest.json"), await store.readBlob(a.config.digest));
    await Deno.writeFile(
      join(tmp, "metadata", "oci-manifest.json"),
      await store.readBlob(a.descriptor.digest),
    );
    await Deno.writeTextFile(
      join(tmp, "metadata", "source.json"),
      JSON.stringify({ reference: ref, digest: a.descriptor.digest }, null, 2) + "\n",
    );
    let bytes = 0;
    for (const l of a.oci.layers) {
      options.signal?.throwIfAborted();
      await Deno.copyFile(
        store.blobPath(l.digest),
        join(tmp, "blobs", `sha256-${l.digest.slice(7)}`),
      );
      bytes += l.size;
    }
    await Deno.rename(tmp, target);
    return { dir: target, digest: a.descriptor.digest, blobs: a.oci.layers.length, bytes };
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}
