/**
 * @module
 * A foreign OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`)
 * as a copy source, for `ovm pull oci:DIR[:REF]`: what `oras copy
 * --to-oci-layout`, `oras push --oci-layout`, `skopeo copy … oci:DIR:TAG` and
 * umoci write. Nothing is trusted: manifests are read bounded and
 * digest-checked here, blobs are digest-checked by the store as they land.
 */
import { basename, join } from "node:path";
import { DigestMismatchError, NotFoundError, ValidationError } from "../errors.ts";
import {
  Annotations,
  type Descriptor,
  digestOf,
  type ImageIndex,
  ImageIndexSchema,
  isDigest,
  MAX_MANIFEST_BYTES,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { readFileBounded } from "../util/fs.ts";
import type { CopySource } from "./copy.ts";
import { checkManifestDocument, type FetchedManifest } from "./remote/mod.ts";

/** The prefix that names a layout: `oci:DIR[:REF]` (skopeo's transport syntax). */
export const LAYOUT_PREFIX = "oci:";

export interface LayoutReference {
  dir: string;
  /** A ref name (`org.opencontainers.image.ref.name`) or `sha256:<hex>`; absent: the only one. */
  ref?: string;
}

async function isLayout(dir: string): Promise<boolean> {
  try {
    return (await Deno.stat(join(dir, "oci-layout"))).isFile;
  } catch {
    return false;
  }
}

/**
 * Splits `oci:DIR[:REF]`. A directory name may itself hold `:`, and so may a
 * ref (`demo/vm:1.0`, as ovm's own store names them), so the first prefix
 * that is a layout directory is the directory. `@sha256:…` also selects by
 * digest.
 */
export async function parseLayoutReference(input: string): Promise<LayoutReference> {
  if (!input.startsWith(LAYOUT_PREFIX)) {
    throw new ValidationError(`"${input}" is not an OCI layout reference`, {
      hint: "write oci:DIR or oci:DIR:TAG",
    });
  }
  const rest = input.slice(LAYOUT_PREFIX.length);
  const at = rest.lastIndexOf("@sha256:");
  if (at > 0 && await isLayout(rest.slice(0, at))) {
    return { dir: rest.slice(0, at), ref: rest.slice(at + 1) };
  }
  if (await isLayout(rest)) return { dir: rest };
  for (let i = rest.indexOf(":"); i > 0; i = rest.indexOf(":", i + 1)) {
    if (await isLayout(rest.slice(0, i))) {
      const ref = rest.slice(i + 1);
      return { dir: rest.slice(0, i), ref: ref || undefined };
    }
  }
  const dir = rest.split(":")[0];
  throw new NotFoundError(`No OCI image layout at "${dir}" (no "${join(dir, "oci-layout")}")`, {
    hint: "write a layout with `oras copy REF --to-oci-layout DIR:TAG` or " +
      "`skopeo copy docker://REF oci:DIR:TAG`",
  });
}

/** The local ref a layout import records by default: the ref if it is `name:tag`, else `<dir name>:<ref>`. */
export function defaultLocalRef(r: LayoutReference, resolvedName?: string): string | undefined {
  const name = resolvedName ?? r.ref;
  if (!name || isDigest(name)) return undefined;
  if (/^[a-z0-9][a-z0-9._/-]*:[\w][\w.-]{0,127}$/.test(name)) return name;
  const repo = basename(r.dir).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[-._]+/, "");
  return `${repo || "layout"}:${name}`;
}

export class OciLayoutSource implements CopySource {
  readonly label: string;
  readonly dir: string;
  /** The ref name of the manifest `resolve` picked, when it had one. */
  resolvedName?: string;

  constructor(dir: string) {
    this.dir = dir;
    this.label = `OCI layout "${dir}"`;
  }

  async #index(): Promise<ImageIndex> {
    const layoutFile = join(this.dir, "oci-layout");
    const layout = parseJsonBytes(await readFileBounded(layoutFile, 4096), {
      source: layoutFile,
    }) as { imageLayoutVersion?: unknown };
    if (layout?.imageLayoutVersion !== "1.0.0") {
      throw new ValidationError(
        `"${layoutFile}" has imageLayoutVersion ${
          JSON.stringify(layout?.imageLayoutVersion)
        }, expected "1.0.0"`,
      );
    }
    const indexFile = join(this.dir, "index.json");
    return validate(
      ImageIndexSchema,
      parseJsonBytes(await readFileBounded(indexFile, MAX_MANIFEST_BYTES), { source: indexFile }),
      indexFile,
    );
  }

  async resolve(reference: string | undefined): Promise<FetchedManifest> {
    const index = await this.#index();
    const name = (d: Descriptor) => d.annotations?.[Annotations.refName];
    let desc: Descriptor | undefined;
    if (reference && isDigest(reference)) {
      desc = index.manifests.find((d) => d.digest === reference) ??
        { mediaType: "", digest: reference, size: MAX_MANIFEST_BYTES };
    } else if (reference) {
      desc = index.manifests.find((d) => name(d) === reference);
    } else {
      const named = index.manifests.filter((d) => name(d));
      desc = index.manifests.length === 1
        ? index.manifests[0]
        : named.length === 1
        ? named[0]
        : undefined;
      if (!desc) {
        throw new ValidationError(
          `OCI layout "${this.dir}" holds ${index.manifests.length} manifests; say which`,
          {
            hint: `write oci:${this.dir}:REF with REF one of: ${
              refsOf(index).join(", ") || "(none named)"
            }`,
          },
        );
      }
    }
    if (!desc) {
      throw new NotFoundError(`OCI layout "${this.dir}" has no manifest named "${reference}"`, {
        hint: `it has: ${refsOf(index).join(", ") || "(no named manifests)"}`,
      });
    }
    this.resolvedName = name(desc);
    const bytes = await this.#readManifest(desc);
    const mediaType = checkManifestDocument(
      bytes,
      desc.mediaType,
      `manifest "${desc.digest}" in ${this.label}`,
    );
    // The store indexes referrers by artifactType (the manifest's, else its config's).
    const doc = parseJsonBytes(bytes, { source: this.label }) as {
      artifactType?: unknown;
      config?: { mediaType?: unknown };
    };
    const artifactType = desc.artifactType ??
      (typeof doc.artifactType === "string" ? doc.artifactType : undefined);
    return {
      descriptor: {
        mediaType,
        digest: desc.digest,
        size: bytes.byteLength,
        ...(artifactType ? { artifactType } : {}),
      },
      bytes,
    };
  }

  /**
   * The layout's manifests whose `subject` is `digest` (at most 100): the
   * referrers `oras copy -r … --to-oci-layout` writes beside an artifact
   * (signatures, SBOMs), and theirs.
   */
  async referrersOf(digest: string): Promise<Descriptor[]> {
    const out: Descriptor[] = [];
    const index = await this.#index();
    for (const d of index.manifests) {
      if (out.length >= 100) break;
      if (d.digest === digest || d.size > MAX_MANIFEST_BYTES) continue;
      const bytes = await this.#readManifest(d).catch(() => undefined);
      if (!bytes) continue;
      const doc = parseJsonBytes(bytes, { source: this.label }) as {
        subject?: { digest?: unknown };
      };
      if (doc?.subject?.digest === digest) out.push(d);
    }
    return out;
  }

  fetchManifest(desc: Descriptor): Promise<Uint8Array> {
    return this.#readManifest(desc);
  }

  #blobPath(desc: Descriptor): string {
    if (!isDigest(desc.digest)) {
      throw new ValidationError(`Descriptor digest "${desc.digest}" is not a sha256 digest`);
    }
    return join(this.dir, "blobs", "sha256", desc.digest.slice("sha256:".length));
  }

  async #readManifest(desc: Descriptor): Promise<Uint8Array> {
    let bytes: Uint8Array;
    try {
      bytes = await readFileBounded(this.#blobPath(desc), MAX_MANIFEST_BYTES);
    } catch (cause) {
      if (cause instanceof Deno.errors.NotFound) throw this.#missing(desc, cause);
      throw cause;
    }
    const actual = digestOf(bytes);
    if (actual !== desc.digest) {
      throw new DigestMismatchError(`manifest in ${this.label}`, desc.digest, actual);
    }
    return bytes;
  }

  #missing(desc: Descriptor, cause: unknown): NotFoundError {
    return new NotFoundError(
      `${this.label} lacks blob "${desc.digest}" (${desc.mediaType || "manifest"})`,
      {
        cause,
        hint: "the layout is incomplete; copy it again (oras copy -r / skopeo copy --all)",
      },
    );
  }

  async openBlob(desc: Descriptor, offset: number): Promise<ReadableStream<Uint8Array>> {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(this.#blobPath(desc), { read: true });
    } catch (cause) {
      if (cause instanceof Deno.errors.NotFound) throw this.#missing(desc, cause);
      throw cause;
    }
    if (offset > 0) await f.seek(offset, Deno.SeekMode.Start);
    return f.readable;
  }
}

function refsOf(index: ImageIndex): string[] {
  return index.manifests.map((d) => d.annotations?.[Annotations.refName]).filter((n): n is string =>
    !!n
  );
}
