/**
 * @module
 * A subject's referrers: the OCI 1.1 referrers API when the registry has it,
 * else the `sha256-<hex>` tag schema (read, and kept up to date on push),
 * with what the registry supports learnt once per process (capabilities.ts).
 */
import { NotFoundError } from "../../errors.ts";
import {
  type Descriptor,
  type Digest,
  digestHex,
  type ImageIndex,
  ImageIndexSchema,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../../manifest/mod.ts";
import { learnReferrersCapability, referrersCapabilityOf } from "./capabilities.ts";
import type { RepositoryClient } from "./client.ts";
import type { ManifestStore } from "./manifests.ts";
import { nextLink, readBounded } from "./streams.ts";

/** The tag under which the referrers tag schema keeps a subject's referrers. */
export function referrersTag(subject: Digest): string {
  return `sha256-${digestHex(subject)}`;
}

const MAX_PAGES = 1000;

export class ReferrersStore {
  #c: RepositoryClient;
  #manifests: ManifestStore;

  constructor(client: RepositoryClient, manifests: ManifestStore) {
    this.#c = client;
    this.#manifests = manifests;
  }

  /**
   * Lists the manifests whose `subject` is `subject`: the referrers API when
   * the registry has it, else the `sha256-<hex>` tag schema.
   */
  async list(
    subject: Digest,
    options: { signal?: AbortSignal; artifactType?: string } = {},
  ): Promise<Descriptor[]> {
    let found: Descriptor[] | undefined;
    if (referrersCapabilityOf(this.#c.registry) !== "unsupported") {
      found = await this.#api(subject, options.signal, options.artifactType);
    }
    if (found === undefined) {
      const index = await this.#tagIndex(subject, options.signal, false);
      found = index?.manifests ?? [];
    }
    return options.artifactType
      ? found.filter((d) => d.artifactType === options.artifactType)
      : found;
  }

  /**
   * After pushing a manifest with a subject to a registry without the
   * referrers API: adds its descriptor to the `sha256-<hex>` tag's index
   * (read, modify, push). The previous index is left for the registry's gc.
   */
  async addToTag(
    subject: Digest,
    referrer: Descriptor,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    const registry = this.#c.registry;
    if (referrersCapabilityOf(registry) === "unknown") await this.#api(subject, options.signal);
    if (referrersCapabilityOf(registry) === "supported") return;
    const current = await this.#tagIndex(subject, options.signal, true);
    const manifests = (current?.manifests ?? []).filter((d) => d.digest !== referrer.digest);
    manifests.push(referrer);
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests };
    const bytes = new TextEncoder().encode(JSON.stringify(index));
    await this.#manifests.push(
      referrersTag(subject),
      { bytes, mediaType: MediaTypes.ociIndex },
      options,
    );
  }

  /** The referrers API result, or undefined when the registry does not implement it. */
  async #api(
    subject: Digest,
    signal?: AbortSignal,
    artifactType?: string,
  ): Promise<Descriptor[] | undefined> {
    const c = this.#c;
    const out: Descriptor[] = [];
    let url: URL | undefined = new URL(c.url(`referrers/${subject}`));
    if (artifactType) url.searchParams.set("artifactType", artifactType);
    for (let page = 0; url && page < MAX_PAGES; page++) {
      const res: Response = await c.send({
        method: "GET",
        url,
        headers: { Accept: MediaTypes.ociIndex },
        signal,
        scopes: c.scopes(false),
      });
      const type = (res.headers.get("content-type") ?? "").split(";")[0].trim();
      // A 404 that is not an index is the missing route of a registry that
      // predates OCI 1.1 (a real "no referrers" is an empty index).
      const missing = res.status === 404 && page === 0 && type !== MediaTypes.ociIndex;
      if (!missing && !res.ok) await c.fail(res, `referrers of "${subject}"`);
      if (missing || type !== MediaTypes.ociIndex) {
        await res.body?.cancel();
        learnReferrersCapability(c.registry, "unsupported");
        return undefined;
      }
      learnReferrersCapability(c.registry, "supported");
      const idx = validate(
        ImageIndexSchema,
        parseJsonBytes(await readBounded(res, MAX_MANIFEST_BYTES), { source: "referrers index" }),
        "referrers index",
      );
      out.push(...idx.manifests);
      url = nextLink(res, url);
    }
    return out;
  }

  async #tagIndex(
    subject: Digest,
    signal: AbortSignal | undefined,
    push: boolean,
  ): Promise<(ImageIndex & { digest: Digest }) | undefined> {
    const tag = referrersTag(subject);
    try {
      const m = await this.#manifests.fetch(tag, { signal, push });
      const idx = validate(
        ImageIndexSchema,
        parseJsonBytes(m.bytes, { source: `referrers tag ${tag}` }),
        `referrers tag ${tag}`,
      );
      return { ...idx, digest: m.descriptor.digest as Digest };
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }
}
