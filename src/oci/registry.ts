/**
 * @module
 * A client for one repository of an OCI distribution registry, split by
 * concern as oras-go's `registry/remote` is: manifests (bounded, verified,
 * media type checked), blobs (ranged reads; uploads by mount, monolithic PUT
 * or chunked PATCH), tags, and referrers (the OCI 1.1 API, or the
 * `sha256-<hex>` tag schema where the registry lacks it, with the capability
 * cached per registry).
 */
import { concatBytes } from "../util/bytes.ts";
import { DigestMismatchError, NotFoundError, RegistryError, ValidationError } from "../errors.ts";
import {
  type Descriptor,
  type Digest,
  digestHex,
  digestOf,
  type ImageIndex,
  ImageIndexSchema,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { isLoopbackRegistry } from "./reference.ts";
import {
  defaultTransport,
  type HttpRequest,
  isTlsError,
  NetworkError,
  ociCodes,
  type Transport,
} from "./transport.ts";

/** Media types a manifest GET asks for, in preference order. */
export const MANIFEST_ACCEPT = [
  MediaTypes.ociManifest,
  MediaTypes.ociIndex,
  MediaTypes.dockerManifest,
  MediaTypes.dockerManifestList,
].join(", ");

/** Blobs up to this size go in one PUT; larger ones in PATCH chunks. */
export const MONOLITHIC_MAX = 32 << 20;
export const DEFAULT_CHUNK = 64 << 20;

export type ReferrersCapability = "unknown" | "supported" | "unsupported";

const referrersCapability = new Map<string, "supported" | "unsupported">();

/** What ovm has learnt about a registry's referrers API in this process. */
export function referrersCapabilityOf(registry: string): ReferrersCapability {
  return referrersCapability.get(registry) ?? "unknown";
}

/** Forgets learnt capabilities (tests start registries on reused ports). */
export function resetCapabilities(): void {
  referrersCapability.clear();
}

export interface RepositoryOptions {
  transport?: Transport;
  /** Use http://; the default for loopback registries. */
  plainHttp?: boolean;
  /** Fall back to http:// when https:// cannot connect. */
  insecure?: boolean;
  /** Chunk size for PATCH uploads (raised to the registry's `OCI-Chunk-Min-Length`). */
  chunkSize?: number;
  /** Blobs up to this size go in one PUT (default {@linkcode MONOLITHIC_MAX}). */
  monolithicMax?: number;
}

export interface FetchedManifest {
  descriptor: Descriptor;
  bytes: Uint8Array;
}

/** The tag under which the referrers tag schema keeps a subject's referrers. */
export function referrersTag(subject: Digest): string {
  return `sha256-${digestHex(subject)}`;
}

export class Repository {
  readonly registry: string;
  readonly name: string;
  #t: Transport;
  #scheme: "http" | "https";
  #insecure: boolean;
  #chunkSize: number;
  #monolithicMax: number;

  constructor(
    ref: { registry: string; repository: string },
    options: RepositoryOptions = {},
  ) {
    this.registry = ref.registry;
    this.name = ref.repository;
    this.#t = options.transport ?? defaultTransport();
    this.#scheme = options.plainHttp ?? isLoopbackRegistry(ref.registry) ? "http" : "https";
    this.#insecure = options.insecure ?? false;
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
    this.#monolithicMax = options.monolithicMax ?? MONOLITHIC_MAX;
  }

  get baseUrl(): string {
    // Docker Hub's references say docker.io; its API lives elsewhere.
    const host = this.registry === "docker.io" ? "registry-1.docker.io" : this.registry;
    return `${this.#scheme}://${host}/v2/`;
  }

  #url(path: string): string {
    return `${this.baseUrl}${this.name}/${path}`;
  }

  #scopes(push: boolean, extra: string[] = []): string[] {
    return [`repository:${this.name}:${push ? "pull,push" : "pull"}`, ...extra];
  }

  async #send(req: HttpRequest): Promise<Response> {
    try {
      return await this.#t.roundTrip(req);
    } catch (e) {
      // --insecure: a registry that speaks only plain HTTP, as docker's
      // "insecure-registries" allows.
      if (this.#insecure && this.#scheme === "https" && e instanceof TypeError) {
        this.#scheme = "http";
        const u = new URL(req.url);
        u.protocol = "http:";
        return await this.#send({ ...req, url: u });
      }
      if (e instanceof TypeError) {
        const tls = isTlsError(e);
        const detail = e.cause instanceof Error ? e.cause.message : e.message;
        throw new NetworkError(`Cannot reach registry "${this.registry}": ${detail}`, {
          cause: e,
          tls,
          hint: tls && this.#scheme === "https"
            ? "the registry may speak plain HTTP: pass --plain-http (or --insecure)"
            : "check the registry address and that it is running",
        });
      }
      throw e;
    }
  }

  /** Turns an error response into a NotFoundError or RegistryError; consumes the body. */
  async #fail(res: Response, what: string): Promise<never> {
    const body = await readBounded(res, 64 << 10).then((b) => new TextDecoder().decode(b))
      .catch(() => "");
    const codes = ociCodes(body);
    const cause = new RegistryError(
      `Registry "${this.registry}" answered HTTP ${res.status} for ${what}${
        codes.length ? ` (${codes.join(", ")})` : ""
      }`,
      { status: res.status, ociCodes: codes },
    );
    if (res.status === 404) {
      const repoMissing = codes.includes("NAME_UNKNOWN");
      throw new NotFoundError(
        repoMissing
          ? `Repository "${this.registry}/${this.name}" was not found`
          : `${what[0].toUpperCase()}${
            what.slice(1)
          } was not found in "${this.registry}/${this.name}"`,
        { cause, hint: "check the reference (registry, repository, tag) and that it was pushed" },
      );
    }
    throw cause;
  }

  // ---- manifests ----

  /**
   * Fetches a manifest or index by tag or digest. The digest is computed from
   * the bytes (and must match the one asked for and any `Docker-Content-Digest`),
   * the size is bounded, and the media type must agree with `Content-Type`.
   */
  async fetchManifest(
    reference: string,
    options: { signal?: AbortSignal; push?: boolean } = {},
  ): Promise<FetchedManifest> {
    const what = `manifest "${reference}"`;
    const res = await this.#send({
      method: "GET",
      url: this.#url(`manifests/${reference}`),
      headers: { Accept: MANIFEST_ACCEPT },
      signal: options.signal,
      scopes: this.#scopes(options.push ?? false),
    });
    if (!res.ok) await this.#fail(res, what);
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
      throw new DigestMismatchError(
        `manifest from "${this.registry}/${this.name}"`,
        reference,
        digest,
      );
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
  async headManifest(
    reference: string,
    options: { signal?: AbortSignal; push?: boolean } = {},
  ): Promise<Descriptor | undefined> {
    const res = await this.#send({
      method: "HEAD",
      url: this.#url(`manifests/${reference}`),
      headers: { Accept: MANIFEST_ACCEPT },
      signal: options.signal,
      scopes: this.#scopes(options.push ?? false),
    });
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    if (!res.ok) await this.#fail(res, `manifest "${reference}"`);
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
  async pushManifest(
    reference: string,
    bytes: Uint8Array,
    mediaType: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ digest: Digest; subjectIndexed: boolean }> {
    const digest = digestOf(bytes);
    const res = await this.#send({
      method: "PUT",
      url: this.#url(`manifests/${reference}`),
      headers: { "Content-Type": mediaType },
      body: bytes,
      signal: options.signal,
      scopes: this.#scopes(true),
    });
    if (res.status !== 201 && res.status !== 200) {
      await this.#fail(res, `manifest push "${reference}"`);
    }
    await res.body?.cancel();
    const header = res.headers.get("docker-content-digest");
    if (header && header.startsWith("sha256:") && header !== digest) {
      throw new DigestMismatchError(`pushed manifest "${reference}"`, digest, header);
    }
    const subjectIndexed = res.headers.has("oci-subject");
    if (subjectIndexed) referrersCapability.set(this.registry, "supported");
    return { digest, subjectIndexed };
  }

  async deleteManifest(digest: Digest, options: { signal?: AbortSignal } = {}): Promise<void> {
    const res = await this.#send({
      method: "DELETE",
      url: this.#url(`manifests/${digest}`),
      signal: options.signal,
      scopes: [`repository:${this.name}:delete`],
    });
    if (!res.ok) await this.#fail(res, `manifest delete "${digest}"`);
    await res.body?.cancel();
  }

  // ---- blobs ----

  async blobExists(digest: string, options: { signal?: AbortSignal; push?: boolean } = {}) {
    const res = await this.#send({
      method: "HEAD",
      url: this.#url(`blobs/${digest}`),
      signal: options.signal,
      scopes: this.#scopes(options.push ?? false),
    });
    await res.body?.cancel();
    if (res.status === 404) return false;
    if (!res.ok) await this.#fail(res, `blob "${digest}"`);
    return true;
  }

  /**
   * Opens a blob's bytes from `offset` (a `Range` request when non-zero). A
   * 206 must carry the `Content-Range` asked for; a 200 to a ranged request
   * is skipped forward. The stream is not verified here: the ingest is.
   */
  async fetchBlob(
    desc: Descriptor,
    offset: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const headers: Record<string, string> = {};
    if (offset > 0) headers["Range"] = `bytes=${offset}-`;
    const res = await this.#send({
      method: "GET",
      url: this.#url(`blobs/${desc.digest}`),
      headers,
      signal: options.signal,
      scopes: this.#scopes(false),
    });
    if (res.status !== 200 && res.status !== 206) await this.#fail(res, `blob "${desc.digest}"`);
    const body = res.body ?? new Response(new Uint8Array()).body!;
    const length = res.headers.get("content-length");
    if (res.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
      if (
        !m || Number(m[1]) !== offset || (m[3] !== "*" && Number(m[3]) !== desc.size) ||
        Number(m[2]) >= desc.size
      ) {
        await body.cancel();
        throw new RegistryError(
          `Registry "${this.registry}" answered a range request for blob "${desc.digest}" from byte ${offset} with Content-Range "${
            res.headers.get("content-range") ?? ""
          }"`,
          { status: 206 },
        );
      }
      return body;
    }
    if (length !== null && Number(length) !== desc.size) {
      await body.cancel();
      throw new RegistryError(
        `Registry "${this.registry}" sent ${length} bytes for blob "${desc.digest}", whose descriptor says ${desc.size}`,
        { status: res.status },
      );
    }
    return offset > 0 ? body.pipeThrough(skipBytes(offset)) : body;
  }

  /**
   * Uploads a blob unless the registry has it: a cross-repository mount when
   * `mountFrom` is on the same registry (a 202 answer is an ordinary upload
   * session), then one PUT for small blobs or PATCH chunks for large ones.
   * `open(offset)` must stream the blob from `offset`, and may be called
   * again for a retry.
   */
  async pushBlob(
    desc: Descriptor,
    open: (offset: number) => Promise<ReadableStream<Uint8Array>>,
    options: {
      signal?: AbortSignal;
      mountFrom?: string;
      onProgress?: (sent: number) => void;
    } = {},
  ): Promise<"exists" | "mounted" | "pushed"> {
    const { signal } = options;
    if (await this.blobExists(desc.digest, { signal, push: true })) return "exists";
    let res: Response;
    const mount = options.mountFrom && options.mountFrom !== this.name;
    if (mount) {
      const u = new URL(this.#url("blobs/uploads/"));
      u.searchParams.set("mount", desc.digest);
      u.searchParams.set("from", options.mountFrom!);
      res = await this.#send({
        method: "POST",
        url: u,
        signal,
        scopes: this.#scopes(true, [`repository:${options.mountFrom}:pull`]),
      });
      if (res.status === 201) {
        await res.body?.cancel();
        return "mounted";
      }
    } else {
      res = await this.#send({
        method: "POST",
        url: this.#url("blobs/uploads/"),
        signal,
        scopes: this.#scopes(true),
      });
    }
    if (res.status !== 202) await this.#fail(res, `upload of blob "${desc.digest}"`);
    await res.body?.cancel();
    let location = this.#location(res);
    const minChunk = Number(res.headers.get("oci-chunk-min-length") ?? 0) || 0;
    const finish = (loc: URL): URL => {
      const u = new URL(loc);
      u.searchParams.set("digest", desc.digest);
      return u;
    };
    if (desc.size <= Math.max(this.#monolithicMax, minChunk)) {
      const put = await this.#send({
        method: "PUT",
        url: finish(location),
        headers: {
          "Content-Type": "application/octet-stream",
          "Content-Length": String(desc.size),
        },
        body: async () => counting(await open(0), 0, options.onProgress),
        signal,
        scopes: this.#scopes(true),
      });
      if (put.status !== 201) await this.#fail(put, `upload of blob "${desc.digest}"`);
      await put.body?.cancel();
      return "pushed";
    }
    const chunk = Math.max(this.#chunkSize, minChunk);
    let recoveries = 0;
    for (let start = 0; start < desc.size;) {
      const len = Math.min(chunk, desc.size - start);
      const from = start;
      let patch: Response | undefined;
      try {
        patch = await this.#send({
          method: "PATCH",
          url: location,
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Range": `${from}-${from + len - 1}`,
            "Content-Length": String(len),
          },
          body: async () => counting(limitBytes(await open(from), len), from, options.onProgress),
          signal,
          scopes: this.#scopes(true),
        });
      } catch (e) {
        if (!(e instanceof NetworkError) || e.tls || recoveries >= 3) throw e;
      }
      if (patch?.status === 202) {
        await patch.body?.cancel();
        location = this.#location(patch);
        start += len;
        continue;
      }
      // A chunk that failed half-way (a 416 after a retry, a lost
      // connection) may have been partly stored: ask the session where it
      // stands and go on from there.
      if (recoveries++ >= 3 || (patch && patch.status !== 416 && patch.status < 500)) {
        if (patch) await this.#fail(patch, `upload of blob "${desc.digest}"`);
      }
      await patch?.body?.cancel();
      const status = await this.#uploadStatus(location, signal);
      if (!status) {
        if (patch) await this.#fail(patch, `upload of blob "${desc.digest}"`);
        throw new RegistryError(`Upload of blob "${desc.digest}" to "${this.registry}" was lost`, {
          status: 0,
        });
      }
      location = status.location;
      start = status.offset;
    }
    const put = await this.#send({
      method: "PUT",
      url: finish(location),
      headers: { "Content-Length": "0" },
      body: new Uint8Array(),
      signal,
      scopes: this.#scopes(true),
    });
    if (put.status !== 201) await this.#fail(put, `upload of blob "${desc.digest}"`);
    await put.body?.cancel();
    return "pushed";
  }

  /** Where an upload session stands (`GET` on its location), or undefined if it is gone. */
  async #uploadStatus(
    location: URL,
    signal?: AbortSignal,
  ): Promise<{ offset: number; location: URL } | undefined> {
    const res = await this.#send({
      method: "GET",
      url: location,
      signal,
      scopes: this.#scopes(true),
    });
    await res.body?.cancel();
    if (res.status !== 204 && res.status !== 202) return undefined;
    const m = /^(?:bytes=)?0-(\d+)$/.exec(res.headers.get("range") ?? "");
    return { offset: m ? Number(m[1]) + 1 : 0, location: this.#location(res) };
  }

  #location(res: Response): URL {
    const loc = res.headers.get("location");
    if (!loc) {
      throw new RegistryError(
        `Registry "${this.registry}" started an upload without a Location header`,
        { status: res.status },
      );
    }
    return new URL(loc, this.baseUrl);
  }

  // ---- tags ----

  async listTags(options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const tags: string[] = [];
    let url: URL | undefined = new URL(this.#url("tags/list"));
    for (let page = 0; url && page < 1000; page++) {
      const res: Response = await this.#send({
        method: "GET",
        url,
        signal: options.signal,
        scopes: this.#scopes(false),
      });
      if (!res.ok) await this.#fail(res, "tag list");
      const doc = parseJsonBytes(await readBounded(res, 16 << 20), {
        source: "tag list",
        maxBytes: 16 << 20,
      }) as {
        tags?: string[] | null;
      };
      tags.push(...(doc.tags ?? []));
      url = nextLink(res, url);
    }
    return tags;
  }

  // ---- referrers ----

  /**
   * Lists the manifests whose `subject` is `subject`: the referrers API when
   * the registry has it, else the `sha256-<hex>` tag schema.
   */
  async referrers(
    subject: Digest,
    options: { signal?: AbortSignal; artifactType?: string } = {},
  ): Promise<Descriptor[]> {
    let found: Descriptor[] | undefined;
    if (referrersCapabilityOf(this.registry) !== "unsupported") {
      found = await this.#referrersApi(subject, options.signal, options.artifactType);
    }
    if (found === undefined) {
      const index = await this.#referrersTagIndex(subject, options.signal, false);
      found = index?.manifests ?? [];
    }
    return options.artifactType
      ? found.filter((d) => d.artifactType === options.artifactType)
      : found;
  }

  /** The referrers API result, or undefined when the registry does not implement it. */
  async #referrersApi(
    subject: Digest,
    signal?: AbortSignal,
    artifactType?: string,
  ): Promise<Descriptor[] | undefined> {
    const out: Descriptor[] = [];
    let url: URL | undefined = new URL(this.#url(`referrers/${subject}`));
    if (artifactType) url.searchParams.set("artifactType", artifactType);
    for (let page = 0; url && page < 1000; page++) {
      const res: Response = await this.#send({
        method: "GET",
        url,
        headers: { Accept: MediaTypes.ociIndex },
        signal,
        scopes: this.#scopes(false),
      });
      const type = (res.headers.get("content-type") ?? "").split(";")[0].trim();
      if (res.status === 404 && page === 0 && type !== MediaTypes.ociIndex) {
        // No such route: the registry predates OCI 1.1.
        await res.body?.cancel();
        referrersCapability.set(this.registry, "unsupported");
        return undefined;
      }
      if (!res.ok) await this.#fail(res, `referrers of "${subject}"`);
      if (type !== MediaTypes.ociIndex) {
        await res.body?.cancel();
        referrersCapability.set(this.registry, "unsupported");
        return undefined;
      }
      referrersCapability.set(this.registry, "supported");
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

  async #referrersTagIndex(
    subject: Digest,
    signal: AbortSignal | undefined,
    push: boolean,
  ): Promise<(ImageIndex & { digest: Digest }) | undefined> {
    try {
      const m = await this.fetchManifest(referrersTag(subject), { signal, push });
      const idx = validate(
        ImageIndexSchema,
        parseJsonBytes(m.bytes, { source: `referrers tag ${referrersTag(subject)}` }),
        `referrers tag ${referrersTag(subject)}`,
      );
      return { ...idx, digest: m.descriptor.digest as Digest };
    } catch (e) {
      if (e instanceof NotFoundError) return undefined;
      throw e;
    }
  }

  /**
   * After pushing a manifest with a subject to a registry without the
   * referrers API: adds its descriptor to the `sha256-<hex>` tag's index
   * (read, modify, push). The previous index is left for the registry's gc.
   */
  async addToReferrersTag(
    subject: Digest,
    referrer: Descriptor,
    options: { signal?: AbortSignal } = {},
  ): Promise<void> {
    if (referrersCapabilityOf(this.registry) === "unknown") {
      await this.#referrersApi(subject, options.signal);
    }
    if (referrersCapabilityOf(this.registry) === "supported") return;
    const current = await this.#referrersTagIndex(subject, options.signal, true);
    const manifests = (current?.manifests ?? []).filter((d) => d.digest !== referrer.digest);
    manifests.push(referrer);
    const index: ImageIndex = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests };
    const bytes = new TextEncoder().encode(JSON.stringify(index));
    await this.pushManifest(referrersTag(subject), bytes, MediaTypes.ociIndex, options);
  }

  /** GET /v2/ — reachability and credentials check for `ovm login`. */
  async ping(options: { signal?: AbortSignal } = {}): Promise<void> {
    const res = await this.#send({
      method: "GET",
      url: this.baseUrl,
      signal: options.signal,
      scopes: this.name ? this.#scopes(false) : [],
    });
    if (!res.ok) await this.#fail(res, "the API root /v2/");
    await res.body?.cancel();
  }
}

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
  const indexTypes: string[] = [MediaTypes.ociIndex, MediaTypes.dockerManifestList];
  const manifestTypes: string[] = [MediaTypes.ociManifest, MediaTypes.dockerManifest];
  if (
    (isIndex && !indexTypes.includes(mediaType)) ||
    (isManifest && !manifestTypes.includes(mediaType))
  ) {
    throw new ValidationError(
      `${what} has media type "${mediaType}", which does not fit its content`,
    );
  }
  if (!indexTypes.includes(mediaType) && !manifestTypes.includes(mediaType)) {
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

/** Reads a response body whole, throwing RangeError past `max` bytes (reads at most max+1). */
export async function readBounded(res: Response, max: number): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array();
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of res.body) {
    n += chunk.byteLength;
    if (n > max) throw new RangeError(`response body is over ${max} bytes`);
    parts.push(chunk);
  }
  return concatBytes(parts);
}

function nextLink(res: Response, base: URL): URL | undefined {
  const link = res.headers.get("link");
  const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
  return m ? new URL(m[1], base) : undefined;
}

function skipBytes(n: number): TransformStream<Uint8Array, Uint8Array> {
  let left = n;
  return new TransformStream({
    transform(chunk, ctl) {
      if (left >= chunk.byteLength) {
        left -= chunk.byteLength;
        return;
      }
      ctl.enqueue(left > 0 ? chunk.subarray(left) : chunk);
      left = 0;
    },
  });
}

/** The first `n` bytes of a stream; cancels the rest. */
export function limitBytes(s: ReadableStream<Uint8Array>, n: number): ReadableStream<Uint8Array> {
  const reader = s.getReader();
  let left = n;
  return new ReadableStream({
    async pull(ctl) {
      if (left <= 0) {
        await reader.cancel();
        ctl.close();
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        ctl.close();
        return;
      }
      const part = value.byteLength > left ? value.subarray(0, left) : value;
      left -= part.byteLength;
      ctl.enqueue(part);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

function counting(
  s: ReadableStream<Uint8Array>,
  base: number,
  onProgress?: (n: number) => void,
): ReadableStream<Uint8Array> {
  if (!onProgress) return s;
  let n = base;
  return s.pipeThrough(
    new TransformStream({
      transform(chunk, ctl) {
        n += chunk.byteLength;
        onProgress(n);
        ctl.enqueue(chunk);
      },
    }),
  );
}
