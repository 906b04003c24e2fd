/**
 * @module
 * `convertImage`: a container image becomes an ordinary OVMS artifact in the
 * local store (spec §10): the system kernel and initrd, one raw disk layer
 * holding the image's root filesystem, and a bootstrap config carrying
 * Entrypoint, Cmd, Env, WorkingDir, User, ExposedPorts and StopSignal.
 * Everything is built in a private directory first; the store sees blobs
 * only once the disk exists, and the tag only once every blob is in.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import { diskTarStream } from "../disk/mod.ts";
import {
  Annotations,
  type BootstrapConfig,
  canonicalJson,
  type Descriptor,
  type Digest,
  type ImageManifest,
  type Manifest,
  manifestFromValue,
  MediaTypes,
} from "../manifest/mod.ts";
import type { RemoteOptions } from "../oci/mod.ts";
import { blobRefs, type ContentStore, layerDescriptors, parseLocalRef } from "../store/mod.ts";
import { ensureSystem, initCmdline } from "../system/mod.ts";
import { bootstrapFromImage } from "./bootstrap.ts";
import { buildSeedDisk, renderMetaData, renderUserData } from "./cloud_init.ts";
import { buildErofs, buildExt4 } from "./disk.ts";
import { type ImageSource, openImage } from "./source.ts";
import {
  DEFAULT_MAX_UNPACKED,
  unpackLayers,
  type UnpackProgress,
  type UnpackStats,
  writeFileInRoot,
} from "./unpack.ts";

export type ConvertProfile = "init" | "cloud-init" | "none";
export type ConvertFs = "ext4" | "erofs";

/** Media type of the cloud-init seed disk layer (a disk-layer tar holding `seed.raw`). */
export const SEED_MEDIA_TYPE = "application/vnd.ovms.cloudinit.seed.v1.tar";

export const ConvertAnnotations = {
  source: "ovms.convert.source",
  imageDigest: "ovms.convert.image.digest",
  profile: "ovms.convert.profile",
  fs: "ovms.convert.fs",
  /** Digest of the cloud-init seed layer (profile cloud-init). */
  seed: "ovms.convert.seed",
} as const;

/** Where NoCloud looks for a seed without a disk; the cloud-init profile also writes it there. */
export const NOCLOUD_SEED_DIR = "/var/lib/cloud/seed/nocloud";

export const DEFAULT_SIZE_BUFFER = 64 * 1024 * 1024;

export interface ConvertInput {
  /** A registry reference, or `oci:<layout-dir>[:tag]`. */
  source: string;
  /** Local reference to create. */
  tag: string;
  fs?: ConvertFs;
  profile?: ConvertProfile;
  /** Free space added to an ext4 disk. Default 64 MiB. */
  sizeBuffer?: number;
  allowDevices?: boolean;
  /** Cap on uncompressed layer bytes. Default 16 GiB. */
  maxUnpacked?: number;
}

export interface ConvertOptions {
  signal?: AbortSignal;
  /** Registry options for pulling a remote image. */
  remote?: RemoteOptions;
  /** Download cache for the system kernel (default `$OVM_HOME/cache`). */
  cacheDir?: string;
  onStep?: (msg: string) => void;
  onProgress?: (p: UnpackProgress) => void;
  warn?: (msg: string) => void;
  /** Where the private build directory goes (default: `$OVM_HOME`). */
  workParent?: string;
}

export interface ConvertResult {
  ref: string;
  descriptor: Descriptor;
  manifest: Manifest;
  image: { reference: string; manifestDigest: Digest; layers: number; bytes: number };
  unpack: UnpackStats;
  disk: { digest: Digest; fs: ConvertFs; size: number };
  bootstrap?: { digest: Digest; config: BootstrapConfig };
  seed?: { digest: Digest; size: number };
  kernel: { digest: Digest; version: string };
  initrd: { digest: Digest; version: string };
  timings: Record<string, number>;
}

function assertProfile(p: string): ConvertProfile {
  if (p === "init" || p === "cloud-init" || p === "none") return p;
  throw new ValidationError(`Unknown profile "${p}"`, { hint: "use init, cloud-init or none" });
}

function assertFs(f: string): ConvertFs {
  if (f === "ext4" || f === "erofs") return f;
  throw new ValidationError(`Unknown filesystem "${f}"`, { hint: "use ext4 or erofs" });
}

/** The image's creation time in seconds (the epoch every made-up timestamp uses), or 0. */
function imageEpoch(image: ImageSource): number {
  const created = (image.config as { created?: unknown }).created;
  if (typeof created !== "string") return 0;
  const t = Date.parse(created);
  return Number.isFinite(t) && t > 0 ? Math.floor(t / 1000) : 0;
}

/** Like `writeArtifact`, plus the seed layer after the canonical ones. */
async function writeConverted(
  store: ContentStore,
  manifest: Manifest,
  seed?: { digest: Digest; size: number },
): Promise<Descriptor> {
  const sizes = new Map<string, number>();
  for (const ref of blobRefs(manifest)) sizes.set(ref, (await store.stat(ref)).size);
  const config = await store.writeBlob(canonicalJson(manifest));
  const layers = layerDescriptors(manifest, (d) => sizes.get(d)!);
  if (seed) {
    layers.push({
      mediaType: SEED_MEDIA_TYPE,
      digest: seed.digest,
      size: seed.size,
      annotations: { [Annotations.title]: "cidata.tar" },
    });
  }
  const oci: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    artifactType: MediaTypes.manifest,
    config: { mediaType: MediaTypes.manifest, digest: config.digest, size: config.size },
    layers,
    annotations: {
      [Annotations.title]: `${manifest.name}:${manifest.version}`,
      ...(manifest.metadata?.created ? { [Annotations.created]: manifest.metadata.created } : {}),
    },
  };
  const blob = await store.writeBlob(canonicalJson(oci));
  return {
    mediaType: MediaTypes.ociManifest,
    digest: blob.digest,
    size: blob.size,
    artifactType: MediaTypes.manifest,
  };
}

/** Converts a container image into an OVMS artifact tagged `input.tag`. */
export async function convertImage(
  store: ContentStore,
  input: ConvertInput,
  options: ConvertOptions = {},
): Promise<ConvertResult> {
  const t0 = performance.now();
  const timings: Record<string, number> = {};
  const mark = (k: string, since: number) => (timings[k] = Math.round(performance.now() - since));
  const step = options.onStep ?? (() => {});
  const home = store.paths.home;
  const ref = parseLocalRef(input.tag);
  if (ref.digest) throw new ValidationError(`-t "${input.tag}": a tag cannot be a digest`);
  const profile = assertProfile(input.profile ?? "init");
  const fs = assertFs(input.fs ?? "ext4");
  if (Deno.uid() !== 0) {
    throw new ValidationError("ovm convert must run as root to keep the image's file owners", {
      hint: "run it with sudo (the unpacker needs chown and mknod)",
    });
  }

  let t = performance.now();
  step(`reading ${input.source}`);
  const image = await openImage(store, input.source, {
    ...(options.remote ?? {}),
    home,
    signal: options.signal,
  });
  mark("source", t);
  const config = bootstrapFromImage(image.config, {
    requireCommand: profile !== "none",
    warn: options.warn,
  });
  const epoch = imageEpoch(image);

  t = performance.now();
  step("system kernel and initrd");
  const system = await ensureSystem(home, {
    signal: options.signal,
    cacheDir: options.cacheDir,
    onProgress: step,
  });
  mark("system", t);

  const work = await Deno.makeTempDir({
    dir: options.workParent ?? home,
    prefix: ".convert-",
  });
  try {
    const root = join(work, "rootfs");
    await Deno.mkdir(root);
    t = performance.now();
    step(`unpacking ${image.layers.length} layer(s)`);
    const unpack = await unpackLayers(root, image.layers, {
      allowDevices: input.allowDevices,
      maxBytes: input.maxUnpacked ?? DEFAULT_MAX_UNPACKED,
      signal: options.signal,
      onProgress: options.onProgress,
      warn: options.warn,
    });
    mark("unpack", t);

    let seedFile: string | undefined;
    if (profile === "cloud-init") {
      const userData = renderUserData(config);
      const metaData = renderMetaData(image.manifestDigest);
      // Also in the root: NoCloud finds it there when no runtime attaches the seed disk.
      await writeFileInRoot(root, `${NOCLOUD_SEED_DIR}/user-data`, {
        data: userData,
        mtime: epoch,
      });
      await writeFileInRoot(root, `${NOCLOUD_SEED_DIR}/meta-data`, {
        data: metaData,
        mtime: epoch,
      });
      seedFile = join(work, "seed.raw");
      await buildSeedDisk(seedFile, { userData, metaData }, {
        seed: image.manifestDigest,
        epoch,
        workDir: work,
        signal: options.signal,
      });
    }

    t = performance.now();
    const diskFile = join(work, "disk.raw");
    step(`building the ${fs} disk`);
    const diskSize = fs === "ext4"
      ? await buildExt4(root, diskFile, {
        sizeBuffer: input.sizeBuffer ?? DEFAULT_SIZE_BUFFER,
        seed: image.manifestDigest,
        epoch,
        signal: options.signal,
      })
      : await buildErofs(root, diskFile, { seed: image.manifestDigest, epoch });
    mark("disk", t);
    // The unpacked tree is no longer needed; free the space before the store copy.
    await Deno.remove(root, { recursive: true });

    t = performance.now();
    step("writing the artifact");
    const args = initCmdline({
      root: "/dev/vda",
      rootFs: fs,
      rootMode: fs === "erofs" ? "ro" : "rw",
      mode: profile === "init" ? "exec" : "switch_root",
    });
    const result = await store.lease(async () => {
      const kernel = await store.importFile(system.kernel.path, { signal: options.signal });
      const initrd = await store.importFile(system.initrd.path, { signal: options.signal });
      const { stream, size } = await diskTarStream(diskFile, "disk.raw");
      const disk = await store.ingest(stream, { expectedSize: size, signal: options.signal });
      // Always written: it is the image's runtime intent, also when the image boots itself.
      const bootstrap = await store.writeBlob(canonicalJson(config));
      let seed: { digest: Digest; size: number } | undefined;
      if (seedFile) {
        const s = await diskTarStream(seedFile, "seed.raw");
        const b = await store.ingest(s.stream, { expectedSize: s.size, signal: options.signal });
        seed = { digest: b.digest, size: b.size };
      }
      const created = new Date(epoch * 1000).toISOString();
      const manifest = manifestFromValue({
        schemaVersion: 1,
        mediaType: MediaTypes.manifest,
        name: ref.repository,
        version: ref.tag ?? "latest",
        kernel: { ref: kernel.digest, args },
        initrd: { ref: initrd.digest },
        diskLayers: [{ ref: disk.digest, format: "raw", size: diskSize }],
        metadata: {
          created,
          platform: { arch: "x86_64", uefi: false },
          description: `Converted from the container image ${image.reference}`.slice(0, 4096),
        },
        runtimeHints: { preferredRuntime: ["qemu"] },
        bootstrap: { ref: bootstrap.digest },
        annotations: {
          [ConvertAnnotations.source]: image.reference,
          [ConvertAnnotations.imageDigest]: image.manifestDigest,
          [ConvertAnnotations.profile]: profile,
          [ConvertAnnotations.fs]: fs,
          ...(seed ? { [ConvertAnnotations.seed]: seed.digest } : {}),
        },
      }, "converted manifest");
      const descriptor = await writeConverted(store, manifest, seed);
      await store.tag(ref.name, descriptor);
      return {
        descriptor,
        manifest,
        disk: { digest: disk.digest, fs, size: diskSize },
        bootstrap: { digest: bootstrap.digest, config },
        seed,
        kernel: { digest: kernel.digest, version: system.kernel.version },
        initrd: { digest: initrd.digest, version: system.initrd.version },
      };
    });
    mark("store", t);
    timings.total = Math.round(performance.now() - t0);
    return {
      ref: ref.name,
      ...result,
      image: {
        reference: image.reference,
        manifestDigest: image.manifestDigest,
        layers: image.layers.length,
        bytes: image.layers.reduce((n, l) => n + l.size, 0),
      },
      unpack,
      timings,
    };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
