/**
 * @module
 * `ovm run <path>`: an `ovm export` directory (spec section 4) is brought into
 * the store first — every blob verified against its digest — so the instance
 * runs from the store like any other (and gc keeps what it uses).
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import { type Descriptor, type Digest, MediaTypes } from "../manifest/mod.ts";
import { artifactFromDocuments, type ContentStore } from "../store/mod.ts";
import { exists, readFileBounded } from "../util/fs.ts";

/** True when `path` looks like an export directory rather than a ref. */
export async function isExportDir(path: string): Promise<boolean> {
  return (path.includes("/") || path.startsWith(".")) &&
    await exists(join(path, "metadata", "oci-manifest.json"));
}

/** Imports an export directory; returns the OCI manifest digest to run. */
export async function importExportDir(
  store: ContentStore,
  dir: string,
  options: { signal?: AbortSignal } = {},
): Promise<string> {
  const ociBytes = await readFileBounded(join(dir, "metadata", "oci-manifest.json"), 4 << 20);
  const configBytes = await readFileBounded(join(dir, "manifest.json"), 4 << 20);
  return await store.lease(async () => {
    const ociBlob = await store.writeBlob(ociBytes);
    const descriptor: Descriptor = {
      mediaType: MediaTypes.ociManifest,
      digest: ociBlob.digest,
      size: ociBlob.size,
      artifactType: MediaTypes.manifest,
    };
    const a = artifactFromDocuments(descriptor, ociBytes, configBytes);
    const config = await store.writeBlob(configBytes);
    if (config.digest !== a.config.digest) {
      throw new ValidationError(
        `"${dir}/manifest.json" does not match the config digest of its OCI manifest`,
      );
    }
    for (const l of a.oci.layers) {
      const p = join(dir, "blobs", `sha256-${l.digest.slice(7)}`);
      if (!(await exists(p))) throw new ValidationError(`"${dir}" lacks blob "${l.digest}"`);
      await store.importFile(p, {
        expectedDigest: l.digest as Digest,
        expectedSize: l.size,
        signal: options.signal,
      });
    }
    await store.addUntagged(descriptor);
    return descriptor.digest;
  });
}
