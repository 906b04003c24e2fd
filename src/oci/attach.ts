/**
 * @module
 * Small documents attached to an artifact in a registry (signatures, bundles):
 * push a manifest together with its in-memory blobs, keeping the
 * `sha256-<hex>` referrers tag index up to date where the registry lacks the
 * referrers API; and read a blob whole with a size bound and digest check.
 */
import { concatBytes } from "../util/bytes.ts";
import { DigestMismatchError, ValidationError } from "../errors.ts";
import {
  canonicalJson,
  type Descriptor,
  type Digest,
  digestOf,
  type ImageManifest,
  MediaTypes,
} from "../manifest/mod.ts";
import type { Repository } from "./remote/mod.ts";

export interface AttachResult {
  descriptor: Descriptor;
  /** True when the registry indexed the subject itself (OCI 1.1 referrers API). */
  subjectIndexed: boolean;
}

/**
 * Pushes `blobs` (skipping those the registry has), then `manifest` under
 * `tag` or its digest. A manifest with a `subject` is added to the subject's
 * referrers tag index unless the registry indexed it (`OCI-Subject`).
 */
export async function pushAttachment(
  repo: Repository,
  manifest: ImageManifest,
  options: {
    blobs?: Uint8Array[];
    tag?: string;
    signal?: AbortSignal;
    /** The manifest's exact bytes, when copying one (default: canonical JSON). */
    bytes?: Uint8Array;
  } = {},
): Promise<AttachResult> {
  const { signal } = options;
  for (const b of options.blobs ?? []) {
    const desc = { mediaType: "application/octet-stream", digest: digestOf(b), size: b.byteLength };
    await repo.pushBlob(desc, () => Promise.resolve(new Blob([b as BlobPart]).stream()), {
      signal,
    });
  }
  const bytes = options.bytes ?? canonicalJson(manifest);
  const mediaType = manifest.mediaType ?? MediaTypes.ociManifest;
  const digest = digestOf(bytes);
  const { subjectIndexed } = await repo.pushManifest(options.tag ?? digest, bytes, mediaType, {
    signal,
  });
  const descriptor: Descriptor = {
    mediaType,
    digest,
    size: bytes.byteLength,
    ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
    ...(manifest.annotations ? { annotations: manifest.annotations } : {}),
  };
  if (manifest.subject && !subjectIndexed) {
    await repo.addToReferrersTag(manifest.subject.digest as Digest, descriptor, { signal });
  }
  return { descriptor, subjectIndexed };
}

/** Reads a whole blob, refusing more than `maxBytes`, and checks its digest. */
export async function fetchBlobBytes(
  repo: Repository,
  desc: Descriptor,
  maxBytes: number,
  options: { signal?: AbortSignal } = {},
): Promise<Uint8Array> {
  if (desc.size > maxBytes) {
    throw new ValidationError(
      `Blob "${desc.digest}" is ${desc.size} bytes, over the limit of ${maxBytes} bytes`,
      { hint: "refusing an oversized attachment" },
    );
  }
  const stream = await repo.fetchBlob(desc, 0, options);
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of stream) {
    n += chunk.byteLength;
    if (n > desc.size || n > maxBytes) {
      throw new ValidationError(
        `Blob "${desc.digest}" from "${repo.registry}/${repo.name}" is longer than its descriptor's ${desc.size} bytes`,
      );
    }
    parts.push(chunk);
  }
  const out = concatBytes(parts);
  const actual = digestOf(out);
  if (actual !== desc.digest) {
    throw new DigestMismatchError(`blob from "${repo.registry}/${repo.name}"`, desc.digest, actual);
  }
  return out;
}
