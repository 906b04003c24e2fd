/**
 * @module
 * Where a container image comes from: an OCI image layout directory
 * (`oci:<dir>[:tag]`, read in place with every blob checked against its
 * digest) or a registry reference (pulled into the local store with ovm's
 * own client, then read from there). Either way the result is the image's
 * config and its layers as {@linkcode LayerSource}s, base first.
 */
import { join } from "node:path";
import { NotFoundError, ValidationError } from "../errors.ts";
import {
  Annotations,
  type Descriptor,
  type Digest,
  digestHex,
  digestOf,
  type ImageIndex,
  ImageIndexSchema,
  type ImageManifest,
  ImageManifestSchema,
  isDigest,
  MAX_MANIFEST_BYTES,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import { pullToStore, type RemoteOptions } from "../oci/mod.ts";
import type { ContentStore } from "../store/mod.ts";
import { readFileBounded } from "../util/fs.ts";
import { assertLayerMediaType, type LayerSource } from "./unpack.ts";

/** The parts of an OCI image config that convert reads. */
export interface ImageConfig {
  architecture?: string;
  os?: string;
  config?: {
    User?: string;
    Env?: string[] | null;
    Entrypoint?: string[] | null;
    Cmd?: string[] | null;
    WorkingDir?: string;
    ExposedPorts?: Record<string, unknown> | null;
    StopSignal?: string;
    Labels?: Record<string, string> | null;
  } | null;
  rootfs?: { type?: string; diff_ids?: string[] };
}

export interface ImageSource {
  /** How the user named it. */
  reference: string;
  /** Digest of the image manifest. */
  manifestDigest: Digest;
  configDigest: Digest;
  config: ImageConfig;
  layers: LayerSource[];
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/** Splits `oci:<dir>[:tag]`; a tag is what follows the last ":" when it looks like one. */
export function parseLayoutRef(input: string): { dir: string; tag?: string } | undefined {
  if (!input.startsWith("oci:")) return undefined;
  const rest = input.slice(4);
  const m = /^(.*):([A-Za-z0-9_][A-Za-z0-9._-]{0,127})$/.exec(rest);
  if (m && m[1] !== "") return { dir: m[1], tag: m[2] };
  return { dir: rest };
}

function checkBytes(bytes: Uint8Array, desc: Descriptor, what: string): void {
  const actual = digestOf(bytes);
  if (actual !== desc.digest || bytes.byteLength !== desc.size) {
    throw new ValidationError(
      `${what} ${desc.digest} does not match its descriptor (got ${actual}, ${bytes.byteLength} bytes)`,
      { hint: "the image layout is corrupt" },
    );
  }
}

function isAmd64Linux(d: Descriptor): boolean {
  const p = (d as { platform?: { os?: string; architecture?: string } }).platform;
  return !p || (p.os === "linux" && p.architecture === "amd64");
}

function parseImageConfig(bytes: Uint8Array, source: string): ImageConfig {
  const v = parseJsonBytes(bytes, { source }) as ImageConfig;
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ValidationError(`${source} is not a JSON object`);
  }
  if (v.architecture && v.architecture !== "amd64") {
    throw new ValidationError(
      `The image is for architecture "${v.architecture}"; ovm converts amd64 images`,
      { hint: "pick the linux/amd64 image of a multi-platform index" },
    );
  }
  if (v.os && v.os !== "linux") {
    throw new ValidationError(`The image is for OS "${v.os}"; ovm converts linux images`);
  }
  return v;
}

interface BlobReader {
  read(desc: Descriptor, max: number, what: string): Promise<Uint8Array>;
  open(digest: Digest): Promise<ReadableStream<Uint8Array>>;
}

/** Manifest (index → linux/amd64), config and layers, read through `blobs`. */
async function fromManifest(
  reference: string,
  top: Descriptor,
  blobs: BlobReader,
): Promise<ImageSource> {
  let desc = top;
  let bytes = await blobs.read(desc, MAX_MANIFEST_BYTES, "manifest");
  if (desc.mediaType === MediaTypes.ociIndex || desc.mediaType === MediaTypes.dockerManifestList) {
    const index: ImageIndex = validate(
      ImageIndexSchema,
      parseJsonBytes(bytes, { source: `index ${desc.digest}` }),
      `index ${desc.digest}`,
    );
    const pick = index.manifests.find((m) =>
      (m.mediaType === MediaTypes.ociManifest || m.mediaType === MediaTypes.dockerManifest) &&
      isAmd64Linux(m) && (m as { platform?: unknown }).platform !== undefined
    ) ?? (index.manifests.length === 1 ? index.manifests[0] : undefined);
    if (!pick) {
      throw new NotFoundError(`The image index ${desc.digest} has no linux/amd64 image`);
    }
    desc = pick;
    bytes = await blobs.read(desc, MAX_MANIFEST_BYTES, "manifest");
  }
  const source = `manifest ${desc.digest}`;
  const manifest: ImageManifest = validate(
    ImageManifestSchema,
    parseJsonBytes(bytes, { source }),
    source,
  );
  if (manifest.config.mediaType === MediaTypes.manifest) {
    throw new ValidationError(`"${reference}" is already an OVMS artifact`, {
      hint: "run it with 'ovm run'; convert takes container images",
    });
  }
  const configBytes = await blobs.read(manifest.config, MAX_CONFIG_BYTES, "image config");
  const config = parseImageConfig(configBytes, `image config ${manifest.config.digest}`);
  for (const l of manifest.layers) assertLayerMediaType(l.mediaType, l.digest);
  return {
    reference,
    manifestDigest: desc.digest as Digest,
    configDigest: manifest.config.digest as Digest,
    config,
    layers: manifest.layers.map((l) => ({
      digest: l.digest as Digest,
      mediaType: l.mediaType,
      size: l.size,
      open: () => blobs.open(l.digest as Digest),
    })),
  };
}

/** Reads an OCI image layout directory in place. */
export async function openLayout(dir: string, tag?: string, reference = `oci:${dir}`) {
  const indexPath = join(dir, "index.json");
  let indexBytes: Uint8Array;
  try {
    indexBytes = await readFileBounded(indexPath, MAX_MANIFEST_BYTES);
  } catch (e) {
    throw new NotFoundError(`"${dir}" is not an OCI image layout (no readable index.json)`, {
      cause: e,
    });
  }
  const index = validate(
    ImageIndexSchema,
    parseJsonBytes(indexBytes, { source: indexPath }),
    indexPath,
  );
  let top: Descriptor | undefined;
  if (tag) {
    top = index.manifests.find((m) => m.annotations?.[Annotations.refName] === tag);
    if (!top) {
      const tags = index.manifests.map((m) => m.annotations?.[Annotations.refName]).filter(Boolean);
      throw new NotFoundError(`Tag "${tag}" is not in the image layout "${dir}"`, {
        hint: tags.length ? `tags there: ${tags.join(", ")}` : "the layout has no tagged images",
      });
    }
  } else if (index.manifests.length === 1) {
    top = index.manifests[0];
  } else {
    throw new ValidationError(`The image layout "${dir}" holds several images; name one`, {
      hint: `use oci:${dir}:<tag>`,
    });
  }
  const blobPath = (d: string) => {
    if (!isDigest(d)) throw new ValidationError(`Unsupported digest "${d}" in the image layout`);
    return join(dir, "blobs", "sha256", digestHex(d));
  };
  return await fromManifest(reference, top, {
    async read(desc, max, what) {
      let bytes: Uint8Array;
      try {
        bytes = await readFileBounded(blobPath(desc.digest), max);
      } catch (e) {
        if (e instanceof ValidationError) throw e;
        throw new NotFoundError(`The ${what} blob ${desc.digest} is missing or too large`, {
          cause: e,
        });
      }
      checkBytes(bytes, desc, what);
      return bytes;
    },
    async open(digest) {
      try {
        return (await Deno.open(blobPath(digest), { read: true })).readable;
      } catch (e) {
        throw new NotFoundError(`Layer blob ${digest} is missing from "${dir}"`, { cause: e });
      }
    },
  });
}

/** Reads an image already in the local store (by ref or digest). */
export async function openStoreImage(store: ContentStore, ref: string, reference = ref) {
  const top = await store.resolve(ref);
  return await fromManifest(reference, top, {
    async read(desc, max, what) {
      const bytes = await store.readBlob(desc.digest, { maxBytes: max });
      checkBytes(bytes, desc, what);
      return bytes;
    },
    async open(digest) {
      return (await store.openBlob(digest)).readable;
    },
  });
}

/** Opens `oci:<dir>[:tag]` in place, or pulls a registry reference into the store first. */
export async function openImage(
  store: ContentStore,
  ref: string,
  options: RemoteOptions = {},
): Promise<ImageSource> {
  const layout = parseLayoutRef(ref);
  if (layout) return await openLayout(layout.dir, layout.tag, ref);
  const pulled = await pullToStore(store, ref, { ...options, any: true });
  return await openStoreImage(store, pulled.descriptor.digest, ref);
}
