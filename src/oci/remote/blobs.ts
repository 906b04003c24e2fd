/**
 * @module
 * A repository's blobs, read side (oras-go's `blobStore`): existence checks
 * and ranged reads. Uploads are in uploads.ts.
 */
import { RegistryError } from "../../errors.ts";
import type { Descriptor } from "../../manifest/mod.ts";
import type { RepositoryClient } from "./client.ts";
import { skipBytes } from "./streams.ts";

export class BlobStore {
  #c: RepositoryClient;

  constructor(client: RepositoryClient) {
    this.#c = client;
  }

  async exists(digest: string, options: { signal?: AbortSignal; push?: boolean } = {}) {
    const c = this.#c;
    const res = await c.send({
      method: "HEAD",
      url: c.url(`blobs/${digest}`),
      signal: options.signal,
      scopes: c.scopes(options.push ?? false),
    });
    await res.body?.cancel();
    if (res.status === 404) return false;
    if (!res.ok) await c.fail(res, `blob "${digest}"`);
    return true;
  }

  /**
   * Opens a blob's bytes from `offset` (a `Range` request when non-zero). A
   * 206 must carry the `Content-Range` asked for; a 200 to a ranged request
   * is skipped forward. The stream is not verified here: the ingest is.
   */
  async fetch(
    desc: Descriptor,
    offset: number,
    options: { signal?: AbortSignal } = {},
  ): Promise<ReadableStream<Uint8Array>> {
    const c = this.#c;
    const headers: Record<string, string> = {};
    if (offset > 0) headers["Range"] = `bytes=${offset}-`;
    const res = await c.send({
      method: "GET",
      url: c.url(`blobs/${desc.digest}`),
      headers,
      signal: options.signal,
      scopes: c.scopes(false),
    });
    if (res.status !== 200 && res.status !== 206) await c.fail(res, `blob "${desc.digest}"`);
    const body = res.body ?? new Response(new Uint8Array()).body!;
    if (res.status === 206) {
      const range = res.headers.get("content-range") ?? "";
      if (!rangeFits(range, offset, desc.size)) {
        await body.cancel();
        throw new RegistryError(
          `Registry "${c.registry}" answered a range request for blob "${desc.digest}" from byte ${offset} with Content-Range "${range}"`,
          { status: 206 },
        );
      }
      return body;
    }
    const length = res.headers.get("content-length");
    if (length !== null && Number(length) !== desc.size) {
      await body.cancel();
      throw new RegistryError(
        `Registry "${c.registry}" sent ${length} bytes for blob "${desc.digest}", whose descriptor says ${desc.size}`,
        { status: res.status },
      );
    }
    return offset > 0 ? body.pipeThrough(skipBytes(offset)) : body;
  }
}

/** A `Content-Range` that starts at `offset` and stays within a blob of `size`. */
function rangeFits(range: string, offset: number, size: number): boolean {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range);
  return !!m && Number(m[1]) === offset && (m[3] === "*" || Number(m[3]) === size) &&
    Number(m[2]) < size;
}
