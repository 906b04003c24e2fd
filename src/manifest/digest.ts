/**
 * @module
 * Content digests (`sha256:<64 lowercase hex>`), validated before any path is
 * built from one, and streaming hashing.
 */
import { createHash, type Hash } from "node:crypto";
import { ValidationError } from "../errors.ts";

export type Digest = `sha256:${string}`;

export const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** True for a well-formed sha256 digest. */
export function isDigest(s: unknown): s is Digest {
  return typeof s === "string" && DIGEST_RE.test(s);
}

/** Validates a digest string; the error names the value and the expected form. */
export function parseDigest(s: string, what = "digest"): Digest {
  if (isDigest(s)) return s;
  const alg = s.includes(":") ? s.slice(0, s.indexOf(":")) : "";
  let why = `expected "sha256:" followed by 64 lowercase hex characters`;
  if (alg && alg !== "sha256") why = `unsupported algorithm "${alg}" (only sha256 is supported)`;
  else if (alg === "sha256") {
    const hex = s.slice(7);
    if (!/^[a-f0-9]*$/.test(hex)) why = "the hex part has characters other than 0-9 and a-f";
    else why = `the hex part has ${hex.length} characters, expected 64`;
  }
  throw new ValidationError(`Invalid ${what} "${truncate(s)}": ${why}`);
}

/** The hex part of a validated digest. */
export function digestHex(d: Digest): string {
  return d.slice(7);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export function digestOf(data: Uint8Array | string): Digest {
  return `sha256:${sha256Hex(data)}`;
}

/** Incremental hasher that also counts bytes. */
export class Digester {
  #hash: Hash = createHash("sha256");
  #size = 0;
  update(chunk: Uint8Array): void {
    this.#hash.update(chunk);
    this.#size += chunk.byteLength;
  }
  get size(): number {
    return this.#size;
  }
  digest(): Digest {
    return `sha256:${this.#hash.digest("hex")}`;
  }
}

/** Hashes a file by streaming it. */
export async function digestFile(path: string): Promise<{ digest: Digest; size: number }> {
  const d = new Digester();
  using f = await Deno.open(path, { read: true });
  const buf = new Uint8Array(1 << 20);
  while (true) {
    const n = await f.read(buf);
    if (n === null) break;
    d.update(buf.subarray(0, n));
  }
  return { digest: d.digest(), size: d.size };
}

function truncate(s: string): string {
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
