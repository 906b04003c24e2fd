/**
 * @module
 * Local store references: `name[:tag]` (tag defaults to `latest`) or
 * `name@sha256:…`, where name has the distribution grammar (it may carry a
 * registry host, as refs of pulled artifacts do).
 */
import type { Digest } from "../manifest/digest.ts";
import { DEFAULT_TAG, parseReference, referenceName } from "../oci/reference.ts";

export interface LocalRef {
  /** `name:tag`, as stored in index.json; or `name@digest` for digest refs. */
  name: string;
  repository: string;
  tag?: string;
  digest?: Digest;
}

export function parseLocalRef(input: string): LocalRef {
  const r = parseReference(input, { allowNoRegistry: true });
  const repo = referenceName(r);
  if (r.digest) {
    return { name: `${repo}@${r.digest}`, repository: repo, digest: r.digest, tag: r.tag };
  }
  const tag = r.tag ?? DEFAULT_TAG;
  return { name: `${repo}:${tag}`, repository: repo, tag };
}
