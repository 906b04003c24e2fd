/**
 * @module
 * Where signatures live: a registry repository (bundles as referrers found
 * through the referrers API or the `sha256-<hex>` tag index; legacy
 * signatures at tag `sha256-<hex>.sig`) or the local content store (bundle
 * manifests recorded untagged, legacy signature manifests tagged
 * `<repository>:sha256-<hex>.sig`, the tag a registry would carry). One small
 * interface so sign, verify and the admission policy treat both alike.
 */
import { NotFoundError, ValidationError } from "../errors.ts";
import {
  canonicalJson,
  type Descriptor,
  type Digest,
  digestOf,
  type ImageManifest,
  ImageManifestSchema,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { fetchBlobBytes, pushAttachment } from "../oci/attach.ts";
import type { Repository } from "../oci/mod.ts";
import type { ContentStore } from "../store/mod.ts";
import { signatureTag, SignMediaTypes } from "./formats.ts";

/** At most this many signatures (bundles + legacy layers) are examined per digest. */
export const MAX_SIGNATURES = 100;
/** Largest attachment blob (bundle, payload) read. */
export const MAX_ATTACHMENT_BYTES = 128 << 20;

export interface StoredManifest {
  descriptor: Descriptor;
  bytes: Uint8Array;
  manifest: ImageManifest;
}

export interface SignatureSource {
  /** For messages: `registry/repo` or `local store`. */
  readonly where: string;
  /** The repository name signatures are recorded under (docker-reference). */
  readonly repository: string;
  /** Resolves a tag or digest to the manifest's bytes. */
  manifest(reference: string, signal?: AbortSignal): Promise<StoredManifest>;
  /** Bundle manifests whose subject is `subject` (at most MAX_SIGNATURES). */
  bundleManifests(subject: Digest, signal?: AbortSignal): Promise<StoredManifest[]>;
  /** The legacy `.sig` manifest of `subject`, if any. */
  legacyManifest(subject: Digest, signal?: AbortSignal): Promise<StoredManifest | undefined>;
  blob(desc: Descriptor, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array>;
  /** Stores a manifest with its blobs, under `tag` or untagged (a referrer). */
  attach(
    manifest: ImageManifest,
    blobs: Uint8Array[],
    options?: { tag?: string; bytes?: Uint8Array; signal?: AbortSignal },
  ): Promise<Descriptor>;
}

function parseOciManifest(bytes: Uint8Array, what: string): ImageManifest {
  return validate(ImageManifestSchema, parseJsonBytes(bytes, { source: what }), what);
}

export class RemoteSignatureSource implements SignatureSource {
  readonly repo: Repository;
  constructor(repo: Repository) {
    this.repo = repo;
  }
  get where(): string {
    return `${this.repo.registry}/${this.repo.name}`;
  }
  get repository(): string {
    return this.where;
  }

  async manifest(reference: string, signal?: AbortSignal): Promise<StoredManifest> {
    const m = await this.repo.fetchManifest(reference, { signal });
    const isIndex = m.descriptor.mediaType === MediaTypes.ociIndex ||
      m.descriptor.mediaType === MediaTypes.dockerManifestList;
    const manifest = isIndex
      ? { schemaVersion: 2 as const, config: m.descriptor, layers: [] }
      : parseOciManifest(m.bytes, `manifest "${reference}"`);
    return { descriptor: m.descriptor, bytes: m.bytes, manifest };
  }

  async bundleManifests(subject: Digest, signal?: AbortSignal): Promise<StoredManifest[]> {
    // Not filtered by the registry: cosign's entries in the sha256-<hex> tag
    // index carry the config's media type (the OCI empty type) as their
    // artifactType, so a bundle is recognised by its manifest.
    const refs = (await this.repo.referrers(subject, { signal })).filter((d) =>
      !d.artifactType || d.artifactType === SignMediaTypes.bundle ||
      d.artifactType === MediaTypes.ociEmpty
    );
    const out: StoredManifest[] = [];
    for (const d of refs) {
      if (out.length >= MAX_SIGNATURES) break;
      try {
        const m = await this.manifest(d.digest, signal);
        if (m.manifest.artifactType === SignMediaTypes.bundle) out.push(m);
      } catch (e) {
        // A tag-schema index may name a referrer since deleted.
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
    return out;
  }

  async legacyManifest(subject: Digest, signal?: AbortSignal) {
    try {
      return await this.manifest(signatureTag(subject), signal);
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  async blob(desc: Descriptor, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array> {
    return await fetchBlobBytes(this.repo, desc, maxBytes, { signal });
  }

  async attach(
    manifest: ImageManifest,
    blobs: Uint8Array[],
    options: { tag?: string; bytes?: Uint8Array; signal?: AbortSignal } = {},
  ): Promise<Descriptor> {
    return (await pushAttachment(this.repo, manifest, { ...options, blobs })).descriptor;
  }
}

export class LocalSignatureSource implements SignatureSource {
  readonly store: ContentStore;
  readonly repository: string;
  constructor(store: ContentStore, repository: string) {
    this.store = store;
    this.repository = repository;
  }
  get where(): string {
    return "the local store";
  }

  async manifest(reference: string): Promise<StoredManifest> {
    const descriptor = await this.store.resolve(reference);
    const bytes = await this.store.readBlob(descriptor.digest, { maxBytes: MAX_MANIFEST_BYTES });
    const isIndex = descriptor.mediaType === MediaTypes.ociIndex;
    const manifest = isIndex
      ? { schemaVersion: 2 as const, config: descriptor, layers: [] }
      : parseOciManifest(bytes, `manifest "${reference}"`);
    return { descriptor, bytes, manifest };
  }

  async bundleManifests(subject: Digest): Promise<StoredManifest[]> {
    const out: StoredManifest[] = [];
    for (const d of await this.store.indexDescriptors()) {
      if (d.artifactType !== SignMediaTypes.bundle) continue;
      const m = await this.manifest(d.digest);
      if (m.manifest.subject?.digest === subject) out.push(m);
      if (out.length >= MAX_SIGNATURES) break;
    }
    return out;
  }

  async legacyManifest(subject: Digest): Promise<StoredManifest | undefined> {
    const suffix = `:${signatureTag(subject)}`;
    const own = `${this.repository}${suffix}`;
    const refs = (await this.store.listRefs()).filter((r) => r.name.endsWith(suffix));
    // The artifact's own repository first; a copy under another name also counts.
    const hit = refs.find((r) => r.name === own) ?? refs[0];
    return hit ? await this.manifest(hit.descriptor.digest) : undefined;
  }

  async blob(desc: Descriptor, maxBytes: number): Promise<Uint8Array> {
    if (desc.size > maxBytes) {
      throw new ValidationError(
        `Blob "${desc.digest}" is ${desc.size} bytes, over the limit of ${maxBytes} bytes`,
      );
    }
    return await this.store.readBlob(desc.digest, { maxBytes });
  }

  async attach(
    manifest: ImageManifest,
    blobs: Uint8Array[],
    options: { tag?: string; bytes?: Uint8Array } = {},
  ): Promise<Descriptor> {
    return await this.store.lease(async () => {
      for (const b of blobs) await this.store.writeBlob(b, { expectedDigest: digestOf(b) });
      const bytes = options.bytes ?? canonicalJson(manifest);
      const info = await this.store.writeBlob(bytes);
      const descriptor: Descriptor = {
        mediaType: manifest.mediaType ?? MediaTypes.ociManifest,
        digest: info.digest,
        size: info.size,
        ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
      };
      if (options.tag) await this.store.tag(`${this.repository}:${options.tag}`, descriptor);
      else await this.store.addUntagged(descriptor);
      return descriptor;
    });
  }
}
