/**
 * @module
 * Every media type and annotation key OVMS defines, written once.
 * `spec/ovms-v0.1.md` section "Media types" is the normative text.
 */

export const MediaTypes = {
  /** The OVMS manifest (the OCI config blob, and the OCI manifest's artifactType). */
  manifest: "application/vnd.ovms.manifest.v1+json",
  kernel: "application/vnd.ovms.kernel.v1",
  initrd: "application/vnd.ovms.initrd.v1",
  /** A disk layer: an uncompressed tar holding exactly one disk image file. */
  diskLayer: "application/vnd.oci.image.layer.v1.tar",
  ramSnapshot: "application/vnd.ovms.ramsnap.v1+lz4",
  /** A RAM diff layer: the pages a restored VM changed over the layers below it. */
  ramDiff: "application/vnd.ovms.ramsnap.diff.v1+lz4",
  bootstrapConfig: "application/vnd.ovms.bootstrap.config.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
} as const;

export const Annotations = {
  /** On disk-layer descriptors: qcow2 | raw | ovfms. */
  format: "ovms.format",
  /** On disk-layer descriptors: the virtual size of the disk in bytes. */
  diskSize: "ovms.disk.size",
  /** OCI standard: the tag a manifest is known by in an image layout. */
  refName: "org.opencontainers.image.ref.name",
  title: "org.opencontainers.image.title",
  created: "org.opencontainers.image.created",
} as const;

/** Largest manifest (OVMS or OCI) ovm accepts, from a file or the network. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
