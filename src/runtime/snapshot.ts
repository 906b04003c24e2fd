/**
 * @module
 * RAM snapshots of running instances (`ovm snapshot`, the API's /snapshot):
 * the adapter pauses the guest and saves its device state, guest RAM, root
 * disk and boot command line; the RAM is copied (sparsely) into what becomes
 * the snapshot's memory template while the guest stays paused; then the
 * source resumes (or stops) and the new OVMS artifact is written: the same
 * kernel, initrd and layers, plus the disk as a new diff layer (or the whole
 * disk, when the backend flattened it) and the ramsnap blob, `subject` → the
 * base. The restore record (`restore_record.ts`) travels in the ramsnap
 * header's metadata and in the manifest's annotations.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import { type DiskLayer, type Manifest, validate } from "../manifest/mod.ts";
import { ManifestSchema } from "../manifest/schema.ts";
import { diskTarStream, readQcow2Header } from "../disk/mod.ts";
import {
  type Artifact,
  ContentStore,
  loadArtifact,
  parseLocalRef,
  writeArtifact,
} from "../store/mod.ts";
import { encodeRamsnap, MAX_RAM_LAYERS, RAMSNAP_VERSION, sparseCopy } from "../snapshot/mod.ts";
import { chainedRam, PARENT_ANNOTATION } from "./ram_chain.ts";
import { SystemAnnotations } from "../system/mod.ts";
import { pushFromStore } from "../oci/mod.ts";
import { getAdapter, type SnapshotFiles } from "../vmm/mod.ts";
import { type InstanceState, InstanceStore, type VmPaths } from "./instance.ts";
import { getInstance, stopInstance } from "./lifecycle.ts";
import { RESTORE_ANNOTATION, type RestoreRecord } from "./restore_record.ts";
import { assertAllowed } from "./state_machine.ts";
import { installTemplate, newTemplateDir } from "./template_cache.ts";

export interface SnapshotOptions {
  /** Local ref for the new artifact (`name:tag`). */
  tag: string;
  /** Also push it there (a remote reference). */
  push?: string;
  /** What happens to the source after the snapshot (default: it resumes). */
  after?: "resume" | "stop";
  /** Restores must lock the memory template in RAM (manifest `mlock_required`). */
  mlockRequired?: boolean;
  signal?: AbortSignal;
  onProgress?: (msg: string) => void;
}

export interface SnapshotResult {
  ref: string;
  digest: string;
  pushed?: string;
}

/** Snapshots instance `id` of `home` into a new artifact tagged `options.tag`. */
export async function snapshotInstance(
  home: string,
  id: string,
  options: SnapshotOptions,
): Promise<SnapshotResult> {
  const progress = options.onProgress ?? (() => {});
  const target = parseLocalRef(options.tag);
  const state = await getInstance(home, id);
  assertAllowed(id, state.state, "snapshot");
  const adapter = getAdapter(state.adapter);
  if (!adapter.capabilities.snapshotKinds.includes("ram")) {
    throw new ValidationError(`Runtime "${adapter.name}" cannot take RAM snapshots`);
  }
  if (target.digest) {
    throw new ValidationError(`Snapshot tag "${options.tag}" is a digest`, {
      hint: "use name:tag",
    });
  }
  const store = await ContentStore.open(home);
  const base = await loadArtifact(store, state.manifestDigest);
  const paths = new InstanceStore(home).paths(id);
  // Beside the ingest area: the same filesystem as the store.
  await Deno.mkdir(store.paths.ingest, { recursive: true });
  const work = await Deno.makeTempDir({ dir: store.paths.ingest, prefix: "snapshot-" });
  let resumed = false;
  let entered = false;
  let captured = false;
  let template: string | undefined;
  const finishSource = async () => {
    if (resumed) return;
    resumed = true;
    if (options.after === "stop") {
      await stopInstance(home, id, { force: true, reason: "stopped after 'ovm snapshot --stop'" });
    } else if (state.state === "running") {
      // A paused source stays paused (`resume` later reactivates its disks).
      await adapter.resume(state.vm!);
    }
  };
  try {
    const res = await store.lease(async () => {
      progress(`pausing ${id} and saving its device state`);
      entered = true;
      const files = await adapter.snapshot(state.vm!, {
        kind: "ram",
        dest: work,
        vmDir: paths.vmDir,
        overlay: base.manifest.diskLayers.length ? paths.overlay : undefined,
        signal: options.signal,
      });
      captured = true;
      const ram = await captureRam(store, files, {
        state,
        base,
        paths,
        finishSource,
        progress,
        signal: options.signal,
        work,
        onTemplate: (dir) => (template = dir),
      });
      const { record, diskLayers } = ram;
      const descriptor = await writeSnapshotArtifact(store, base, {
        id,
        record,
        diskLayers,
        ramDigest: ram.ramDigest,
        ramLayers: ram.ramLayers,
        parent: ram.parent,
        name: target.repository,
        tag: target.tag!,
        mlockRequired: options.mlockRequired ?? false,
      });
      const ref = target.name;
      await store.tag(ref, descriptor);
      progress(`snapshot ${ref} (${descriptor.digest})`);
      return { ref, digest: descriptor.digest };
    });
    if (!options.push) return res;
    progress(`pushing to ${options.push}`);
    const pushed = await pushFromStore(store, res.ref, options.push, {
      home,
      signal: options.signal,
    });
    return { ...res, pushed: `${pushed.reference}@${pushed.digest}` };
  } finally {
    if (captured) {
      await finishSource().catch(() => {});
    } else if (entered && state.state === "running") {
      // A failed or refused capture leaves the source running, as it was.
      await adapter.resume(state.vm!).catch(() => {});
    }
    await Deno.remove(work, { recursive: true }).catch(() => {});
    if (template) await Deno.remove(template, { recursive: true }).catch(() => {});
  }
}

/** What became of a snapshot's RAM: its record, disk layers, RAM layer(s) and parent. */
interface CapturedRam {
  record: RestoreRecord;
  diskLayers: DiskLayer[];
  ramDigest: string;
  /** The RAM layers base first when the new layer is a diff (spec 8.6). */
  ramLayers?: string[];
  /** The parent snapshot's manifest digest, for a snapshot of a restored VM. */
  parent?: string;
}

/**
 * The disk diff first (small), then the guest's memory, copied sparsely into
 * what becomes this snapshot's template (the first local restore needs no
 * decode), so the source can go on before the slow part, compression.
 */
async function captureRam(
  store: ContentStore,
  files: SnapshotFiles,
  ctx: {
    state: InstanceState;
    base: Artifact;
    paths: VmPaths;
    finishSource: () => Promise<void>;
    progress: (msg: string) => void;
    signal?: AbortSignal;
    /** A scratch directory of this snapshot (the store's filesystem). */
    work: string;
    /** Told the template directory while it is this snapshot's to remove on failure. */
    onTemplate: (dir: string | undefined) => void;
  },
): Promise<CapturedRam> {
  const { signal, progress } = ctx;
  const template = await newTemplateDir();
  ctx.onTemplate(template);
  if (!files.diff) {
    progress(`copying ${files.memoryBytes} bytes of guest memory`);
    await sparseCopy(files.memory, join(template, "memory"), files.memoryBytes, {
      offset: files.memoryOffset,
      signal,
    });
    await Deno.copyFile(files.deviceState, join(template, "device-state"));
  }
  const deviceStateBytes = (await Deno.stat(files.deviceState)).size;
  const configDiskBytes = await Deno.stat(ctx.paths.configDisk).then(
    (s) => s.size,
    () => undefined,
  );
  const diskLayers = await captureDisk(store, ctx.base, files, signal);
  const record = restoreRecord(ctx.state, files, {
    diskLayers,
    devices: ctx.base.manifest.devices.map((d) => d.name),
    configDiskBytes,
  });
  await ctx.finishSource();
  let stream: ReadableStream<Uint8Array>;
  let below: string[] = [];
  if (files.diff) {
    // A restored VM: a diff layer over its parent's RAM layers (spec 8.6).
    const changed = files.diff.ranges.reduce((n, r) => n + r[1], 0);
    progress(`writing the ${changed} bytes of memory the guest changed`);
    const chained = await chainedRam(ctx.base, { ...files, diff: files.diff }, {
      template,
      work: ctx.work,
      memoryBytes: files.memoryBytes,
      metadata: { restore: record },
      signal,
    });
    if (chained.flattened) {
      progress(`the RAM chain reached ${MAX_RAM_LAYERS} layers: flattening it`);
    }
    below = chained.below;
    stream = chained.stream;
  } else {
    progress(`compressing ${files.memoryBytes} bytes of guest memory`);
    stream = encodeRamsnap([
      { name: "memory", path: join(template, "memory"), size: files.memoryBytes },
      { name: "device-state", path: join(template, "device-state"), size: deviceStateBytes },
    ], { metadata: { restore: record }, signal });
  }
  const ram = await store.ingest(stream, { signal });
  await installTemplate(template, ram.digest, store.paths.home);
  ctx.onTemplate(undefined);
  return {
    record,
    diskLayers,
    ramDigest: ram.digest,
    ramLayers: below.length ? [...below, ram.digest] : undefined,
    parent: files.diff ? ctx.base.descriptor.digest : undefined,
  };
}

/** The base's layers plus the captured disk (or, for a whole disk, only it). */
async function captureDisk(
  store: ContentStore,
  base: Artifact,
  files: SnapshotFiles,
  signal?: AbortSignal,
): Promise<DiskLayer[]> {
  const layers = [...base.manifest.diskLayers];
  if (!files.disk || !layers.length) return layers;
  const top = layers.at(-1)!;
  const info = await readQcow2Header(files.disk.path);
  const tar = await diskTarStream(files.disk.path, "disk.qcow2");
  const blob = await store.ingest(tar.stream, { signal });
  const layer: DiskLayer = {
    ref: blob.digest,
    format: "qcow2",
    size: info.virtualSize ?? top.size,
  };
  if (files.disk.whole) return [layer];
  // An untouched overlay can equal an existing layer byte for byte;
  // it adds nothing, and a manifest may not name a layer twice.
  return layers.some((l) => l.ref === blob.digest) ? layers : [...layers, layer];
}

/** The restore record of a snapshot of `state` (spec §8.1). */
function restoreRecord(
  state: InstanceState,
  files: SnapshotFiles,
  extra: { diskLayers: DiskLayer[]; devices: string[]; configDiskBytes?: number },
): RestoreRecord {
  return {
    recordVersion: 1,
    vmm: state.adapter,
    vmmVersion: files.vmmVersion,
    machine: files.machine,
    accel: state.accel,
    memoryBytes: state.memoryBytes,
    cpus: state.cpus,
    kernelDigest: state.kernelDigest,
    ...(state.kernelVersion ? { kernelVersion: state.kernelVersion } : {}),
    ...(state.initrdDigest ? { initrdDigest: state.initrdDigest } : {}),
    ...(state.initrdVersion ? { initrdVersion: state.initrdVersion } : {}),
    diskChain: extra.diskLayers.map((l) => l.ref),
    ramsnapVersion: RAMSNAP_VERSION,
    cmdline: files.cmdline,
    network: state.network.mode,
    devices: extra.devices,
    ...(extra.configDiskBytes !== undefined ? { configDiskBytes: extra.configDiskBytes } : {}),
  };
}

/** Writes the snapshot's manifest (the base with the new layers, ramsnap and record). */
async function writeSnapshotArtifact(
  store: ContentStore,
  base: Artifact,
  s: {
    id: string;
    record: RestoreRecord;
    diskLayers: DiskLayer[];
    ramDigest: string;
    ramLayers?: string[];
    parent?: string;
    name: string;
    tag: string;
    mlockRequired: boolean;
  },
) {
  const { record } = s;
  const annotations: Record<string, string> = {
    [RESTORE_ANNOTATION]: JSON.stringify(record),
    [SystemAnnotations.kernelDigest]: record.kernelDigest,
    ...(record.kernelVersion ? { [SystemAnnotations.kernelVersion]: record.kernelVersion } : {}),
    ...(record.initrdDigest ? { [SystemAnnotations.initrdDigest]: record.initrdDigest } : {}),
    ...(record.initrdVersion ? { [SystemAnnotations.initrdVersion]: record.initrdVersion } : {}),
  };
  const manifest: Manifest = validate(ManifestSchema, {
    ...base.manifest,
    name: s.name,
    version: s.tag,
    diskLayers: s.diskLayers,
    ramSnapshot: {
      ref: s.ramDigest,
      compression: "lz4",
      preload_hint: true,
      mlock_required: s.mlockRequired,
      ...(s.ramLayers ? { layers: s.ramLayers } : {}),
    },
    metadata: {
      ...(base.manifest.metadata ?? { platform: { arch: "x86_64", uefi: false } }),
      created: new Date().toISOString(),
    },
    annotations: { ...(base.manifest.annotations ?? {}), ...annotations },
  }, "snapshot manifest");
  return await writeArtifact(store, manifest, {
    subject: base.descriptor,
    annotations: {
      ...annotations,
      "ovms.snapshot.source": s.id,
      "ovms.snapshot.memory": String(record.memoryBytes),
      ...(s.parent ? { [PARENT_ANNOTATION]: s.parent } : {}),
    },
  });
}
