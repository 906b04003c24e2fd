/**
 * @module
 * The local content store: an OCI image layout (`oci-layout`, `index.json`,
 * `blobs/sha256/`) that skopeo and umoci can read, with containerd's write
 * discipline. Every blob is written ingest → fsync → verify size and digest →
 * chmod read-only → rename, so a reader never sees a half-written or wrong
 * blob, and a writer killed at any point leaves only a partial ingest file.
 *
 * Locks: writers hold `store.lock` shared for the whole multi-step write (see
 * {@linkcode ContentStore.lease}); `gc` holds it exclusively, so it never
 * removes a blob that a writer is about to reference. `index.json` is updated
 * under its own exclusive lock, read-modify-write, atomically.
 */
import { join } from "node:path";
import {
  AlreadyExistsError,
  DigestMismatchError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import {
  type Descriptor,
  type Digest,
  Digester,
  digestHex,
  digestOf,
  type ImageIndex,
  ImageIndexSchema,
  ImageManifestSchema,
  isDigest,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseDigest,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { exists, fsyncDir, readFileBounded, uniqueTempName, writeJsonAtomic } from "../util/fs.ts";
import { type HomePaths, homePaths } from "./paths.ts";
import { parseLocalRef } from "./refs.ts";

export interface BlobInfo {
  digest: Digest;
  size: number;
}

export interface RefEntry {
  /** `name:tag` */
  name: string;
  descriptor: Descriptor;
}

export interface IngestOptions {
  expectedDigest?: Digest;
  expectedSize?: number;
  signal?: AbortSignal;
  /** Called with the number of bytes written so far. */
  onProgress?: (written: number) => void;
}

const REF_ANNOTATION = "org.opencontainers.image.ref.name";
const CHUNK = 1 << 20;

/** A partial blob being written; resumable when opened with a stable key. */
export class IngestWriter {
  #file: Deno.FsFile;
  #path: string;
  #digester: Digester;
  #store: ContentStore;
  #opts: IngestOptions;
  #done = false;

  constructor(
    store: ContentStore,
    file: Deno.FsFile,
    path: string,
    digester: Digester,
    opts: IngestOptions,
  ) {
    this.#store = store;
    this.#file = file;
    this.#path = path;
    this.#digester = digester;
    this.#opts = opts;
  }

  /** Bytes already in the ingest file (non-zero when resuming). */
  get offset(): number {
    return this.#digester.size;
  }

  get path(): string {
    return this.#path;
  }

  async write(chunk: Uint8Array): Promise<void> {
    const limit = this.#opts.expectedSize;
    if (limit !== undefined && this.#digester.size + chunk.byteLength > limit) {
      throw new ValidationError(
        `Blob${
          this.#opts.expectedDigest ? ` "${this.#opts.expectedDigest}"` : ""
        } is longer than its declared size of ${limit} bytes`,
      );
    }
    let off = 0;
    while (off < chunk.byteLength) off += await this.#file.write(chunk.subarray(off));
    this.#digester.update(chunk);
  }

  /** Verifies size and digest, then moves the blob into place. */
  async commit(): Promise<BlobInfo> {
    const size = this.#digester.size;
    const digest = this.#digester.digest();
    const { expectedDigest, expectedSize } = this.#opts;
    try {
      if (expectedSize !== undefined && size !== expectedSize) {
        throw new ValidationError(
          `Blob${
            expectedDigest ? ` "${expectedDigest}"` : ""
          } is ${size} bytes, expected ${expectedSize}`,
        );
      }
      if (expectedDigest !== undefined && digest !== expectedDigest) {
        throw new DigestMismatchError("blob", expectedDigest, digest);
      }
      await this.#file.sync();
    } catch (e) {
      await this.abort();
      throw e;
    }
    // Rename while still holding the ingest lock: a second writer of the
    // same key must not open the file between our close and our rename.
    try {
      await Deno.chmod(this.#path, 0o444);
      const target = this.#store.blobPath(digest);
      // Two writers of one blob: both renames succeed and leave identical bytes.
      await Deno.rename(this.#path, target);
    } finally {
      this.#file.close();
      this.#done = true;
    }
    await fsyncDir(join(this.#store.root, "blobs", "sha256"));
    return { digest, size };
  }

  /** Removes the partial file. */
  async abort(): Promise<void> {
    if (!this.#done) {
      this.#done = true;
      try {
        this.#file.close();
      } catch { /* already closed */ }
    }
    await Deno.remove(this.#path).catch(() => {});
  }

  /** Keeps the partial file for a later resume (or for gc to remove). */
  close(): void {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

export class ContentStore {
  readonly paths: HomePaths;

  private constructor(paths: HomePaths) {
    this.paths = paths;
  }

  /** The OCI layout directory. */
  get root(): string {
    return this.paths.store;
  }

  /** Opens (creating when missing) the store under an ovm home directory. */
  static async open(home: string): Promise<ContentStore> {
    const paths = homePaths(home);
    await Deno.mkdir(join(paths.store, "blobs", "sha256"), { recursive: true });
    await Deno.mkdir(paths.ingest, { recursive: true });
    const layoutFile = join(paths.store, "oci-layout");
    if (!(await exists(layoutFile))) {
      await writeJsonAtomic(layoutFile, { imageLayoutVersion: "1.0.0" });
    }
    const indexFile = join(paths.store, "index.json");
    if (!(await exists(indexFile))) {
      await writeJsonAtomic(indexFile, {
        schemaVersion: 2,
        mediaType: MediaTypes.ociIndex,
        manifests: [],
      });
    }
    return new ContentStore(paths);
  }

  /** Path of a blob; the digest is validated first, so no path is built from bad input. */
  blobPath(digest: string): string {
    const d = parseDigest(digest);
    return join(this.root, "blobs", "sha256", digestHex(d));
  }

  async has(digest: string): Promise<boolean> {
    return await exists(this.blobPath(digest));
  }

  async stat(digest: string): Promise<BlobInfo> {
    const path = this.blobPath(digest);
    try {
      const st = await Deno.stat(path);
      return { digest: digest as Digest, size: st.size };
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`Blob "${digest}" is not in the local store`, { cause: e });
      }
      throw e;
    }
  }

  /** Reads a small blob whole and checks its digest (for manifests and configs). */
  async readBlob(digest: string, options: { maxBytes?: number } = {}): Promise<Uint8Array> {
    const path = this.blobPath(digest);
    let bytes: Uint8Array;
    try {
      bytes = await readFileBounded(path, options.maxBytes ?? MAX_MANIFEST_BYTES);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`Blob "${digest}" is not in the local store`, { cause: e });
      }
      if (e instanceof RangeError) throw new ValidationError(e.message, { cause: e });
      throw e;
    }
    const actual = digestOf(bytes);
    if (actual !== digest) throw new DigestMismatchError(`stored blob`, digest, actual);
    return bytes;
  }

  async openBlob(digest: string): Promise<Deno.FsFile> {
    try {
      return await Deno.open(this.blobPath(digest), { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`Blob "${digest}" is not in the local store`, { cause: e });
      }
      throw e;
    }
  }

  /**
   * Opens an ingest. With a `key` (for example the expected digest's hex) the
   * ingest is resumable: an earlier partial file is re-hashed and appended to.
   * A key that another writer holds right now is a {@linkcode AlreadyExistsError}.
   */
  async openIngest(options: IngestOptions & { key?: string } = {}): Promise<IngestWriter> {
    const key = options.key ?? uniqueTempName("ingest");
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(key)) {
      throw new ValidationError(`Invalid ingest key "${key}"`);
    }
    const path = join(this.paths.ingest, key);
    const file = await Deno.open(path, { read: true, write: true, create: true, mode: 0o644 });
    try {
      if (!(await file.tryLock(true))) {
        throw new AlreadyExistsError(`Another ovm process is writing "${key}" right now`, {
          hint: "wait for it to finish",
        });
      }
      const digester = new Digester();
      const st = await file.stat();
      if (options.expectedSize !== undefined && st.size > options.expectedSize) {
        await file.truncate(0);
      } else if (st.size > 0) {
        const buf = new Uint8Array(CHUNK);
        while (true) {
          const n = await file.read(buf);
          if (n === null) break;
          digester.update(buf.subarray(0, n));
        }
      }
      await file.seek(digester.size, Deno.SeekMode.Start);
      return new IngestWriter(this, file, path, digester, options);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Writes a stream as a blob, verifying what was expected. Aborts cleanly on error or signal. */
  async ingest(
    source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
    options: IngestOptions = {},
  ): Promise<BlobInfo> {
    if (options.expectedDigest && (await this.has(options.expectedDigest))) {
      if (source instanceof ReadableStream) await source.cancel().catch(() => {});
      return await this.stat(options.expectedDigest);
    }
    const w = await this.openIngest(options);
    try {
      for await (const chunk of source) {
        options.signal?.throwIfAborted();
        await w.write(chunk);
        options.onProgress?.(w.offset);
      }
      return await w.commit();
    } catch (e) {
      await w.abort();
      throw e;
    }
  }

  async writeBlob(data: Uint8Array, options: { expectedDigest?: Digest } = {}): Promise<BlobInfo> {
    const digest = digestOf(data);
    if (options.expectedDigest && options.expectedDigest !== digest) {
      throw new DigestMismatchError("blob", options.expectedDigest, digest);
    }
    if (await this.has(digest)) return { digest, size: data.byteLength };
    return await this.ingest([data], { expectedDigest: digest, expectedSize: data.byteLength });
  }

  /** Streams a file into the store without holding it in memory. */
  async importFile(path: string, options: IngestOptions = {}): Promise<BlobInfo> {
    using f = await Deno.open(path, { read: true });
    return await this.ingest(f.readable, options);
  }

  /**
   * Runs `fn` while holding the store lock shared, so `gc` waits until the
   * blobs `fn` writes are referenced by a ref.
   */
  async lease<T>(fn: () => Promise<T>): Promise<T> {
    using lock = await Deno.open(this.paths.storeLock, { read: true, write: true, create: true });
    await lock.lock(false);
    return await fn();
  }

  // ---- refs (index.json) ----

  async #readIndex(): Promise<ImageIndex> {
    const bytes = await readFileBounded(join(this.root, "index.json"), MAX_MANIFEST_BYTES);
    return validate(
      ImageIndexSchema,
      parseJsonBytes(bytes, { source: "index.json" }),
      "index.json",
    );
  }

  async #updateIndex<T>(fn: (index: ImageIndex) => Promise<T> | T): Promise<T> {
    using lock = await Deno.open(join(this.paths.home, "index.lock"), {
      read: true,
      write: true,
      create: true,
    });
    await lock.lock(true);
    const index = await this.#readIndex();
    const result = await fn(index);
    await writeJsonAtomic(join(this.root, "index.json"), index);
    return result;
  }

  async listRefs(): Promise<RefEntry[]> {
    const index = await this.#readIndex();
    const out: RefEntry[] = [];
    for (const d of index.manifests) {
      const name = d.annotations?.[REF_ANNOTATION];
      if (name) out.push({ name, descriptor: d });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Every manifest descriptor in index.json, tagged or not (gc roots). */
  async indexDescriptors(): Promise<Descriptor[]> {
    return (await this.#readIndex()).manifests;
  }

  /** Resolves `name[:tag]`, `name@sha256:…` or a bare digest to a manifest descriptor. */
  async resolve(ref: string): Promise<Descriptor> {
    const index = await this.#readIndex();
    if (isDigest(ref)) {
      const hit = index.manifests.find((d) => d.digest === ref);
      if (hit) return hit;
      if (await this.has(ref)) {
        return await this.#describeManifestBlob(ref);
      }
      throw new NotFoundError(`No manifest "${ref}" in the local store`, {
        hint: "run `ovm ls` to see what is stored, or `ovm pull` it",
      });
    }
    const parsed = parseLocalRef(ref);
    if (parsed.digest) {
      const hit = index.manifests.find((d) => d.digest === parsed.digest);
      if (hit) return hit;
      if (await this.has(parsed.digest)) return await this.#describeManifestBlob(parsed.digest);
    } else {
      const hit = index.manifests.find((d) => d.annotations?.[REF_ANNOTATION] === parsed.name);
      if (hit) return hit;
    }
    throw new NotFoundError(`No artifact "${parsed.name}" in the local store`, {
      hint: "run `ovm ls` to see what is stored, or `ovm pull` it",
    });
  }

  async #describeManifestBlob(digest: Digest): Promise<Descriptor> {
    const bytes = await this.readBlob(digest);
    const doc = parseJsonBytes(bytes, { source: `blob ${digest}` }) as Record<string, unknown>;
    const mediaType = typeof doc.mediaType === "string"
      ? doc.mediaType
      : Array.isArray(doc.manifests)
      ? MediaTypes.ociIndex
      : MediaTypes.ociManifest;
    return { mediaType, digest, size: bytes.byteLength };
  }

  /**
   * Points `name:tag` at a manifest. The manifest and every blob it names
   * must already be in the store, so no ref ever points at a missing blob.
   */
  async tag(name: string, descriptor: Descriptor): Promise<void> {
    const parsed = parseLocalRef(name);
    if (parsed.digest) throw new ValidationError(`Cannot tag with a digest reference "${name}"`);
    await this.assertComplete(descriptor);
    await this.#updateIndex((index) => {
      index.manifests = index.manifests.filter((d) =>
        d.annotations?.[REF_ANNOTATION] !== parsed.name
      );
      index.manifests.push({
        mediaType: descriptor.mediaType,
        digest: descriptor.digest,
        size: descriptor.size,
        ...(descriptor.artifactType ? { artifactType: descriptor.artifactType } : {}),
        annotations: { ...(descriptor.annotations ?? {}), [REF_ANNOTATION]: parsed.name },
      });
    });
  }

  /** Records an untagged manifest (a referrer, a snapshot) so gc keeps it. */
  async addUntagged(descriptor: Descriptor): Promise<void> {
    await this.assertComplete(descriptor);
    await this.#updateIndex((index) => {
      if (index.manifests.some((d) => d.digest === descriptor.digest)) return;
      index.manifests.push({
        mediaType: descriptor.mediaType,
        digest: descriptor.digest,
        size: descriptor.size,
        ...(descriptor.artifactType ? { artifactType: descriptor.artifactType } : {}),
      });
    });
  }

  async untag(name: string): Promise<boolean> {
    const parsed = parseLocalRef(name);
    return await this.#updateIndex((index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((d) =>
        d.annotations?.[REF_ANNOTATION] !== parsed.name
      );
      return index.manifests.length !== before;
    });
  }

  /** Throws unless the manifest (or index) and everything it references is stored. */
  async assertComplete(descriptor: Descriptor): Promise<void> {
    for (const d of await this.closure(descriptor)) {
      if (!(await this.has(d))) {
        throw new NotFoundError(
          `Blob "${d}" referenced by "${descriptor.digest}" is not in the local store`,
        );
      }
    }
  }

  /** All digests a manifest or index needs (itself included), walking nested indexes. */
  async closure(descriptor: Descriptor): Promise<Set<Digest>> {
    const out = new Set<Digest>();
    const walk = async (d: Descriptor, depth: number): Promise<void> => {
      if (out.has(d.digest as Digest)) return;
      out.add(d.digest as Digest);
      if (depth > 8 || !(await this.has(d.digest))) return;
      if (isIndexType(d.mediaType)) {
        const idx = validate(
          ImageIndexSchema,
          parseJsonBytes(await this.readBlob(d.digest), { source: `index ${d.digest}` }),
          `index ${d.digest}`,
        );
        for (const m of idx.manifests) await walk(m, depth + 1);
      } else if (isManifestType(d.mediaType)) {
        const m = validate(
          ImageManifestSchema,
          parseJsonBytes(await this.readBlob(d.digest), { source: `manifest ${d.digest}` }),
          `manifest ${d.digest}`,
        );
        out.add(m.config.digest as Digest);
        for (const l of m.layers) out.add(l.digest as Digest);
      }
    };
    await walk(descriptor, 0);
    return out;
  }

  /**
   * Removes every blob that no index.json entry and no extra root needs, and
   * every stale ingest file. Holds the store lock exclusively.
   *
   * Attachments live as long as what they are attached to: an untagged
   * manifest with a `subject` (a bundle, an SBOM imported with an artifact)
   * and a `…:sha256-<hex>.sig` tag are kept only while their subject is kept;
   * once it is gone their index entries are dropped and their blobs removed.
   */
  async gc(
    options: { roots?: Digest[]; dryRun?: boolean } = {},
  ): Promise<
    { removed: BlobInfo[]; freedBytes: number; ingestRemoved: number; attachmentsDropped: number }
  > {
    using lock = await Deno.open(this.paths.storeLock, { read: true, write: true, create: true });
    await lock.lock(true);
    const keep = new Set<string>();
    const index = await this.#readIndex();
    // What each attachment entry is attached to.
    const attachedTo = new Map<Descriptor, string>();
    for (const d of index.manifests) {
      const name = d.annotations?.[REF_ANNOTATION];
      const sig = name?.match(/:sha256-([0-9a-f]{64})\.sig$/);
      if (sig) attachedTo.set(d, `sha256:${sig[1]}`);
      else if (!name && isManifestType(d.mediaType) && await this.has(d.digest)) {
        try {
          const m = parseJsonBytes(
            await this.readBlob(d.digest, { maxBytes: MAX_MANIFEST_BYTES }),
            {
              source: `manifest ${d.digest}`,
            },
          ) as { subject?: { digest?: unknown } };
          if (typeof m?.subject?.digest === "string") attachedTo.set(d, m.subject.digest);
        } catch { /* unreadable: kept as a root, as before */ }
      }
    }
    const roots: Descriptor[] = index.manifests.filter((d) => !attachedTo.has(d));
    for (const r of options.roots ?? []) {
      if (await this.has(r)) roots.push(await this.#describeManifestBlob(r));
    }
    for (const d of roots) for (const x of await this.closure(d)) keep.add(x);
    // Attachments of kept manifests are kept, and theirs, to a fixpoint.
    for (let changed = true; changed;) {
      changed = false;
      for (const [d, subject] of attachedTo) {
        if (!keep.has(subject)) continue;
        for (const x of await this.closure(d)) keep.add(x);
        attachedTo.delete(d);
        changed = true;
      }
    }
    const dropped = new Set(attachedTo.keys());
    if (dropped.size && !options.dryRun) {
      const gone = (d: Descriptor) =>
        [...dropped].some((x) =>
          x.digest === d.digest &&
          x.annotations?.[REF_ANNOTATION] === d.annotations?.[REF_ANNOTATION]
        );
      await this.#updateIndex((idx) => {
        idx.manifests = idx.manifests.filter((d) => !gone(d));
      });
    }
    const removed: BlobInfo[] = [];
    let freedBytes = 0;
    const dir = join(this.root, "blobs", "sha256");
    for await (const e of Deno.readDir(dir)) {
      const digest = `sha256:${e.name}`;
      if (!isDigest(digest) || keep.has(digest)) continue;
      const st = await Deno.lstat(join(dir, e.name));
      removed.push({ digest, size: st.size });
      freedBytes += st.size;
      if (!options.dryRun) await Deno.remove(join(dir, e.name));
    }
    let ingestRemoved = 0;
    for await (const e of Deno.readDir(this.paths.ingest)) {
      const p = join(this.paths.ingest, e.name);
      // No writer can hold an ingest now (we hold the store lock exclusively),
      // but a locked file is skipped rather than trusting that protocol.
      if (!(await tryLockFile(p))) continue;
      ingestRemoved++;
      if (!options.dryRun) await Deno.remove(p).catch(() => {});
    }
    return { removed, freedBytes, ingestRemoved, attachmentsDropped: dropped.size };
  }
}

export function isIndexType(mediaType: string): boolean {
  return mediaType === MediaTypes.ociIndex || mediaType === MediaTypes.dockerManifestList;
}

export function isManifestType(mediaType: string): boolean {
  return mediaType === MediaTypes.ociManifest || mediaType === MediaTypes.dockerManifest;
}

async function tryLockFile(path: string): Promise<boolean> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true, write: true });
  } catch {
    return false;
  }
  try {
    return await f.tryLock(true);
  } finally {
    f.close();
  }
}
