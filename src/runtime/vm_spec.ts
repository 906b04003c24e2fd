/**
 * @module
 * The one place a {@linkcode VmSpec} is built: from the manifest (its disk
 * layers, kernel arguments, devices, bootstrap config), the user's
 * overrides (memory, CPUs, command, network) and the host's files (the
 * blobs in the store, installed system images, the VMM's uid). A cold boot
 * and a restore differ only in where the command line, config disk size and
 * guest memory come from ({@linkcode bootSpec}, {@linkcode restoreSpec}).
 */
import { join } from "node:path";
import { NotFoundError, ValidationError } from "../errors.ts";
import {
  type BootstrapConfig,
  BootstrapConfigSchema,
  isDigest,
  type Manifest,
  parseBootstrapConfig,
} from "../manifest/mod.ts";
import type { Artifact, ContentStore } from "../store/mod.ts";
import { applyOverrides } from "../convert/bootstrap.ts";
import {
  buildConfigDisk,
  type GuestNicIdentity,
  identityDocument,
  imageDir,
  listSystem,
} from "../system/mod.ts";
import type { Accel, DiskLayerFile, NetworkSpec, VmSpec } from "../vmm/mod.ts";
import { assembleChain, readKernelVersion } from "./chain.ts";
import type { VmPaths } from "./instance.ts";
import { USER_NET } from "./options.ts";

/** First uid of the range per-instance VMM users are drawn from (no passwd entries needed). */
export const VMM_UID_BASE = 0x4f560000;
const VMM_UID_SPAN = 0x10000;

/**
 * The uid/gid the VMM runs as when ovm is root. By default each instance gets
 * its own unprivileged uid (and gid) from a fixed range, derived from its home
 * and id, so two VMs can neither open each other's files nor ptrace each
 * other. `$OVM_QEMU_UID`/`$OVM_QEMU_GID` pin one uid for all (`0` keeps root).
 */
export function vmmUser(home: string, id: string): { uid: number; gid: number } | undefined {
  if (Deno.uid() !== 0) return undefined;
  const fixed = Deno.env.get("OVM_QEMU_UID");
  if (fixed !== undefined) {
    const uid = Number(fixed);
    if (!Number.isInteger(uid) || uid < 0) {
      throw new ValidationError(`Invalid OVM_QEMU_UID "${fixed}"`, { hint: "use a number" });
    }
    if (uid === 0) return undefined;
    return { uid, gid: Number(Deno.env.get("OVM_QEMU_GID") ?? uid) };
  }
  // FNV-1a over "home\0id": stable for the instance, spread over the range.
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(`${home}\0${id}`)) {
    h = Math.imul(h ^ b, 0x01000193) >>> 0;
  }
  const uid = VMM_UID_BASE + (h % VMM_UID_SPAN);
  return { uid, gid: uid };
}

/** The group that may open a snapshot's memory template (each VM keeps its own uid). */
export function snapshotGid(digest: string): number {
  return VMM_UID_BASE + VMM_UID_SPAN + (parseInt(digest.slice(7, 15), 16) % VMM_UID_SPAN);
}

export async function readBootstrap(
  store: ContentStore,
  a: Artifact,
): Promise<BootstrapConfig | undefined> {
  const ref = a.manifest.bootstrap?.ref;
  if (!ref || !isDigest(ref)) return undefined;
  return parseBootstrapConfig(await store.readBlob(ref), `bootstrap config ${ref}`);
}

/** A kernel or initrd file, with the system version when it is one of ovm's system images. */
export interface BootFile {
  path: string;
  version?: string;
}

/**
 * Finds the kernel or initrd with `digest`: the artifact's blob in the store,
 * else an installed system image with that digest (artifacts built for ovm's
 * system set may name it without carrying it).
 */
export async function bootFile(
  store: ContentStore,
  kind: "kernel" | "initrd",
  digest: string,
): Promise<BootFile> {
  let system: { version: string; digest: string; arch: string; file: string }[] = [];
  try {
    const set = await listSystem(store.paths.home);
    system = kind === "kernel" ? set.kernels : set.initrds;
  } catch { /* no system images */ }
  const hit = system.find((s) => s.digest === digest);
  if (await store.has(digest)) return { path: store.blobPath(digest), version: hit?.version };
  if (hit) {
    return {
      path: join(imageDir(store.paths.home, kind, hit.version, hit.arch), hit.file),
      version: hit.version,
    };
  }
  throw new NotFoundError(
    `The artifact's ${kind} "${digest}" is neither in the store nor a system image`,
    { hint: "pull the artifact again, or install the system set it names ('ovm system ls')" },
  );
}

/** The host files a manifest boots from: its disk chain (checked), kernel and initrd. */
export interface HostFiles {
  chain: DiskLayerFile[];
  kernel: BootFile & { version?: string };
  initrd?: BootFile;
}

/**
 * Resolves and checks a manifest's files before anything is created: every
 * layer a local blob that names no other file, the kernel and initrd local
 * blobs or installed system images. The kernel's version is read from the
 * bzImage when it is not a system image.
 */
export async function hostFiles(store: ContentStore, m: Manifest): Promise<HostFiles> {
  if (!isDigest(m.kernel.ref) || (m.initrd && !isDigest(m.initrd.ref))) {
    throw new ValidationError("The artifact's kernel or initrd is a registry reference", {
      hint: "pull the artifact first with 'ovm pull'",
    });
  }
  const chain = await assembleChain(store, m.diskLayers);
  const kernel = await bootFile(store, "kernel", m.kernel.ref);
  kernel.version ??= await readKernelVersion(kernel.path);
  const initrd = m.initrd ? await bootFile(store, "initrd", m.initrd.ref) : undefined;
  return { chain, kernel, initrd };
}

/** Memory, vCPUs and accelerator of one VM. */
export interface MachineSpec {
  memoryBytes: number;
  cpus: number;
  accel: Accel;
}

/** What every spec is built from. */
export interface SpecInput {
  id: string;
  artifact: Artifact;
  files: HostFiles;
  paths: VmPaths;
  machine: MachineSpec;
  network: NetworkSpec;
  /** Bridge mode: the guest's side of each NIC (address, gateway, DNS, MAC). */
  guestNics?: GuestNicIdentity[];
  runAs?: { uid: number; gid: number };
  detach: boolean;
  /**
   * The workload's stdin (`VmSpec.stdin`). A guest whose command line asks
   * for the port (`ovms.stdin=port`) always gets it, so a snapshot of it
   * restores onto the same devices; without a source it reads `/dev/null`.
   */
  stdin?: string;
}

/** `ovm run IMAGE CMD...`, `--entrypoint` and `--env` (convert's `applyOverrides` rules). */
export interface ConfigOverrides {
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
}

/** The `ovms.net=` parameter ovms-init configures the guest's network from (spec 6.4, 7.6.5). */
export function guestNetArg(network: NetworkSpec, guestNics: GuestNicIdentity[] = []): string {
  if (network.mode === "user") {
    return `ovms.net=${USER_NET.address},${USER_NET.gateway},${USER_NET.dns}`;
  }
  const nic = guestNics[0];
  if (network.mode === "bridge" && nic) {
    return `ovms.net=${
      [nic.address, nic.gateway ?? "", nic.dns ?? ""].join(",").replace(/,+$/, "")
    }`;
  }
  return "ovms.net=none";
}

/**
 * The spec of a cold boot: the bootstrap config (with the overrides) on a
 * read-only config disk, and the manifest's kernel arguments plus where
 * ovms-init finds the config and the network.
 */
export async function bootSpec(
  store: ContentStore,
  input: SpecInput & { overrides?: ConfigOverrides },
): Promise<VmSpec> {
  const { artifact, files, paths } = input;
  await Deno.mkdir(paths.vmDir, { recursive: true, mode: 0o700 });
  let config = await readBootstrap(store, artifact);
  const o = input.overrides ?? {};
  if (o.cmd?.length || o.entrypoint !== undefined || o.env?.length) {
    config = applyOverrides(config ?? BootstrapConfigSchema.parse({}), {
      entrypoint: o.entrypoint,
      env: o.env,
      args: o.cmd,
    });
  }
  const args = [artifact.manifest.kernel.args.trim()];
  const extraDisks: VmSpec["extraDisks"] = [];
  if (config) {
    await buildConfigDisk(paths.configDisk, config);
    extraDisks.push({ path: paths.configDisk, readOnly: true });
    // Virtio disks appear in command-line order: the root chain is vda.
    args.push(`ovms.config=/dev/vd${files.chain.length ? "b" : "a"}`);
  }
  args.push(guestNetArg(input.network, input.guestNics));
  return vmSpec(input, { cmdline: args.filter(Boolean).join(" "), extraDisks });
}

/**
 * The spec of a restore: the command line the snapshot recorded, the config
 * disk the guest saw (rebuilt, at its recorded size: only its size is part
 * of the device state), guest RAM mapped privately from the template.
 */
export async function restoreSpec(
  store: ContentStore,
  input: SpecInput & { cmdline: string; configDiskBytes?: number; memory: string },
): Promise<VmSpec> {
  await Deno.mkdir(input.paths.vmDir, { recursive: true, mode: 0o700 });
  const extraDisks: VmSpec["extraDisks"] = [];
  if (input.configDiskBytes !== undefined) {
    const config = await readBootstrap(store, input.artifact) ?? BootstrapConfigSchema.parse({});
    await buildConfigDisk(input.paths.configDisk, config);
    await Deno.truncate(input.paths.configDisk, input.configDiskBytes);
    extraDisks.push({ path: input.paths.configDisk, readOnly: true });
  }
  return vmSpec(input, {
    cmdline: input.cmdline,
    extraDisks,
    memory: { path: input.memory, share: false, create: false },
  });
}

/** The command-line parameter by which a guest asks for its stdin port (spec 6.4). */
const STDIN_PORT_ARG = /(^|\s)ovms\.stdin=port(\s|$)/;

/** The VM spec literal (the only one). */
function vmSpec(
  input: SpecInput,
  extra: Pick<VmSpec, "cmdline" | "extraDisks" | "memory">,
): VmSpec {
  const { files, paths } = input;
  const vmgenid = crypto.randomUUID();
  return {
    id: input.id,
    kernel: files.kernel.path,
    initrd: files.initrd?.path,
    cmdline: extra.cmdline,
    memoryBytes: input.machine.memoryBytes,
    cpus: input.machine.cpus,
    accel: input.machine.accel,
    rootDisk: files.chain.length ? { layers: files.chain, overlay: paths.overlay } : undefined,
    extraDisks: extra.extraDisks,
    devices: input.artifact.manifest.devices,
    network: input.network,
    vmDir: paths.vmDir,
    consoleLog: paths.consoleLog,
    runAs: input.runAs,
    detach: input.detach,
    ...(input.stdin || STDIN_PORT_ARG.test(extra.cmdline)
      ? { stdin: input.stdin ?? "/dev/null" }
      : {}),
    ...(extra.memory ? { memory: extra.memory } : {}),
    vmgenid,
    // Who this VM is (spec 7.6.6): a restored clone's guest sees the generation
    // change and takes this hostname, its own NIC addresses and a fresh RNG seed.
    identity: identityDocument({
      generation: vmgenid,
      hostname: input.id,
      nics: input.guestNics ?? [],
    }),
  };
}
