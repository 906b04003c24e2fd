/**
 * @module
 * The task's root filesystem: containerd's snapshot mounts are mounted on
 * `<bundle>/rootfs` (the shim owns that mount, runtime-v2.md), file bind
 * mounts are copied in, and the tree becomes a raw ext4 disk (as `ovm
 * convert` builds one), packed with ovm's system kernel and initrd into an
 * ordinary OVMS artifact tagged in the shim's store (spec §13.3). The VM
 * reads a disk, not the host directory: the runtime drives VMs only through
 * artifacts, and a disk of a small image is built in well under a second.
 */
import { dirname, join } from "node:path";
import { VmmError } from "../errors.ts";
import { buildExt4 } from "../convert/mod.ts";
import { diskTarStream } from "../disk/mod.ts";
import { canonicalJson, manifestFromValue, MediaTypes } from "../manifest/mod.ts";
import { run } from "../process/mod.ts";
import { type ContentStore, writeArtifact } from "../store/mod.ts";
import { ensureSystem, initCmdline } from "../system/mod.ts";
import type { BundlePlan } from "./bundle.ts";

export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** Mounts containerd's rootfs mounts on `<bundle>/rootfs` (none: the directory is the root). */
export async function mountRootfs(bundle: string, mounts: Mount[]): Promise<string> {
  const target = join(bundle, "rootfs");
  await Deno.mkdir(target, { recursive: true });
  for (const m of mounts) {
    const bind = m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind");
    const args = [
      ...(bind ? [] : ["-t", m.type]),
      ...(m.options.length ? ["-o", m.options.join(",")] : []),
      m.source,
      target,
    ];
    try {
      await run("mount", args);
    } catch (e) {
      await unmountRootfs(bundle);
      throw new VmmError("ovm-shim", "mount rootfs", `cannot mount the ${m.type} root filesystem`, {
        cause: e,
      });
    }
  }
  return target;
}

/** Unmounts `<bundle>/rootfs` until nothing is mounted there (a no-op when nothing is). */
export async function unmountRootfs(bundle: string): Promise<void> {
  const target = join(bundle, "rootfs");
  for (let i = 0; i < 8; i++) {
    const r = await run("mountpoint", ["-q", target], { allowFailure: true });
    if (r.code !== 0) return;
    const u = await run("umount", [target], { allowFailure: true });
    if (u.code !== 0) await run("umount", ["-l", target], { allowFailure: true });
  }
}

/** Copies host files named by file bind mounts into the root (a copy taken at create time). */
export async function copyFilesIn(root: string, plan: BundlePlan): Promise<void> {
  for (const c of plan.copies) {
    const dest = join(root, c.destination.replace(/^\/+/, ""));
    if (!dest.startsWith(root + "/")) continue;
    await Deno.mkdir(dirname(dest), { recursive: true });
    await Deno.remove(dest).catch(() => {});
    await Deno.copyFile(c.source, dest);
  }
}

export interface BuildOptions {
  /** Seed for the filesystem UUID (the task's namespace/id). */
  seed: string;
  signal?: AbortSignal;
  /** Download cache for the system kernel. */
  cacheDir?: string;
  /** Free space in the disk beyond the files. Default 64 MiB. */
  sizeBuffer?: number;
  trace?: (step: string, ms: number) => void;
}

/**
 * Builds the task's artifact from `root` and tags it `ref`; returns the disk
 * size. The workload's stdio is tagged on the console (`ovms.stdio=tagged`)
 * so the shim can route stdout and stderr apart from kernel messages.
 */
export async function buildTaskArtifact(
  store: ContentStore,
  input: { root: string; plan: BundlePlan; ref: string },
  options: BuildOptions,
): Promise<{ diskBytes: number }> {
  let t = performance.now();
  const mark = (step: string) => {
    const now = performance.now();
    options.trace?.(step, now - t);
    t = now;
  };
  const home = store.paths.home;
  const system = await ensureSystem(home, { signal: options.signal, cacheDir: options.cacheDir });
  mark("system kernel and initrd");
  const work = await Deno.makeTempDir({ dir: home, prefix: ".shim-" });
  try {
    const diskFile = join(work, "disk.raw");
    const diskBytes = await buildExt4(input.root, diskFile, {
      sizeBuffer: options.sizeBuffer ?? 64 * 1024 * 1024,
      seed: options.seed,
      epoch: 0,
      signal: options.signal,
    });
    mark("ext4 disk from the rootfs");
    const args = initCmdline({
      root: "/dev/vda",
      rootFs: "ext4",
      rootMode: input.plan.readonly ? "ro" : "rw",
      overlay: "none",
      mode: "exec",
      stdio: "tagged",
      stdin: "port",
    }) + " loglevel=1";
    await store.lease(async () => {
      const kernel = await store.importFile(system.kernel.path, { signal: options.signal });
      const initrd = await store.importFile(system.initrd.path, { signal: options.signal });
      const { stream, size } = await diskTarStream(diskFile, "disk.raw");
      const disk = await store.ingest(stream, { expectedSize: size, signal: options.signal });
      const bootstrap = await store.writeBlob(canonicalJson(input.plan.bootstrap));
      const [name, version] = input.ref.split(":");
      const manifest = manifestFromValue({
        schemaVersion: 1,
        mediaType: MediaTypes.manifest,
        name,
        version,
        kernel: { ref: kernel.digest, args },
        initrd: { ref: initrd.digest },
        diskLayers: [{ ref: disk.digest, format: "raw", size: diskBytes }],
        metadata: {
          created: new Date(0).toISOString(),
          platform: { arch: "x86_64", uefi: false },
          description: "Built by the ovm containerd shim from a task's root filesystem",
        },
        bootstrap: { ref: bootstrap.digest },
      }, "shim task manifest");
      const descriptor = await writeArtifact(store, manifest);
      await store.tag(input.ref, descriptor);
    });
    mark("artifact into the store");
    return { diskBytes };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}
