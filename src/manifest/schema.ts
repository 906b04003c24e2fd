/**
 * @module
 * The OVMS manifest v1 and the bootstrap config v1, as zod schemas. These are
 * the single source of truth: `schemas/*.json` are generated from them
 * (`deno task schemas`) and a test fails when the files drift.
 */
import { z } from "zod";
import { MediaTypes } from "./media_types.ts";

const DIGEST_PATTERN = /^sha256:[a-f0-9]{64}$/;
/** A digest-pinned registry reference: `registry/repo@sha256:<hex>`. */
const PINNED_REF_PATTERN =
  /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)+@sha256:[a-f0-9]{64}$/;

export const DigestSchema = z.string().regex(DIGEST_PATTERN, {
  message: 'must be "sha256:" followed by 64 lowercase hex characters',
}).meta({ description: "A sha256 content digest." });

/** A blob reference: a digest in this artifact, or a digest-pinned registry reference. */
const BLOB_REF_PATTERN = new RegExp(
  `^(?:sha256:[a-f0-9]{64}|${PINNED_REF_PATTERN.source.slice(1, -1)})$`,
);
export const BlobRefSchema = z.string().regex(BLOB_REF_PATTERN, {
  message:
    'must be a digest ("sha256:<64 hex>") or a digest-pinned reference ("registry/repo@sha256:<64 hex>")',
}).meta({
  description: "A blob of this artifact by digest, or a digest-pinned reference into a registry.",
});

const ByteSize = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

export const DiskFormatSchema = z.enum(["qcow2", "raw", "ovfms"]);
export type DiskFormat = z.infer<typeof DiskFormatSchema>;

export const DiskLayerSchema = z.strictObject({
  ref: BlobRefSchema,
  format: DiskFormatSchema,
  size: ByteSize.meta({ description: "Virtual size of the disk in bytes." }),
});

export const KernelSchema = z.strictObject({
  ref: BlobRefSchema,
  args: z.string().max(4096).default("").meta({ description: "The kernel command line." }),
});

export const RamSnapshotSchema = z.strictObject({
  ref: BlobRefSchema.meta({
    description: "The RAM snapshot blob; for a chain, its top (last) layer.",
  }),
  compression: z.literal("lz4"),
  preload_hint: z.boolean().default(false),
  mlock_required: z.boolean().default(false),
  layers: z.array(BlobRefSchema).min(1).max(64).optional().meta({
    description:
      "RAM layers, base first: a full RAM snapshot, then diff layers, each on the one before. " +
      "The last is `ref`. Absent: the snapshot is the single layer `ref`.",
  }),
}).refine((r) => !r.layers || r.layers.at(-1) === r.ref, {
  message: "the last of `layers` must be `ref`",
  path: ["layers"],
});

export const DeviceNameSchema = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, {
  message: "must be 1-32 characters of a-z, 0-9, _ and -, starting with a letter or digit",
});

export const IvshmemDeviceSchema = z.strictObject({
  type: z.literal("ivshmem"),
  name: DeviceNameSchema,
  size: ByteSize.meta({ description: "Size of the shared region in bytes (a power of two)." })
    .refine((n) => Number.isInteger(Math.log2(n)), {
      message: "must be a power of two",
    }),
  mmio_addr: z.string().regex(/^0x[0-9a-fA-F]{1,16}$/, {
    message: 'must be a hex address such as "0x10000000"',
  }),
});

export const DeviceSchema = z.discriminatedUnion("type", [IvshmemDeviceSchema]);
export type Device = z.infer<typeof DeviceSchema>;

export const PlatformSchema = z.strictObject({
  arch: z.enum(["x86_64", "aarch64"]),
  uefi: z.boolean().default(false),
});

export const MetadataSchema = z.strictObject({
  author: z.string().max(256).optional(),
  created: z.iso.datetime({ offset: true }).optional(),
  platform: PlatformSchema.default({ arch: "x86_64", uefi: false }),
  description: z.string().max(4096).optional(),
});

export const RuntimeHintsSchema = z.strictObject({
  preferredRuntime: z.array(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/)).max(16).default(
    [],
  ),
  coldStartTargetMs: z.number().int().nonnegative().optional(),
  network: z.enum(["none", "user", "bridge"]).optional().meta({
    description: "The network mode a run uses when it names none (spec 7.6); bridge needs root.",
  }),
});

export const ManifestSchema = z.strictObject({
  schemaVersion: z.literal(1),
  mediaType: z.literal(MediaTypes.manifest),
  name: z.string().min(1).max(255),
  version: z.string().min(1).max(128),
  kernel: KernelSchema,
  initrd: z.strictObject({ ref: BlobRefSchema }).optional(),
  diskLayers: z.array(DiskLayerSchema).max(128).default([]).meta({
    description: "Disk layers, base first; each later layer is a diff on the one before.",
  }),
  ramSnapshot: RamSnapshotSchema.optional(),
  devices: z.array(DeviceSchema).max(64).default([]),
  metadata: MetadataSchema.optional(),
  runtimeHints: RuntimeHintsSchema.optional(),
  bootstrap: z.strictObject({ ref: BlobRefSchema }).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
}).meta({
  title: "OVMS manifest v1",
  description:
    "Describes a whole virtual machine: kernel, initrd, disk layers, RAM snapshot, devices.",
});

export type Manifest = z.infer<typeof ManifestSchema>;
export type ManifestInput = z.input<typeof ManifestSchema>;
export type DiskLayer = z.infer<typeof DiskLayerSchema>;

export const BootstrapConfigSchema = z.strictObject({
  env: z.array(z.string().regex(/^[^=\0]+=[^\0]*$/, { message: 'must be "NAME=value"' }))
    .default([]),
  workdir: z.string().startsWith("/").optional(),
  entrypoint: z.array(z.string()).optional(),
  cmd: z.array(z.string()).optional(),
  user: z.string().regex(/^[A-Za-z0-9._-]+(?::[A-Za-z0-9._-]+)?$/).optional(),
  exposedPorts: z.array(z.string().regex(/^[0-9]{1,5}(?:\/(?:tcp|udp|sctp))?$/)).default([]),
  stopSignal: z.string().regex(/^(?:SIG[A-Z0-9]+|[0-9]{1,2})$/).optional(),
  hostname: z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$/).optional(),
}).meta({
  title: "OVMS bootstrap config v1",
  description: "The runtime intent of a workload, taken from a container image config.",
});

export type BootstrapConfig = z.infer<typeof BootstrapConfigSchema>;
