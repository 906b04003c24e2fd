/**
 * @module
 * A client for one repository of an OCI distribution registry, composed of
 * one store per concern as oras-go's `registry/remote` is: manifests
 * (manifests.ts), blobs (blobs.ts) and their uploads (uploads.ts), tags
 * (tags.ts) and referrers (referrers.ts), all over one
 * {@linkcode RepositoryClient} whose transport carries auth and retry as
 * decorators (transport.ts, auth.ts, retry.ts).
 */
import type { Descriptor, Digest } from "../../manifest/mod.ts";
import { BlobStore } from "./blobs.ts";
import { RepositoryClient } from "./client.ts";
import { type FetchedManifest, ManifestStore } from "./manifests.ts";
import { ReferrersStore } from "./referrers.ts";
import { listTags } from "./tags.ts";
import { defaultTransport } from "./stack.ts";
import type { Transport } from "./transport.ts";
import { type BlobOpener, BlobUploader, type UploadOptions } from "./uploads.ts";

export interface RepositoryOptions {
  transport?: Transport;
  /** Use http://; the default for loopback registries. */
  plainHttp?: boolean;
  /** Fall back to http:// when https:// cannot connect. */
  insecure?: boolean;
  /** Chunk size for PATCH uploads (raised to the registry's `OCI-Chunk-Min-Length`). */
  chunkSize?: number;
  /** Blobs up to this size go in one PUT (default `MONOLITHIC_MAX`). */
  monolithicMax?: number;
}

type Signal = { signal?: AbortSignal };

export class Repository {
  readonly manifests: ManifestStore;
  readonly blobs: BlobStore;
  readonly uploads: BlobUploader;
  readonly referrersStore: ReferrersStore;
  #c: RepositoryClient;

  constructor(
    ref: { registry: string; repository: string },
    options: RepositoryOptions = {},
  ) {
    const transport = options.transport ?? defaultTransport();
    this.#c = new RepositoryClient({ ...ref, transport }, options);
    this.manifests = new ManifestStore(this.#c);
    this.blobs = new BlobStore(this.#c);
    this.uploads = new BlobUploader(this.#c, options);
    this.referrersStore = new ReferrersStore(this.#c, this.manifests);
  }

  get registry(): string {
    return this.#c.registry;
  }

  get name(): string {
    return this.#c.name;
  }

  get baseUrl(): string {
    return this.#c.baseUrl;
  }

  // ---- manifests ----

  /** See {@linkcode ManifestStore.fetch}. */
  fetchManifest(
    reference: string,
    options: Signal & { push?: boolean } = {},
  ): Promise<FetchedManifest> {
    return this.manifests.fetch(reference, options);
  }

  /** Resolves a tag to a descriptor with HEAD, or undefined when it does not exist. */
  headManifest(
    reference: string,
    options: Signal & { push?: boolean } = {},
  ): Promise<Descriptor | undefined> {
    return this.manifests.head(reference, options);
  }

  /** See {@linkcode ManifestStore.push}. */
  pushManifest(
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
    options: Signal = {},
  ): Promise<{ digest: Digest; subjectIndexed: boolean }> {
    return this.manifests.push(reference, { bytes, mediaType }, options);
  }

  deleteManifest(digest: Digest, options: Signal = {}): Promise<void> {
    return this.manifests.delete(digest, options);
  }

  // ---- blobs ----

  blobExists(digest: string, options: Signal & { push?: boolean } = {}): Promise<boolean> {
    return this.blobs.exists(digest, options);
  }

  /** See {@linkcode BlobStore.fetch}. */
  fetchBlob(
    desc: Descriptor,
    offset: number,
    options: Signal = {},
  ): Promise<ReadableStream<Uint8Array>> {
    return this.blobs.fetch(desc, offset, options);
  }

  /**
   * Uploads a blob unless the registry has it: a cross-repository mount when
   * `mountFrom` is on the same registry, then one PUT for small blobs or
   * PATCH chunks for large ones. `open(offset)` must stream the blob from
   * `offset`, and may be called again for a retry.
   */
  async pushBlob(
    desc: Descriptor,
    open: BlobOpener,
    options: UploadOptions = {},
  ): Promise<"exists" | "mounted" | "pushed"> {
    if (await this.blobs.exists(desc.digest, { signal: options.signal, push: true })) {
      return "exists";
    }
    return await this.uploads.upload(desc, open, options);
  }

  // ---- tags and referrers ----

  listTags(options: Signal = {}): Promise<string[]> {
    return listTags(this.#c, options);
  }

  /** See {@linkcode ReferrersStore.list}. */
  referrers(
    subject: Digest,
    options: Signal & { artifactType?: string } = {},
  ): Promise<Descriptor[]> {
    return this.referrersStore.list(subject, options);
  }

  /** See {@linkcode ReferrersStore.addToTag}. */
  addToReferrersTag(subject: Digest, referrer: Descriptor, options: Signal = {}): Promise<void> {
    return this.referrersStore.addToTag(subject, referrer, options);
  }

  /** GET /v2/ — reachability and credentials check for `ovm login`. */
  async ping(options: Signal = {}): Promise<void> {
    const c = this.#c;
    const res = await c.send({
      method: "GET",
      url: c.baseUrl,
      signal: options.signal,
      scopes: c.name ? c.scopes(false) : [],
    });
    if (!res.ok) await c.fail(res, "the API root /v2/");
    await res.body?.cancel();
  }
}
