/**
 * @module
 * One copy engine for push, pull and registry-to-registry copy (oras-go's
 * `copy.go`): a {@linkcode CopySource} and a {@linkcode CopyTarget}, each
 * implemented by the local store, a remote repository, and (source only) an
 * export directory. The root is resolved once; blobs go first, bounded in
 * parallel, then manifests bottom-up, so a target never holds a manifest
 * whose blobs are missing.
 */
import { join } from "node:path";
import { delay } from "../util/async.ts";
import { AlreadyExistsError, DigestMismatchError, OvmError, ValidationError } from "../errors.ts";
import {
  Annotations,
  canonicalJson,
  type Descriptor,
  type Digest,
  digestHex,
  digestOf,
  type ImageIndex,
  ImageIndexSchema,
  type ImageManifest,
  ImageManifestSchema,
  manifestFromValue,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import {
  type ContentStore,
  type IngestWriter,
  isIndexType,
  isManifestType,
  layerDescriptors,
} from "../store/mod.ts";
import { exists, readFileBounded } from "../util/fs.ts";
import { checkManifestDocument, type FetchedManifest, type Repository } from "./remote/mod.ts";
import { isNetworkError } from "./remote/mod.ts";

/** Progress events; `--progress=json` prints them as NDJSON. */
export type CopyEvent =
  | { type: "resolved"; reference: string; digest: string; mediaType: string }
  | { type: "plan"; digest: string; blobs: number; size: number }
  | { type: "blob-start"; digest: string; size: number; offset: number; mediaType: string }
  | { type: "blob-progress"; digest: string; size: number; bytes: number }
  | { type: "blob-done"; digest: string; size: number; status: BlobStatus }
  | { type: "blob-retry"; digest: string; offset: number; reason: string }
  | { type: "manifest-done"; digest: string; reference?: string };

export type BlobStatus = "exists" | "mounted" | "pushed" | "fetched";

export interface CopySource {
  readonly label: string;
  /** The repository a target on the same registry may mount blobs from. */
  readonly remote?: Repository;
  /** Resolves a reference (once) to the root manifest and its bytes. */
  resolve(reference: string | undefined, signal?: AbortSignal): Promise<FetchedManifest>;
  /** A manifest by descriptor; the digest is verified. */
  fetchManifest(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array>;
  /** A blob's bytes from `offset`. */
  openBlob(
    desc: Descriptor,
    offset: number,
    signal?: AbortSignal,
  ): Promise<ReadableStream<Uint8Array>>;
}

export interface CopyTarget {
  readonly label: string;
  pushBlob(
    desc: Descriptor,
    src: CopySource,
    options: { signal?: AbortSignal; emit: (e: CopyEvent) => void },
  ): Promise<BlobStatus>;
  pushManifest(
    desc: Descriptor,
    bytes: Uint8Array,
    options: { reference?: string; signal?: AbortSignal },
  ): Promise<void>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface CopyOptions {
  signal?: AbortSignal;
  /** Blobs in flight at once. */
  concurrency?: number;
  /** Pick this platform's manifest out of an index (else the whole index is copied). */
  platform?: Platform;
  /** Checks the manifest and config before any layer moves (e.g. "is this OVMS?"). */
  verify?: (desc: Descriptor, manifest: Uint8Array, config: Uint8Array) => void;
  onEvent?: (e: CopyEvent) => void;
}

export interface CopyResult {
  /** The root that was copied (the platform manifest when one was picked). */
  descriptor: Descriptor;
  /** The root the source reference resolved to. */
  resolved: Descriptor;
  blobs: number;
  bytes: number;
  transferred: number;
}

/** Copies the graph under `srcRef` from `src` to `dst`, tagging it `dstRef`. */
export async function copy(
  src: CopySource,
  dst: CopyTarget,
  options: CopyOptions & { srcRef?: string; dstRef?: string } = {},
): Promise<CopyResult> {
  // One controller per copy: whatever fails (a blob, a manifest, the
  // caller's abort) stops every transfer this copy started; each is awaited
  // before copy() settles (see pool), so nothing writes after it returned.
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  const emit = options.onEvent ?? (() => {});
  try {
    return await copyRoot(src, dst, { ...options, signal, emit });
  } catch (e) {
    stop.abort(e);
    throw e;
  }
}

async function copyRoot(
  src: CopySource,
  dst: CopyTarget,
  options: CopyOptions & {
    srcRef?: string;
    dstRef?: string;
    signal: AbortSignal;
    emit: (e: CopyEvent) => void;
  },
): Promise<CopyResult> {
  const { signal, emit } = options;
  const root = await src.resolve(options.srcRef, signal);
  emit({
    type: "resolved",
    reference: options.srcRef ?? root.descriptor.digest,
    digest: root.descriptor.digest,
    mediaType: root.descriptor.mediaType,
  });
  let node = root;
  if (isIndexType(node.descriptor.mediaType) && options.platform) {
    const index = parseIndex(node);
    const child = pickPlatform(index, options.platform);
    if (!child) {
      throw new ValidationError(
        `"${src.label}" has no manifest for ${formatPlatform(options.platform)}`,
        {
          hint: `it has: ${
            index.manifests.map((m) =>
              m.platform ? formatPlatform(m.platform) : m.digest.slice(0, 19)
            ).join(", ")
          }`,
        },
      );
    }
    node = { descriptor: child, bytes: await src.fetchManifest(child, signal) };
  }
  const stats = { blobs: 0, bytes: 0, transferred: 0 };
  await copyNode(src, dst, node, options.dstRef, options, stats, 0);
  return { descriptor: node.descriptor, resolved: root.descriptor, ...stats };
}

async function copyNode(
  src: CopySource,
  dst: CopyTarget,
  node: FetchedManifest,
  reference: string | undefined,
  options: CopyOptions & { signal: AbortSignal; emit: (e: CopyEvent) => void },
  stats: { blobs: number; bytes: number; transferred: number },
  depth: number,
): Promise<void> {
  const { signal, emit } = options;
  if (depth > 4) throw new ValidationError(`"${src.label}" nests indexes too deeply`);
  if (isIndexType(node.descriptor.mediaType)) {
    for (const child of parseIndex(node).manifests) {
      if (!isIndexType(child.mediaType) && !isManifestType(child.mediaType)) continue;
      const bytes = await src.fetchManifest(child, signal);
      await copyNode(src, dst, { descriptor: child, bytes }, undefined, options, stats, depth + 1);
    }
  } else {
    const source = `manifest ${node.descriptor.digest}`;
    const m = validate(ImageManifestSchema, parseJsonBytes(node.bytes, { source }), source);
    if (options.verify) {
      const config = await readBlobBounded(src, m.config, signal);
      options.verify(node.descriptor, node.bytes, config);
    }
    const blobs = uniqueByDigest([m.config, ...m.layers]);
    emit({
      type: "plan",
      digest: node.descriptor.digest,
      blobs: blobs.length,
      size: blobs.reduce((n, b) => n + b.size, 0),
    });
    await pool(blobs, options.concurrency ?? 4, async (b, signal) => {
      const status = await dst.pushBlob(b, src, { signal, emit });
      stats.blobs++;
      stats.bytes += b.size;
      if (status === "pushed" || status === "fetched") stats.transferred += b.size;
      emit({ type: "blob-done", digest: b.digest, size: b.size, status });
    }, { signal });
  }
  await dst.pushManifest(node.descriptor, node.bytes, { reference, signal });
  emit({ type: "manifest-done", digest: node.descriptor.digest, reference });
}

function parseIndex(node: FetchedManifest): ImageIndex {
  const source = `index ${node.descriptor.digest}`;
  return validate(ImageIndexSchema, parseJsonBytes(node.bytes, { source }), source);
}

/** The host's platform in OCI terms. */
export function hostPlatform(): Platform {
  const arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
  return { os: "linux", architecture: arch };
}

function pickPlatform(index: ImageIndex, want: Platform): Descriptor | undefined {
  return index.manifests.find((m) =>
    m.platform?.os === want.os && m.platform.architecture === want.architecture &&
    (!want.variant || m.platform.variant === want.variant)
  );
}

function formatPlatform(p: { os: string; architecture: string; variant?: string }): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ""}`;
}

function uniqueByDigest(ds: Descriptor[]): Descriptor[] {
  const seen = new Set<string>();
  return ds.filter((d) => !seen.has(d.digest) && (seen.add(d.digest), true));
}

/**
 * Runs `fn` over items with at most `limit` in flight. The first failure (or
 * `options.signal`) aborts the signal every `fn` was given, so the items in
 * flight stop, and starts nothing new; pool settles only after every `fn` it
 * started has settled, then throws that first failure.
 */
export async function pool<T>(
  items: T[],
  limit: number,
  fn: (item: T, signal: AbortSignal) => Promise<void>,
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  const stop = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
  let next = 0;
  let failed: { e: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++];
      try {
        signal.throwIfAborted();
        await fn(item, signal);
      } catch (e) {
        if (!failed) {
          failed = { e };
          stop.abort(e);
        }
      }
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker);
  await Promise.allSettled(workers);
  if (failed) throw failed.e;
}

/**
 * Iterates a stream and stops as soon as `signal` aborts: a fetch body that
 * is waiting for bytes does not end by itself when its request is aborted
 * (it would go on until the server sends more), so the reader is cancelled.
 * A loop left early (break, error, abort) cancels the stream too.
 */
export async function* chunksOf(
  stream: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const reader = stream.getReader();
  const onAbort = () => void reader.cancel(signal!.reason).catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      signal?.throwIfAborted();
      const { done, value } = await reader.read();
      signal?.throwIfAborted();
      if (done) return;
      yield value;
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    await reader.cancel().catch(() => {});
  }
}

async function readBlobBounded(
  src: CopySource,
  desc: Descriptor,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  if (desc.size > MAX_MANIFEST_BYTES) {
    throw new ValidationError(`Config blob "${desc.digest}" is ${desc.size} bytes, over 4 MiB`);
  }
  const bytes = await new Response(await src.openBlob(desc, 0, signal)).bytes();
  const actual = digestOf(bytes);
  if (bytes.byteLength !== desc.size || actual !== desc.digest) {
    throw new DigestMismatchError(`config blob from "${src.label}"`, desc.digest, actual);
  }
  return bytes;
}

// ---- the local store ----

/** The local store as a source (push). */
export class StoreSource implements CopySource {
  readonly label: string;
  #store: ContentStore;

  constructor(store: ContentStore, label = "local store") {
    this.#store = store;
    this.label = label;
  }

  async resolve(reference: string | undefined): Promise<FetchedManifest> {
    if (!reference) throw new ValidationError("A local reference is required");
    const d = await this.#store.resolve(reference);
    const bytes = await this.#store.readBlob(d.digest);
    const mediaType = checkManifestDocument(bytes, d.mediaType, `local manifest "${reference}"`);
    return {
      descriptor: {
        mediaType,
        digest: d.digest,
        size: bytes.byteLength,
        ...(d.artifactType ? { artifactType: d.artifactType } : {}),
      },
      bytes,
    };
  }

  fetchManifest(desc: Descriptor): Promise<Uint8Array> {
    return this.#store.readBlob(desc.digest);
  }

  async openBlob(desc: Descriptor, offset: number): Promise<ReadableStream<Uint8Array>> {
    return fileStream(await this.#store.openBlob(desc.digest), offset);
  }
}

/**
 * The local store as a target (pull): blobs stream into keyed, resumable
 * ingests verified on commit; a dropped connection resumes with a range
 * request from the bytes already written; an abort keeps the partial file
 * for the next pull; anything else (wrong digest, wrong size) discards it.
 */
export class StoreTarget implements CopyTarget {
  readonly label = "local store";
  #store: ContentStore;
  #maxResumes: number;

  constructor(store: ContentStore, options: { maxResumes?: number } = {}) {
    this.#store = store;
    this.#maxResumes = options.maxResumes ?? 5;
  }

  async pushBlob(
    desc: Descriptor,
    src: CopySource,
    options: { signal?: AbortSignal; emit: (e: CopyEvent) => void },
  ): Promise<BlobStatus> {
    const { signal, emit } = options;
    let w: IngestWriter;
    for (;;) {
      if (await this.#store.has(desc.digest)) return "exists";
      try {
        w = await this.#store.openIngest({
          key: digestHex(desc.digest as Digest),
          expectedDigest: desc.digest as Digest,
          expectedSize: desc.size,
        });
        break;
      } catch (e) {
        // Another pull (this process or another) is fetching the same blob:
        // wait for it to finish, then use its result or take over.
        if (!(e instanceof AlreadyExistsError)) throw e;
        await delay(200, signal);
      }
    }
    emit({
      type: "blob-start",
      digest: desc.digest,
      size: desc.size,
      offset: w.offset,
      mediaType: desc.mediaType,
    });
    let keep = false;
    const batch = new BatchWriter(w);
    try {
      for (let resumes = 0;; resumes++) {
        try {
          if (w.offset < desc.size || desc.size === 0) {
            const stream = await src.openBlob(desc, w.offset, signal);
            let got = w.offset;
            for await (const chunk of chunksOf(stream, signal)) {
              // Checked here, not only by the writer, so reading stops at
              // size+1 even while bytes wait in the batch.
              if (got + chunk.byteLength > desc.size) {
                await batch.flush();
                await w.write(chunk);
              }
              await batch.push(chunk);
              got += chunk.byteLength;
              emit({ type: "blob-progress", digest: desc.digest, size: desc.size, bytes: got });
            }
            await batch.flush();
          }
          break;
        } catch (e) {
          // What arrived intact before a failure is kept for the resume.
          await batch.flush().catch(() => {});
          if (signal?.aborted) throw e;
          if (!isNetworkError(e) || resumes >= this.#maxResumes) throw e;
          emit({
            type: "blob-retry",
            digest: desc.digest,
            offset: w.offset,
            reason: (e as Error).message,
          });
        }
      }
      await w.commit();
      return "fetched";
    } catch (e) {
      // An interrupted blob keeps its partial file for the next pull, but
      // only when it holds bytes: an empty one is nothing to resume from.
      keep = w.offset > 0 &&
        (signal?.aborted === true || isNetworkError(e) ||
          (e instanceof DOMException && e.name === "AbortError"));
      // A concurrent writer of the same blob may have committed it under us
      // (the store releases the ingest lock just before its rename): what is
      // in blobs/ was verified by that writer, so it is as good as ours.
      if (!keep && e instanceof Deno.errors.NotFound && await this.#store.has(desc.digest)) {
        return "exists";
      }
      throw e;
    } finally {
      if (keep) w.close();
      else await w.abort();
    }
  }

  async pushManifest(
    desc: Descriptor,
    bytes: Uint8Array,
    options: { reference?: string },
  ): Promise<void> {
    await this.#store.writeBlob(bytes, { expectedDigest: desc.digest as Digest });
    if (options.reference) await this.#store.tag(options.reference, desc);
    else await this.#store.addUntagged(desc);
  }
}

const BATCH = 4 << 20;

/**
 * Coalesces the network's small chunks into 4 MiB writes, and keeps one
 * write in flight while the next batch fills (two buffers), so reading the
 * socket overlaps writing the file.
 */
class BatchWriter {
  #w: { write(chunk: Uint8Array): Promise<void> };
  #bufs: Uint8Array[] = [];
  #cur = 0;
  #n = 0;
  #inflight: Promise<void> | undefined;

  constructor(w: { write(chunk: Uint8Array): Promise<void> }) {
    this.#w = w;
  }

  /** Bytes accepted but not yet confirmed written. */
  get pending(): number {
    return this.#n;
  }

  async push(chunk: Uint8Array): Promise<void> {
    if (this.#n + chunk.byteLength > BATCH) await this.#rotate();
    if (chunk.byteLength >= BATCH) {
      await this.#settle();
      return await this.#w.write(chunk);
    }
    const buf = (this.#bufs[this.#cur] ??= new Uint8Array(BATCH));
    buf.set(chunk, this.#n);
    this.#n += chunk.byteLength;
  }

  async #settle(): Promise<void> {
    const p = this.#inflight;
    this.#inflight = undefined;
    await p;
  }

  async #rotate(): Promise<void> {
    await this.#settle();
    if (this.#n === 0) return;
    this.#inflight = this.#w.write(this.#bufs[this.#cur].subarray(0, this.#n));
    // Keep a rejection from being reported as unhandled before it is awaited.
    this.#inflight.catch(() => {});
    this.#cur ^= 1;
    this.#n = 0;
  }

  /** Writes everything accepted and waits for it. */
  async flush(): Promise<void> {
    await this.#rotate();
    await this.#settle();
  }
}

/**
 * Source streams handed to an upload, kept stoppable: `fetch` cancels a
 * request body neither when the server answers before reading it all nor
 * at once when the request is aborted (it may go on pulling it for a while),
 * and then the source (a store file, a connection to another registry) would
 * still be read after the transfer returned.
 */
class OwnedStreams {
  #open = new Set<{ stop(): Promise<void> }>();

  wrap(stream: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const reader = stream.getReader();
    let pending: Promise<unknown> = Promise.resolve();
    let ctl!: ReadableStreamDefaultController<Uint8Array>;
    const entry = {
      stop: async () => {
        this.#open.delete(entry);
        // Queued chunks are dropped and whoever reads gets an error, never a
        // clean end (which would look like a short blob).
        try {
          ctl.error(new DOMException("the transfer was stopped", "AbortError"));
        } catch { /* already closed */ }
        await reader.cancel().catch(() => {});
        // A read in flight holds the source (the file stays open) until it ends.
        await pending.catch(() => {});
      },
    };
    this.#open.add(entry);
    return new ReadableStream<Uint8Array>({
      start: (c) => {
        ctl = c;
      },
      pull: async (c) => {
        const read = reader.read();
        pending = read;
        const { done, value } = await read;
        if (!this.#open.has(entry)) return;
        if (!done) return c.enqueue(value);
        this.#open.delete(entry);
        c.close();
      },
      cancel: async (reason) => {
        this.#open.delete(entry);
        await reader.cancel(reason);
      },
    });
  }

  /** Stops every stream still open; settles once none reads its source any more. */
  async stopAll(): Promise<void> {
    await Promise.allSettled([...this.#open].map((e) => e.stop()));
  }
}

// ---- a remote repository ----

export class RemoteSource implements CopySource {
  readonly label: string;
  readonly remote: Repository;

  constructor(repo: Repository) {
    this.remote = repo;
    this.label = `${repo.registry}/${repo.name}`;
  }

  resolve(reference: string | undefined, signal?: AbortSignal): Promise<FetchedManifest> {
    return this.remote.fetchManifest(reference ?? "latest", { signal });
  }

  async fetchManifest(desc: Descriptor, signal?: AbortSignal): Promise<Uint8Array> {
    return (await this.remote.fetchManifest(desc.digest, { signal })).bytes;
  }

  openBlob(desc: Descriptor, offset: number, signal?: AbortSignal) {
    return this.remote.fetchBlob(desc, offset, { signal });
  }
}

/**
 * A remote repository as a target. A manifest with a `subject` pushed to a
 * registry without the referrers API is added to the `sha256-<hex>` tag index.
 */
export class RemoteTarget implements CopyTarget {
  readonly label: string;
  #repo: Repository;

  constructor(repo: Repository) {
    this.#repo = repo;
    this.label = `${repo.registry}/${repo.name}`;
  }

  async pushBlob(
    desc: Descriptor,
    src: CopySource,
    options: { signal?: AbortSignal; emit: (e: CopyEvent) => void },
  ): Promise<BlobStatus> {
    const { signal, emit } = options;
    const mountFrom = src.remote?.registry === this.#repo.registry ? src.remote.name : undefined;
    let started = false;
    let live = true;
    const opened = new OwnedStreams();
    try {
      return await this.#repo.pushBlob(desc, async (offset) => {
        if (!started) {
          started = true;
          emit({
            type: "blob-start",
            digest: desc.digest,
            size: desc.size,
            offset,
            mediaType: desc.mediaType,
          });
        }
        return opened.wrap(await src.openBlob(desc, offset, signal));
      }, {
        signal,
        mountFrom,
        onProgress: (bytes) => {
          if (live) emit({ type: "blob-progress", digest: desc.digest, size: desc.size, bytes });
        },
      });
    } finally {
      live = false;
      // The upload has settled: whatever fetch still holds of the source
      // (a body the registry answered early, an aborted request) is stopped
      // here, so the source file or connection is closed when we return.
      await opened.stopAll();
    }
  }

  async pushManifest(
    desc: Descriptor,
    bytes: Uint8Array,
    options: { reference?: string; signal?: AbortSignal },
  ): Promise<void> {
    const { subjectIndexed } = await this.#repo.pushManifest(
      options.reference ?? desc.digest,
      bytes,
      desc.mediaType,
      { signal: options.signal },
    );
    const doc = parseJsonBytes(bytes, { source: `manifest ${desc.digest}` }) as {
      subject?: Descriptor;
      artifactType?: string;
      config?: Descriptor;
      annotations?: Record<string, string>;
    };
    if (doc.subject && !subjectIndexed) {
      const artifactType = doc.artifactType ?? doc.config?.mediaType;
      await this.#repo.addToReferrersTag(doc.subject.digest as Digest, {
        mediaType: desc.mediaType,
        digest: desc.digest,
        size: desc.size,
        ...(artifactType ? { artifactType } : {}),
        ...(doc.annotations ? { annotations: doc.annotations } : {}),
      }, { signal: options.signal });
    }
  }
}

// ---- an export directory (spec section 4) ----

/**
 * A directory in the download layout `ovm export` writes. With
 * `metadata/oci-manifest.json` the exact manifest is republished (same
 * digest); without it the OCI manifest is rebuilt from `manifest.json` as
 * `ovm pack` would.
 */
export class DirSource implements CopySource {
  readonly label: string;
  #dir: string;
  #configDigest?: string;

  constructor(dir: string) {
    this.#dir = dir;
    this.label = dir;
  }

  static async looksLikeExport(dir: string): Promise<boolean> {
    return await exists(join(dir, "manifest.json")) && await exists(join(dir, "blobs"));
  }

  async resolve(): Promise<FetchedManifest> {
    const configBytes = await readFileBounded(join(this.#dir, "manifest.json"), MAX_MANIFEST_BYTES);
    const ovms = manifestFromValue(
      parseJsonBytes(configBytes, { source: `${this.#dir}/manifest.json` }),
      `${this.#dir}/manifest.json`,
    );
    this.#configDigest = digestOf(configBytes);
    const ociPath = join(this.#dir, "metadata", "oci-manifest.json");
    let bytes: Uint8Array;
    if (await exists(ociPath)) {
      bytes = await readFileBounded(ociPath, MAX_MANIFEST_BYTES);
      const oci = validate(
        ImageManifestSchema,
        parseJsonBytes(bytes, { source: ociPath }),
        ociPath,
      );
      if (oci.config.digest !== this.#configDigest) {
        throw new ValidationError(
          `"${ociPath}" names config "${oci.config.digest}" but manifest.json is "${this.#configDigest}"`,
          { hint: "the export directory was modified; export it again" },
        );
      }
    } else {
      const sizes = new Map<string, number>();
      for (const l of layerDescriptors(ovms, () => 0)) {
        sizes.set(l.digest, (await Deno.stat(this.#blobFile(l.digest))).size);
      }
      const oci: ImageManifest = {
        schemaVersion: 2,
        mediaType: MediaTypes.ociManifest,
        artifactType: MediaTypes.manifest,
        config: {
          mediaType: MediaTypes.manifest,
          digest: this.#configDigest,
          size: configBytes.byteLength,
        },
        layers: layerDescriptors(ovms, (d) => sizes.get(d)!),
        annotations: { [Annotations.title]: `${ovms.name}:${ovms.version}` },
      };
      bytes = canonicalJson(oci);
    }
    return {
      descriptor: {
        mediaType: MediaTypes.ociManifest,
        digest: digestOf(bytes),
        size: bytes.byteLength,
        artifactType: MediaTypes.manifest,
      },
      bytes,
    };
  }

  fetchManifest(): Promise<Uint8Array> {
    throw new OvmError(`An export directory holds a single manifest`);
  }

  #blobFile(digest: string): string {
    return join(this.#dir, "blobs", `sha256-${digest.slice(7)}`);
  }

  async openBlob(desc: Descriptor, offset: number): Promise<ReadableStream<Uint8Array>> {
    const path = desc.digest === this.#configDigest
      ? join(this.#dir, "manifest.json")
      : this.#blobFile(desc.digest);
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch (cause) {
      throw new ValidationError(`Export directory "${this.#dir}" lacks blob "${desc.digest}"`, {
        cause,
      });
    }
    return fileStream(f, offset);
  }
}

const READ_CHUNK = 1 << 20;

/**
 * A file's bytes from `offset` as a stream that closes the file on end,
 * error or cancel. Unlike `FsFile.readable`, cancelling it waits for the
 * read in flight and closes the file before it settles, so a stopped upload
 * holds no descriptor of the store. One chunk is read ahead.
 */
export async function fileStream(
  file: Deno.FsFile,
  offset = 0,
): Promise<ReadableStream<Uint8Array>> {
  let closed = false;
  let inflight: Promise<unknown> = Promise.resolve();
  const close = () => {
    if (closed) return;
    closed = true;
    file.close();
  };
  try {
    if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
  } catch (e) {
    close();
    throw e;
  }
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const buf = new Uint8Array(READ_CHUNK);
      const read = file.read(buf);
      inflight = read;
      let n: number | null;
      try {
        n = await read;
      } catch (e) {
        close();
        throw e;
      }
      if (closed) return;
      if (n === null) {
        close();
        ctl.close();
      } else {
        ctl.enqueue(buf.subarray(0, n));
      }
    },
    async cancel() {
      await inflight.catch(() => {});
      close();
    },
  }, { highWaterMark: 1 });
}
