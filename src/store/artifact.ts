/**
 * @module
 * The OCI mapping of an OVMS artifact, in one place (spec section "OCI
 * mapping"): an OCI image manifest whose `artifactType` and config media type
 * are the OVMS manifest type, whose config blob is the OVMS manifest JSON, and
 * whose layers are kernel, initrd, disk layers (base first), RAM snapshot and
 * bootstrap config, in that order.
 */
import { ValidationError } from "../errors.ts";
import {
  Annotations,
  canonicalJson,
  type Descriptor,
  type Digest,
  type ImageManifest,
  ImageManifestSchema,
  isDigest,
  type Manifest,
  manifestFromValue,
  MediaTypes,
  parseJsonBytes,
  validate,
} from "../manifest/mod.ts";
import type { BlobInfo, ContentStore } from "./content_store.ts";

export type LayerRole = "kernel" | "initrd" | "disk" | "ramSnapshot" | "bootstrap";

export interface Artifact {
  /** Descriptor of the OCI image manifest. */
  descriptor: Descriptor;
  oci: ImageManifest;
  manifest: Manifest;
  /** The config blob (the OVMS manifest) as stored. */
  config: Descriptor;
}

/** The OCI layer descriptors an OVMS manifest implies, in canonical order. */
export function layerDescriptors(
  manifest: Manifest,
  sizes: (digest: Digest) => number,
): Descriptor[] {
  const out: Descriptor[] = [];
  const add = (ref: string, mediaType: string, annotations?: Record<string, string>) => {
    if (!isDigest(ref)) return; // digest-pinned registry refs are not layers of this artifact
    out.push({ mediaType, digest: ref, size: sizes(ref), ...(annotations ? { annotations } : {}) });
  };
  add(manifest.kernel.ref, MediaTypes.kernel, { [Annotations.title]: "vmlinuz" });
  if (manifest.initrd) {
    add(manifest.initrd.ref, MediaTypes.initrd, { [Annotations.title]: "initrd" });
  }
  manifest.diskLayers.forEach((l, i) =>
    add(l.ref, MediaTypes.diskLayer, {
      [Annotations.format]: l.format,
      [Annotations.diskSize]: String(l.size),
      [Annotations.title]: `disk${i}.tar`,
    })
  );
  // RAM layers base first: the full snapshot, then its diff layers (spec 8.6).
  ramLayers(manifest).forEach((ref, i) =>
    add(ref, i === 0 ? MediaTypes.ramSnapshot : MediaTypes.ramDiff)
  );
  if (manifest.bootstrap) add(manifest.bootstrap.ref, MediaTypes.bootstrapConfig);
  return out;
}

/**
 * Writes the config blob and the OCI manifest for an OVMS manifest whose
 * blobs are already in the store. Returns the OCI manifest's descriptor.
 */
export async function writeArtifact(
  store: ContentStore,
  manifest: Manifest,
  options: { subject?: Descriptor; annotations?: Record<string, string> } = {},
): Promise<Descriptor> {
  const sizes = new Map<string, number>();
  for (const ref of blobRefs(manifest)) {
    sizes.set(ref, (await store.stat(ref)).size);
  }
  const configBytes = canonicalJson(manifest);
  const config = await store.writeBlob(configBytes);
  const oci: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType: MediaTypes.manifest,
    config: { mediaType: MediaTypes.manifest, digest: config.digest, size: config.size },
    layers: layerDescriptors(manifest, (d) => sizes.get(d)!),
    ...(options.subject
      ? {
        subject: {
          mediaType: options.subject.mediaType,
          digest: options.subject.digest,
          size: options.subject.size,
        },
      }
      : {}),
    annotations: {
      [Annotations.title]: `${manifest.name}:${manifest.version}`,
      ...(manifest.metadata?.created ? { [Annotations.created]: manifest.metadata.created } : {}),
      ...(options.annotations ?? {}),
    },
  };
  const bytes = canonicalJson(oci);
  const blob: BlobInfo = await store.writeBlob(bytes);
  return {
    mediaType: MediaTypes.ociManifest,
    digest: blob.digest,
    size: blob.size,
    artifactType: MediaTypes.manifest,
  };
}

/** The RAM layers of a manifest, base first (one for a flat snapshot, none without one). */
export function ramLayers(manifest: Manifest): string[] {
  const r = manifest.ramSnapshot;
  if (!r) return [];
  return r.layers ?? [r.ref];
}

/** Digests of every blob an OVMS manifest names that belongs to the artifact itself. */
export function blobRefs(manifest: Manifest): Digest[] {
  const refs = [
    manifest.kernel.ref,
    manifest.initrd?.ref,
    ...manifest.diskLayers.map((l) => l.ref),
    ...ramLayers(manifest),
    manifest.bootstrap?.ref,
  ];
  return refs.filter((r): r is Digest => isDigest(r));
}

/** Parses and cross-checks an OCI manifest as an OVMS artifact. */
export function artifactFromDocuments(
  descriptor: Descriptor,
  ociBytes: Uint8Array,
  configBytes: Uint8Array,
): Artifact {
  const source = `manifest ${descriptor.digest}`;
  const oci = validate(ImageManifestSchema, parseJsonBytes(ociBytes, { source }), source);
  if (oci.config.mediaType !== MediaTypes.manifest) {
    // `oras push FILE:application/vnd.ovms.manifest.v1+json` makes the manifest a layer.
    const asLayer = oci.layers.some((l) => l.mediaType === MediaTypes.manifest);
    throw new ValidationError(
      `${source} is not an OVMS artifact: its config media type is "${oci.config.mediaType}", expected "${MediaTypes.manifest}"${
        asLayer ? " (the OVMS manifest is carried as a layer, not as the config)" : ""
      }`,
      {
        hint: asLayer
          ? `push the OVMS manifest as the config: oras push --config manifest.json:${MediaTypes.manifest} ...`
          : "container images become VMs with `ovm convert`",
      },
    );
  }
  const manifest = manifestFromValue(
    parseJsonBytes(configBytes, { source: `OVMS manifest ${oci.config.digest}` }),
    `OVMS manifest ${oci.config.digest}`,
  );
  const expected = layerDescriptors(manifest, () => 0);
  const present = new Map(oci.layers.map((l) => [l.digest, l]));
  for (const e of expected) {
    const l = present.get(e.digest);
    if (!l) {
      throw new ValidationError(
        `${source}: the OVMS manifest names blob "${e.digest}" (${e.mediaType}) but no layer carries it`,
      );
    }
    if (l.mediaType !== e.mediaType) {
      throw new ValidationError(
        `${source}: layer "${e.digest}" has media type "${l.mediaType}", expected "${e.mediaType}"`,
      );
    }
  }
  return { descriptor, oci, manifest, config: oci.config };
}

/** Loads an OVMS artifact from the store by ref or digest. */
export async function loadArtifact(store: ContentStore, ref: string): Promise<Artifact> {
  const descriptor = await store.resolve(ref);
  // Blobs are immutable, so a manifest verified and validated once stays so:
  // restores from a warm pool skip re-reading, re-hashing and re-validating it.
  const key = `${store.root}\0${descriptor.digest}`;
  let parsed = PARSED.get(key);
  if (!parsed) {
    const ociBytes = await store.readBlob(descriptor.digest);
    const source = `manifest ${descriptor.digest}`;
    const oci = validate(ImageManifestSchema, parseJsonBytes(ociBytes, { source }), source);
    const configBytes = await store.readBlob(oci.config.digest);
    const a = artifactFromDocuments(descriptor, ociBytes, configBytes);
    parsed = { oci: a.oci, manifest: a.manifest, config: a.config };
    PARSED.set(key, parsed);
    if (PARSED.size > 64) PARSED.delete(PARSED.keys().next().value!);
  }
  // Callers may change what they get (snapshots derive manifests): hand out copies.
  return { descriptor, ...structuredClone(parsed) };
}

const PARSED = new Map<string, Omit<Artifact, "descriptor">>();
