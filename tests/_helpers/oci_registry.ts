/**
 * @module
 * A small in-memory OCI distribution registry of the project's own, for the
 * paths docker-registry 2.8 lacks: the OCI 1.1 referrers API (with
 * `OCI-Subject` on manifest PUT and `artifactType` filtering) and
 * `OCI-Chunk-Min-Length`. The server is a pure `(Request) => Response`
 * handler; `startOciRegistry` is a thin `Deno.serve` wrapper.
 */
import { createHash } from "node:crypto";

export interface OciRegistryOptions {
  /** Advertise (and enforce for non-final chunks) a minimum PATCH size. */
  chunkMinLength?: number;
  /** Answer the referrers route (default true). */
  referrers?: boolean;
  /** Keep only half of the first PATCH chunk and answer 500, as a crashed upload would. */
  failPatchOnce?: boolean;
}

interface StoredManifest {
  bytes: Uint8Array<ArrayBuffer>;
  mediaType: string;
}

export interface OciRegistry extends AsyncDisposable {
  host: string;
  /** PATCH sizes seen, for chunking assertions. */
  patches: number[];
  mounts: { digest: string; from: string; to: string; mounted: boolean }[];
  tags(repo: string): string[];
}

const sha = (b: Uint8Array) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function err(status: number, code: string, message: string): Response {
  return Response.json({ errors: [{ code, message }] }, { status });
}

export function ociRegistryHandler(
  options: OciRegistryOptions = {},
): {
  handler: (req: Request) => Promise<Response>;
  state: Omit<OciRegistry, "host" | typeof Symbol.asyncDispose>;
} {
  const blobs = new Map<string, Uint8Array<ArrayBuffer>>();
  const repoBlobs = new Map<string, Set<string>>();
  const manifests = new Map<string, Map<string, StoredManifest>>();
  const tags = new Map<string, Map<string, string>>();
  const uploads = new Map<string, { repo: string; data: Uint8Array<ArrayBuffer> }>();
  const patches: number[] = [];
  const mounts: OciRegistry["mounts"] = [];
  const min = options.chunkMinLength ?? 0;
  let failPatch = options.failPatchOnce ?? false;

  const repoOf = <T>(m: Map<string, T>, repo: string, make: () => T): T => {
    let v = m.get(repo);
    if (!v) m.set(repo, v = make());
    return v;
  };

  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const path = url.pathname;
    if (path === "/v2/" || path === "/v2") return new Response("{}", { status: 200 });
    let m = /^\/v2\/(.+)\/blobs\/uploads\/([^/]*)$/.exec(path);
    if (m) {
      const [, repo, id] = m;
      if (req.method === "POST") {
        const mount = url.searchParams.get("mount");
        const from = url.searchParams.get("from");
        if (mount && from) {
          const ok = repoBlobs.get(from)?.has(mount) ?? false;
          mounts.push({ digest: mount, from, to: repo, mounted: ok });
          if (ok) {
            repoOf(repoBlobs, repo, () => new Set()).add(mount);
            return new Response(null, {
              status: 201,
              headers: { location: `/v2/${repo}/blobs/${mount}` },
            });
          }
        }
        const uid = crypto.randomUUID();
        uploads.set(uid, { repo, data: new Uint8Array() });
        const headers: Record<string, string> = {
          location: `/v2/${repo}/blobs/uploads/${uid}`,
          range: "0-0",
        };
        if (min) headers["oci-chunk-min-length"] = String(min);
        return new Response(null, { status: 202, headers });
      }
      const up = uploads.get(id);
      if (!up || up.repo !== repo) return err(404, "BLOB_UPLOAD_UNKNOWN", "no such upload");
      if (req.method === "GET") {
        return new Response(null, {
          status: 204,
          headers: {
            location: `/v2/${repo}/blobs/uploads/${id}`,
            range: `0-${Math.max(0, up.data.length - 1)}`,
          },
        });
      }
      const body = new Uint8Array(await req.arrayBuffer());
      if (req.method === "PATCH" && failPatch) {
        failPatch = false;
        up.data = concat(up.data, body.subarray(0, body.length >> 1));
        return err(500, "UNKNOWN", "disk on fire");
      }
      if (req.method === "PATCH") {
        const range = req.headers.get("content-range");
        if (range) {
          const [s] = range.split("-").map(Number);
          if (s !== up.data.length) return err(416, "BLOB_UPLOAD_INVALID", "bad range");
        }
        patches.push(body.length);
        up.data = concat(up.data, body);
        return new Response(null, {
          status: 202,
          headers: {
            location: `/v2/${repo}/blobs/uploads/${id}`,
            range: `0-${up.data.length - 1}`,
          },
        });
      }
      if (req.method === "PUT") {
        // A non-final chunk smaller than the advertised minimum is a client bug.
        if (min && patches.slice(0, -1).some((n) => n < min)) {
          return err(400, "BLOB_UPLOAD_INVALID", "chunk below OCI-Chunk-Min-Length");
        }
        up.data = concat(up.data, body);
        const digest = url.searchParams.get("digest") ?? "";
        if (sha(up.data) !== digest) return err(400, "DIGEST_INVALID", "digest mismatch");
        uploads.delete(id);
        blobs.set(digest, up.data);
        repoOf(repoBlobs, repo, () => new Set()).add(digest);
        return new Response(null, {
          status: 201,
          headers: { location: `/v2/${repo}/blobs/${digest}`, "docker-content-digest": digest },
        });
      }
      return err(405, "UNSUPPORTED", req.method);
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(path);
    if (m) {
      const [, repo, digest] = m;
      const b = repoBlobs.get(repo)?.has(digest) ? blobs.get(digest) : undefined;
      if (!b) return err(404, "BLOB_UNKNOWN", "blob unknown");
      const headers = {
        "content-length": String(b.length),
        "docker-content-digest": digest,
        "content-type": "application/octet-stream",
      };
      return new Response(req.method === "HEAD" ? null : b, { headers });
    }
    m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(path);
    if (m) {
      const [, repo, ref] = m;
      const repoManifests = repoOf(manifests, repo, () => new Map());
      if (req.method === "PUT") {
        const bytes = new Uint8Array(await req.arrayBuffer());
        const digest = sha(bytes);
        if (ref.startsWith("sha256:") && ref !== digest) {
          return err(400, "DIGEST_INVALID", "digest mismatch");
        }
        const doc = JSON.parse(new TextDecoder().decode(bytes));
        const needs = [doc.config, ...(doc.layers ?? [])].filter(Boolean);
        for (const d of needs) {
          if (!repoBlobs.get(repo)?.has(d.digest)) {
            return err(400, "MANIFEST_BLOB_UNKNOWN", d.digest);
          }
        }
        for (const d of doc.manifests ?? []) {
          if (!repoManifests.has(d.digest)) return err(400, "MANIFEST_BLOB_UNKNOWN", d.digest);
        }
        repoManifests.set(digest, {
          bytes,
          mediaType: req.headers.get("content-type") ?? doc.mediaType,
        });
        if (!ref.startsWith("sha256:")) repoOf(tags, repo, () => new Map()).set(ref, digest);
        const headers: Record<string, string> = {
          location: `/v2/${repo}/manifests/${digest}`,
          "docker-content-digest": digest,
        };
        if (doc.subject && options.referrers !== false) headers["oci-subject"] = doc.subject.digest;
        return new Response(null, { status: 201, headers });
      }
      const digest = ref.startsWith("sha256:") ? ref : tags.get(repo)?.get(ref);
      const stored = digest ? repoManifests.get(digest) : undefined;
      if (!stored) {
        return manifests.get(repo)?.size
          ? err(404, "MANIFEST_UNKNOWN", "manifest unknown")
          : err(404, "NAME_UNKNOWN", "repository name not known to registry");
      }
      const headers = {
        "content-type": stored.mediaType,
        "content-length": String(stored.bytes.length),
        "docker-content-digest": digest!,
      };
      return new Response(req.method === "HEAD" ? null : stored.bytes, { headers });
    }
    m = /^\/v2\/(.+)\/referrers\/(sha256:[a-f0-9]{64})$/.exec(path);
    if (m && options.referrers !== false) {
      const [, repo, subject] = m;
      const want = url.searchParams.get("artifactType");
      const out = [];
      for (const [digest, s] of manifests.get(repo) ?? []) {
        const doc = JSON.parse(new TextDecoder().decode(s.bytes));
        if (doc.subject?.digest !== subject) continue;
        const artifactType = doc.artifactType ?? doc.config?.mediaType;
        if (want && artifactType !== want) continue;
        out.push({
          mediaType: s.mediaType,
          digest,
          size: s.bytes.length,
          ...(artifactType ? { artifactType } : {}),
          ...(doc.annotations ? { annotations: doc.annotations } : {}),
        });
      }
      const headers: Record<string, string> = {
        "content-type": "application/vnd.oci.image.index.v1+json",
      };
      if (want) headers["oci-filters-applied"] = "artifactType";
      return new Response(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests: out,
        }),
        { headers },
      );
    }
    m = /^\/v2\/(.+)\/tags\/list$/.exec(path);
    if (m) {
      return Response.json({ name: m[1], tags: [...(tags.get(m[1])?.keys() ?? [])].sort() });
    }
    return new Response("404 page not found\n", {
      status: 404,
      headers: { "content-type": "text/plain" },
    });
  };
  return {
    handler,
    state: {
      patches,
      mounts,
      tags: (repo) => [...(tags.get(repo)?.keys() ?? [])].sort(),
    },
  };
}

export function startOciRegistry(options: OciRegistryOptions = {}): OciRegistry {
  const { handler, state } = ociRegistryHandler(options);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  return {
    host: `127.0.0.1:${server.addr.port}`,
    ...state,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}
