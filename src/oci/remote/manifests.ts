/**
 * @module
 * A repository's manifests (oras-go's `manifestStore`): fetched bounded, with
 * the digest computed from the bytes and checked against the one asked for
 * and `Docker-Content-Digest`, and the media type checked against the
 * document; pushed, resolved with HEAD, deleted.
 */
import { DigestMismatchError, ValidationError } from "../../errors.ts";
import {
  type Descriptor,
  type Digest,
  digestOf,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
} from "../../manifest/mod.ts";
import { learnReferrersCapability } from "./capabilities.ts";
import type { RepositoryClient } from "./client.ts";
import { readBounded } from "./streams.ts";

/** Media types a manifest GET asks for, in preference order. */
export const MANIFEST_ACCEPT = [
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
].join(", ");

export interface FetchedManifest {
  descriptor: Descriptor;
  bytes: Uint8Array;
}

export class ManifestStore {
  #c: RepositoryClient;

  constructor(client: RepositoryClient) {
    this.#c = client;
  }

  /**
   * Fetches a manifest or index by tag or digest. The digest is computed from
   * the bytes (and must match the one asked for and any `Docker-Content-Digest`),
   * the size is bounded, and the media type must agree with `Content-Type`.
   */
  async fetch(
    reference: string,
    options: { signal?: AbortSignal; push?: boolean } = {},
  ): Promise<FetchedManifest> {
    const c = this.#c;
    const what = `manifest "${reference}"`;
    const res = await c.send({
      method: "GET",
      url: c.url(`manifests/${reference}`),
      headers: { Accept: MANIFEST_ACCEPT },
      signal: options.signal,
      scopes: c.scopes(options.push ?? false),
    });
    if (!res.ok) await c.fail(res, what);
    const declared = Number(res.headers.get("content-length") ?? NaN);
    if (declared > MAX_MANIFEST_BYTES) {
      await res.body?.cancel();
      throw tooLarge(what, declared);
    }
    const bytes = await readBounded(res, MAX_MANIFEST_BYTES).catch((e) => {
      if (e instanceof RangeError) throw tooLarge(what, MAX_MANIFEST_BYTES + 1);
      throw e;
    });
    const digest = digestOf(bytes);
    if (reference.startsWith("sha256:") && digest !== reference) {
      throw new DigestMismatchError(`manifest from "${c.registry}/${c.name}"`, reference, digest);
    }
    const header = res.headers.get("docker-content-digest");
    if (header && header.startsWith("sha256:") && header !== digest) {
      throw new DigestMismatchError(
        `manifest "${reference}" (Docker-Content-Digest header)`,
        header,
        digest,
      );
    }
    const contentType = (res.headers.get("content-type") ?? "").split(";")[0].trim();
    const mediaType = checkManifestDocument(bytes, contentType, what);
    return { descriptor: { mediaType, digest, size: bytes.byteLength }, bytes };
  }

  /** Resolves a tag to a descriptor with HEAD, or undefined when it does not exist. */
  async head(
    reference: string,
    options: { signal?: AbortSignal; push?: boolean } = {},
  ): Promise<Descriptor | undefined> {
    const c = this.#c;
    const res = await c.send({
      method: "HEAD",
      url: c.url(`manifests/${reference}`),
      headers: { Accept: MANIFEST_ACCEPT },
      signal: options.signal,
      scopes: c.scopes(options.push ?? false),
    });
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    if (!res.ok) await c.fail(res, `manifest "${reference}"`);
    const digest = res.headers.get("docker-content-digest");
    if (!digest) return undefined;
    return {
      mediaType: (res.headers.get("content-type") ?? MediaTypes.ociManifest).split(";")[0],
      digest,
      size: Number(res.headers.get("content-length") ?? 0),
    };
  }

  /**
   * Pushes a manifest under a tag or its digest. Returns whether the registry
   * said (with `OCI-Subject`) that it indexed the subject itself.
   */
  async push(
    reference: string,
    doc: { bytes: Uint8Array; mediaType: string },
    options: { signal?: AbortSignal } = {},
  ): Promise<{ digest: Digest; subjectIndexed: boolean }> {
    const c = this.#c;
    const digest = digestOf(doc.bytes);
    const res = await c.send({
      method: "PUT",
      url: c.url(`manifests/${reference}`),
      headers: { "Content-Type": doc.mediaType },
      body: doc.bytes,
      signal: options.signal,
      scopes: c.scopes(true),
    });
    if (res.status !== 201 && res.status !== 200) {
      await c.fail(res, `manifest push "${reference}"`);
    }
    await res.body?.cancel();
    const header = res.headers.get("docker-content-digest");
    if (header && header.startsWith("sha256:") && header !== digest) {
      throw new DigestMismatchError(`pushed manifest "${reference}"`, digest, header);
    }
    const subjectIndexed = res.headers.has("oci-subject");
    if (subjectIndexed) learnReferrersCapability(c.registry, "supported");
    return { digest, subjectIndexed };
  }

  async delete(digest: Digest, options: { signal?: AbortSignal } = {}): Promise<void> {
    const c = this.#c;
    const res = await c.send({
      method: "DELETE",
      url: c.url(`manifests/${digest}`),
      signal: options.signal,
      scopes: [`repository:${c.name}:delete`],
    });
    if (!res.ok) await c.fail(res, `manifest delete "${digest}"`);
    await res.body?.cancel();
  }
}

const INDEX_TYPES: string[] = [MediaTypes.ociIndex, MediaTypes.dockerManifestList];
const MANIFEST_TYPES: string[] = [MediaTypes.ociManifest, MediaTypes.dockerManifest];

/**
 * Checks a manifest document: JSON, not both an index and a manifest, and its
 * `mediaType` (when present) equal to `Content-Type`. Returns the media type.
 */
export function checkManifestDocument(
  bytes: Uint8Array,
  contentType: string,
  what: string,
): string {
  const doc = parseJsonBytes(bytes, { source: what });
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    throw new ValidationError(`${what} is not a JSON object`);
  }
  const d = doc as Record<string, unknown>;
  const isIndex = "manifests" in d;
  const isManifest = "config" in d || "layers" in d;
  if (isIndex && isManifest) {
    throw new ValidationError(
      `${what} is both an index ("manifests") and a manifest ("config"/"layers")`,
      { hint: "the registry serves an ambiguous document; refusing it" },
    );
  }
  const declared = typeof d.mediaType === "string" ? d.mediaType : undefined;
  const generic = contentType === "" || contentType === "application/json" ||
    contentType === "application/octet-stream";
  if (declared && !generic && declared !== contentType) {
    throw new ValidationError(
      `${what} declares media type "${declared}" but was served as "${contentType}"`,
    );
  }
  const mediaType = declared ?? (generic ? undefined : contentType) ??
    (isIndex ? MediaTypes.ociIndex : MediaTypes.ociManifest);
  if (
    (isIndex && !INDEX_TYPES.includes(mediaType)) ||
    (isManifest && !MANIFEST_TYPES.includes(mediaType))
  ) {
    throw new ValidationError(
      `${what} has media type "${mediaType}", which does not fit its content`,
    );
  }
  if (!INDEX_TYPES.includes(mediaType) && !MANIFEST_TYPES.includes(mediaType)) {
    throw new ValidationError(`${what} has unsupported media type "${mediaType}"`, {
      hint: "ovm reads OCI image manifests and indexes (and Docker schema 2)",
    });
  }
  return mediaType;
}

function tooLarge(what: string, size: number): ValidationError {
  return new ValidationError(
    `${what} is ${
      size > MAX_MANIFEST_BYTES ? "over" : ""
    } ${size} bytes, over the limit of ${MAX_MANIFEST_BYTES} bytes`,
    { hint: "manifests must be at most 4 MiB; refusing it" },
  );
}
