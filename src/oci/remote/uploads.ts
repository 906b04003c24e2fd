/**
 * @module
 * Blob uploads: a cross-repository mount when the source is on the same
 * registry, else one PUT for small blobs or PATCH chunks for large ones,
 * resuming a chunked session from where the registry says it stands.
 */
import { RegistryError } from "../../errors.ts";
import type { Descriptor } from "../../manifest/mod.ts";
import type { RepositoryClient } from "./client.ts";
import { NetworkError } from "./errors.ts";
import { counting, limitBytes } from "./streams.ts";

/** Blobs up to this size go in one PUT; larger ones in PATCH chunks. */
export const MONOLITHIC_MAX = 32 << 20;
export const DEFAULT_CHUNK = 64 << 20;

/** Streams a blob from `offset`; called again for a retry. */
export type BlobOpener = (offset: number) => Promise<ReadableStream<Uint8Array>>;

export interface UploadOptions {
  signal?: AbortSignal;
  /** A repository on the same registry to mount the blob from. */
  mountFrom?: string;
  onProgress?: (sent: number) => void;
}

interface Session {
  location: URL;
  /** The registry's `OCI-Chunk-Min-Length`, or 0. */
  minChunk: number;
}

const MAX_RECOVERIES = 3;

export class BlobUploader {
  #c: RepositoryClient;
  #chunkSize: number;
  #monolithicMax: number;

  constructor(client: RepositoryClient, options: { chunkSize?: number; monolithicMax?: number }) {
    this.#c = client;
    this.#chunkSize = options.chunkSize ?? DEFAULT_CHUNK;
    this.#monolithicMax = options.monolithicMax ?? MONOLITHIC_MAX;
  }

  /** Uploads `desc` (the caller checked it is missing); "mounted" when the mount took. */
  async upload(
    desc: Descriptor,
    open: BlobOpener,
    options: UploadOptions = {},
  ): Promise<"mounted" | "pushed"> {
    const session = await this.#start(desc, options);
    if (session === "mounted") return "mounted";
    let location = session.location;
    if (desc.size <= Math.max(this.#monolithicMax, session.minChunk)) {
      await this.#finish(desc, location, {
        headers: {
          "Content-Type": "application/octet-stream",
          "Content-Length": String(desc.size),
        },
        body: async () => counting(await open(0), 0, options.onProgress),
        signal: options.signal,
      });
      return "pushed";
    }
    location = await this.#patchChunks(desc, open, { ...session, location }, options);
    await this.#finish(desc, location, {
      headers: { "Content-Length": "0" },
      body: new Uint8Array(),
      signal: options.signal,
    });
    return "pushed";
  }

  /** Opens an upload session, trying a mount first when `mountFrom` is set. */
  async #start(desc: Descriptor, options: UploadOptions): Promise<Session | "mounted"> {
    const c = this.#c;
    let res: Response;
    if (options.mountFrom && options.mountFrom !== c.name) {
      const u = new URL(c.url("blobs/uploads/"));
      u.searchParams.set("mount", desc.digest);
      u.searchParams.set("from", options.mountFrom);
      res = await c.send({
        method: "POST",
        url: u,
        signal: options.signal,
        scopes: c.scopes(true, [`repository:${options.mountFrom}:pull`]),
      });
      if (res.status === 201) {
        await res.body?.cancel();
        return "mounted";
      }
      // A 202 is an ordinary upload session: the registry declined the mount.
    } else {
      res = await c.send({
        method: "POST",
        url: c.url("blobs/uploads/"),
        signal: options.signal,
        scopes: c.scopes(true),
      });
    }
    if (res.status !== 202) await c.fail(res, `upload of blob "${desc.digest}"`);
    await res.body?.cancel();
    return {
      location: c.location(res),
      minChunk: Number(res.headers.get("oci-chunk-min-length") ?? 0) || 0,
    };
  }

  /** Sends the blob in PATCH chunks; returns the session's last location. */
  async #patchChunks(
    desc: Descriptor,
    open: BlobOpener,
    session: Session,
    options: UploadOptions,
  ): Promise<URL> {
    const c = this.#c;
    const what = `upload of blob "${desc.digest}"`;
    const chunk = Math.max(this.#chunkSize, session.minChunk);
    let location = session.location;
    let recoveries = 0;
    for (let start = 0; start < desc.size;) {
      const len = Math.min(chunk, desc.size - start);
      const from = start;
      let patch: Response | undefined;
      try {
        patch = await c.send({
          method: "PATCH",
          url: location,
          headers: {
            "Content-Type": "application/octet-stream",
            "Content-Range": `${from}-${from + len - 1}`,
            "Content-Length": String(len),
          },
          body: async () => counting(limitBytes(await open(from), len), from, options.onProgress),
          signal: options.signal,
          scopes: c.scopes(true),
        });
      } catch (e) {
        if (!(e instanceof NetworkError) || e.tls || recoveries >= MAX_RECOVERIES) throw e;
      }
      if (patch?.status === 202) {
        await patch.body?.cancel();
        location = c.location(patch);
        start += len;
        continue;
      }
      // A chunk that failed half-way (a 416 after a retry, a lost
      // connection) may have been partly stored: ask the session where it
      // stands and go on from there.
      if (recoveries++ >= MAX_RECOVERIES || (patch && patch.status !== 416 && patch.status < 500)) {
        if (patch) await c.fail(patch, what);
      }
      await patch?.body?.cancel();
      const status = await this.#status(location, options.signal);
      if (!status) {
        if (patch) await c.fail(patch, what);
        throw new RegistryError(`Upload of blob "${desc.digest}" to "${c.registry}" was lost`, {
          status: 0,
        });
      }
      location = status.location;
      start = status.offset;
    }
    return location;
  }

  /** The closing PUT with `?digest=`. */
  async #finish(
    desc: Descriptor,
    location: URL,
    req: { headers: Record<string, string>; body: Uint8Array | (() => Promise<BodyInit>) } & {
      signal?: AbortSignal;
    },
  ): Promise<void> {
    const c = this.#c;
    const url = new URL(location);
    url.searchParams.set("digest", desc.digest);
    const put = await c.send({ method: "PUT", url, ...req, scopes: c.scopes(true) });
    if (put.status !== 201) await c.fail(put, `upload of blob "${desc.digest}"`);
    await put.body?.cancel();
  }

  /** Where an upload session stands (`GET` on its location), or undefined if it is gone. */
  async #status(
    location: URL,
    signal?: AbortSignal,
  ): Promise<{ offset: number; location: URL } | undefined> {
    const c = this.#c;
    const res = await c.send({ method: "GET", url: location, signal, scopes: c.scopes(true) });
    await res.body?.cancel();
    if (res.status !== 204 && res.status !== 202) return undefined;
    const m = /^(?:bytes=)?0-(\d+)$/.exec(res.headers.get("range") ?? "");
    return { offset: m ? Number(m[1]) + 1 : 0, location: c.location(res) };
  }
}
