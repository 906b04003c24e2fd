/**
 * @module
 * RAM snapshots of running instances (`ovm snapshot`, the API's /snapshot):
 * the guest is paused, QEMU's device state streamed out (migration with
 * `x-ignore-shared`, so guest RAM stays in its memory file), the memory file
 * and the writable disk overlay captured while the guest stays paused, and a
 * new OVMS artifact written: the same kernel, initrd and layers, plus the
 * overlay as a new diff layer and the ramsnap blob, `subject` → the base.
 *
 * The restore-compatibility record (spec §8.1) travels twice: in the ramsnap
 * header's metadata (with the bytes it describes) and in the manifest's
 * annotations (readable before the blob is pulled or decoded).
 */
import { join } from "node:path";
import { ConflictError, ValidationError } from "../errors.ts";
import { type Digest, type Manifest, validate } from "../manifest/mod.ts";
import { ManifestSchema } from "../manifest/schema.ts";
import { diskTarStream, readQcow2Header } from "../disk/mod.ts";
import { ContentStore, loadArtifact, parseLocalRef, writeArtifact } from "../store/mod.ts";
import { encodeRamsnap, RAMSNAP_VERSION } from "../snapshot/mod.ts";
import { SystemAnnotations } from "../system/snapshot.ts";
import { pushFromStore } from "../oci/mod.ts";
import { getAdapter, type VmHandle } from "../vmm/mod.ts";
import { FC_ROOT_NAME } from "../vmm/firecracker/adapter.ts";
import { HttpUnixClient } from "../vmm/http_unix.ts";
import { run } from "../process/mod.ts";
import { getInstance, isActive, stopInstance } from "./runtime.ts";
import { InstanceStore } from "./instance.ts";
import { dataRanges } from "../../ffi/mod.ts";
import { installTemplate, markTemplateUser, newTemplateDir } from "./restore.ts";

export { WarmPool } from "./pool.ts";

/** Manifest annotation holding the restore-compatibility record as JSON (spec §8.1). */
export const RESTORE_ANNOTATION = "ovms.snapshot.restore";

/** Machine type ovm gives QEMU VMs (a snapshot restores only into the same). */
export const QEMU_MACHINE = "q35";

/** What a snapshot must be restored with (spec §8.1). */
export interface RestoreRecord {
  /** Version of this record's shape. */
  recordVersion: 1;
  vmm: string;
  vmmVersion: string;
  machine: string;
  accel: "kvm" | "tcg";
  memoryBytes: number;
  cpus: number;
  kernelDigest: string;
  kernelVersion?: string;
  initrdDigest?: string;
  initrdVersion?: string;
  /** Disk layer digests, base first, including the captured diff. */
  diskChain: string[];
  ramsnapVersion: number;
  /** The kernel command line the guest booted with (restores use the same). */
  cmdline: string;
  network: "none" | "user";
  /** Device names, in manifest order. */
  devices: string[];
  /** Size of the bootstrap config disk the guest saw, when it had one. */
  configDiskBytes?: number;
}

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

/** Snapshots instance `id` of `home` into a new artifact tagged `options.tag`. */
export async function snapshotInstance(
  home: string,
  id: string,
  options: SnapshotOptions,
): Promise<{ ref: string; digest: string; pushed?: string }> {
  const progress = options.onProgress ?? (() => {});
  const target = parseLocalRef(options.tag);
  const state = await getInstance(home, id);
  if (!isActive(state) || !state.vm || (state.state !== "running" && state.state !== "paused")) {
    throw new ConflictError(`Instance "${id}" is ${state.state}`, {
      hint: "only a running or paused instance can be snapshotted",
    });
  }
  const adapter = getAdapter(state.adapter);
  if (!adapter.capabilities.snapshotKinds.includes("ram")) {
    throw new ValidationError(`Runtime "${adapter.name}" cannot take RAM snapshots`);
  }
  const shared = (state.devices ?? []).filter((d) => d.type === "ivshmem");
  if (adapter.name === "qemu" && shared.length > 0) {
    // With x-ignore-shared, QEMU 7.2 checks each shared region's guest-physical
    // address while loading RAM, before the PCI state that maps the ivshmem BAR
    // is loaded: the restore fails ("Mismatched GPAs"). Refuse before pausing.
    throw new ConflictError(
      `Instance "${id}" has ivshmem device "${shared[0].name}": QEMU cannot restore a RAM ` +
        "snapshot of a VM with shared-memory devices",
      {
        hint: "snapshot an artifact without ivshmem devices (its shared regions are host state " +
          "that a snapshot could not carry anyway)",
      },
    );
  }
  const store = await ContentStore.open(home);
  const base = await loadArtifact(store, state.manifestDigest);
  const paths = new InstanceStore(home).paths(id);
  if (target.digest) {
    throw new ValidationError(`Snapshot tag "${options.tag}" is a digest`, {
      hint: "use name:tag",
    });
  }
  // Beside the ingest area: the same filesystem as the store.
  await Deno.mkdir(store.paths.ingest, { recursive: true });
  const work = await Deno.makeTempDir({ dir: store.paths.ingest, prefix: "snapshot-" });
  let resumed = false;
  let template: string | undefined;
  const finishSource = async () => {
    if (resumed) return;
    resumed = true;
    if (options.after === "stop") {
      await stopInstance(home, id, { force: true, reason: "stopped after 'ovm snapshot --stop'" });
    } else if (state.state === "running") {
      // A paused source stays paused (QEMU's postmigrate; `cont` later
      // reactivates its disks).
      await adapter.resume(state.vm!);
    }
  };
  try {
    return await store.lease(async () => {
      progress(`pausing ${id} and saving its device state`);
      const files = await adapter.snapshot(state.vm!, {
        kind: "ram",
        dest: work,
        signal: options.signal,
      });
      let overlayCopy: string | undefined;
      // Firecracker's disk is one flattened raw file: it becomes the whole chain.
      let wholeDisk = false;
      if (base.manifest.diskLayers.length) {
        // After the migration QEMU has flushed and inactivated the overlay:
        // it is consistent with the RAM until the guest resumes.
        overlayCopy = join(work, "overlay.qcow2");
        if (adapter.name === "firecracker") {
          // A self-contained qcow2 (zeros skipped) rather than a raw layer:
          // compact, and Firecracker's restore flattens it to raw again.
          const raw = join(paths.vmDir, FC_ROOT_NAME);
          await run("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", raw, overlayCopy], {
            signal: options.signal,
          });
          wholeDisk = true;
        } else {
          await Deno.copyFile(paths.overlay, overlayCopy);
          if (adapter.name === "cloud-hypervisor") {
            // Its overlay names the layer copy in the VM directory: the copy
            // (never the live overlay) becomes a plain diff layer.
            await run("qemu-img", ["rebase", "-u", "-b", "", overlayCopy], {
              signal: options.signal,
            });
          }
        }
      }
      // The guest's memory, copied sparsely into what becomes this
      // snapshot's template (the first local restore needs no decode), so
      // the source can resume before the slow part, compression.
      template = await newTemplateDir();
      progress(`copying ${files.memoryBytes} bytes of guest memory`);
      await sparseCopy(files.memory, join(template, "memory"), files.memoryBytes, {
        offset: files.memoryOffset,
        signal: options.signal,
      });
      await Deno.copyFile(files.deviceState, join(template, "device-state"));
      const deviceStateBytes = (await Deno.stat(files.deviceState)).size;
      const argv = state.vm!.argv;
      const cmdline = adapter.name === "qemu"
        ? argv[argv.indexOf("-append") + 1] ?? ""
        : await apiCmdline(adapter.name, state.vm!);
      const configDiskBytes = await Deno.stat(paths.configDisk).then(
        (s) => s.size,
        () => undefined,
      );

      // The disk diff first (small), then the RAM, then let the source go on.
      let diskLayers = [...base.manifest.diskLayers];
      if (overlayCopy) {
        const top = diskLayers.at(-1)!;
        const info = await readQcow2Header(overlayCopy);
        const tar = await diskTarStream(overlayCopy, "disk.qcow2");
        const blob = await store.ingest(tar.stream, { signal: options.signal });
        // An untouched overlay can equal an existing layer byte for byte;
        // it adds nothing, and a manifest may not name a layer twice.
        if (wholeDisk) {
          diskLayers = [{ ref: blob.digest, format: "qcow2", size: info.virtualSize ?? top.size }];
        } else if (!diskLayers.some((l) => l.ref === blob.digest)) {
          diskLayers.push({
            ref: blob.digest,
            format: "qcow2",
            size: info.virtualSize ?? top.size,
          });
        }
      }
      const record: RestoreRecord = {
        recordVersion: 1,
        vmm: adapter.name,
        vmmVersion: files.vmmVersion,
        machine: adapter.name === "qemu" ? QEMU_MACHINE : adapter.name,
        accel: state.accel,
        memoryBytes: state.memoryBytes,
        cpus: state.cpus,
        kernelDigest: state.kernelDigest,
        ...(state.kernelVersion ? { kernelVersion: state.kernelVersion } : {}),
        ...(state.initrdDigest ? { initrdDigest: state.initrdDigest } : {}),
        ...(state.initrdVersion ? { initrdVersion: state.initrdVersion } : {}),
        diskChain: diskLayers.map((l) => l.ref),
        ramsnapVersion: RAMSNAP_VERSION,
        cmdline,
        network: state.network.mode,
        devices: base.manifest.devices.map((d) => d.name),
        ...(configDiskBytes !== undefined ? { configDiskBytes } : {}),
      };
      await finishSource();
      progress(`compressing ${files.memoryBytes} bytes of guest memory`);
      const ram = await store.ingest(
        encodeRamsnap([
          { name: "memory", path: join(template, "memory"), size: files.memoryBytes },
          { name: "device-state", path: join(template, "device-state"), size: deviceStateBytes },
        ], { metadata: { restore: record }, signal: options.signal }),
        { signal: options.signal },
      );
      await installTemplate(template, ram.digest);
      template = undefined;
      await markTemplateUser(ram.digest, home);

      const annotations: Record<string, string> = {
        [RESTORE_ANNOTATION]: JSON.stringify(record),
        [SystemAnnotations.kernelDigest]: record.kernelDigest,
        ...(record.kernelVersion
          ? { [SystemAnnotations.kernelVersion]: record.kernelVersion }
          : {}),
        ...(record.initrdDigest ? { [SystemAnnotations.initrdDigest]: record.initrdDigest } : {}),
        ...(record.initrdVersion
          ? { [SystemAnnotations.initrdVersion]: record.initrdVersion }
          : {}),
      };
      const manifest: Manifest = validate(ManifestSchema, {
        ...base.manifest,
        name: target.repository,
        version: target.tag!,
        diskLayers,
        ramSnapshot: {
          ref: ram.digest,
          compression: "lz4",
          preload_hint: true,
          mlock_required: options.mlockRequired ?? false,
        },
        metadata: {
          ...(base.manifest.metadata ?? { platform: { arch: "x86_64", uefi: false } }),
          created: new Date().toISOString(),
        },
        annotations: { ...(base.manifest.annotations ?? {}), ...annotations },
      }, "snapshot manifest");
      const descriptor = await writeArtifact(store, manifest, {
        subject: base.descriptor,
        annotations: {
          ...annotations,
          "ovms.snapshot.source": id,
          "ovms.snapshot.memory": String(record.memoryBytes),
        },
      });
      const ref = target.name;
      await store.tag(ref, descriptor);
      progress(`snapshot ${ref} (${descriptor.digest})`);
      return { ref, digest: descriptor.digest as Digest };
    }).then(async (res) => {
      if (!options.push) return res;
      progress(`pushing to ${options.push}`);
      const pushed = await pushFromStore(store, res.ref, options.push, {
        home,
        signal: options.signal,
      });
      return { ...res, pushed: `${pushed.reference}@${pushed.digest}` };
    });
  } finally {
    // A failure before the RAM was captured leaves the source as it was.
    await finishSource().catch(() => {});
    await Deno.remove(work, { recursive: true }).catch(() => {});
    if (template) await Deno.remove(template, { recursive: true }).catch(() => {});
  }
}

/** The kernel command line a Cloud Hypervisor or Firecracker guest booted with (its API). */
async function apiCmdline(vmm: string, handle: VmHandle): Promise<string> {
  if (vmm === "cloud-hypervisor") {
    using api = new HttpUnixClient(handle.controlSocket, { adapter: vmm, basePath: "/api/v1" });
    const info = await api.request("GET", "/vm.info", { step: "vm.info" });
    return (info.body as { config?: { payload?: { cmdline?: string } } })?.config?.payload
      ?.cmdline ?? "";
  }
  using api = new HttpUnixClient(handle.controlSocket, { adapter: vmm });
  const config = await api.request("GET", "/vm/config", { step: "GET /vm/config" });
  return (config.body as { "boot-source"?: { boot_args?: string } })?.["boot-source"]
    ?.boot_args ?? "";
}

/**
 * Copies `size` bytes of `src` (from `offset`) to a new file `dst`, leaving
 * holes where `src` has holes (found with SEEK_DATA, never read) and where a
 * 1 MiB chunk is all zeros: on tmpfs a hole costs no memory, and most of a
 * guest's RAM is never touched.
 */
async function sparseCopy(
  src: string,
  dst: string,
  size: number,
  options: { offset?: number; signal?: AbortSignal } = {},
) {
  const signal = options.signal;
  const base = options.offset ?? 0;
  using inp = await Deno.open(src, { read: true });
  using out = await Deno.open(dst, { write: true, createNew: true, mode: 0o600 });
  await out.truncate(size);
  const buf = new Uint8Array(1 << 20);
  const words = new BigUint64Array(buf.buffer);
  for (const [start, end] of dataRanges(src, base, size)) {
    await inp.seek(start, Deno.SeekMode.Start);
    let pos = start;
    while (pos < end) {
      signal?.throwIfAborted();
      const want = Math.min(buf.byteLength, end - pos);
      let got = 0;
      while (got < want) {
        const n = await inp.read(buf.subarray(got, want));
        if (n === null) {
          throw new Error(`"${src}" ended at ${pos + got} bytes, expected ${base + size}`);
        }
        got += n;
      }
      let zero = true;
      const w = want >>> 3;
      for (let i = 0; i < w; i++) {
        if (words[i] !== 0n) {
          zero = false;
          break;
        }
      }
      for (let i = w << 3; zero && i < want; i++) if (buf[i] !== 0) zero = false;
      if (!zero) {
        await out.seek(pos - base, Deno.SeekMode.Start);
        let done = 0;
        while (done < want) done += await out.write(buf.subarray(done, want));
      }
      pos += want;
    }
  }
}
