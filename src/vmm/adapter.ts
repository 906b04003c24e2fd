/**
 * @module
 * The one interface every VMM backend implements. The runtime (`src/runtime/`)
 * turns a manifest into a {@linkcode VmSpec} — plain files, sizes and devices —
 * and drives the VM through these verbs only, so a backend never sees OVMS
 * manifests or the store, and the runtime never sees a VMM's command line.
 *
 * Control works from any ovm process: {@linkcode VmHandle} is plain data that
 * the runtime persists in the instance's `state.json`, so a later `ovm stop`
 * reattaches to a VM that an earlier `ovm run --detach` started.
 */
import type { Device } from "../manifest/mod.ts";

/**
 * The states a VM (and the instance around it) can be in, as written to
 * `state.json` and reported by the API. The first five are the OVMS runtime
 * contract's `InstanceStatus.state`; `paused` is ovm's extension. The
 * transitions between them are `src/runtime/state_machine.ts`.
 */
export const VM_STATES = ["starting", "running", "paused", "stopping", "stopped", "error"] as const;
export type VmState = typeof VM_STATES[number];

export type Accel = "kvm" | "tcg";
export type SnapshotKind = "ram";
/**
 * What a restore starts from: `template` is ovm's decoded memory template
 * (`spec.memory`) plus a directory holding `device-state` (the artifacts
 * `ovm snapshot` writes, with a restore record); `ramsnap` is the artifact's
 * ramsnap blob itself, which the backend decodes (descriptor runtimes).
 */
export type RestoreSource = "template" | "ramsnap";
/**
 * Network modes; a new mode adds its own fields to {@linkcode NetworkSpec}.
 * `none`: no NIC. `user`: the VMM's own user-mode stack (QEMU slirp) with
 * ports forwarded by the VMM. `bridge`: a NIC on a host TAP device that ovm's
 * network module created on a bridge (spec section 7.6).
 */
export type NetMode = "none" | "user" | "bridge";

/** Largest device-state stream ovm saves or loads (guest RAM is not in it). */
export const MAX_DEVICE_STATE = 256 << 20;

/** What a backend can do; the runtime refuses the rest before starting anything. */
export interface AdapterCapabilities {
  /** Device types of the OVMS manifest this backend can attach. */
  devices: Device["type"][];
  /** Snapshot kinds `snapshot()` can take (empty: none). */
  snapshotKinds: SnapshotKind[];
  /** Snapshot kinds `restore()` can start a VM from (empty: none). */
  restoreKinds: SnapshotKind[];
  /** What `restore()` reads (empty when `restoreKinds` is). */
  restoreFrom: RestoreSource[];
  /**
   * Whether `prepareRestore` works: the VMM is started for a restore ahead of
   * time and the state loaded, the vCPUs waiting (the warm pool, spec 8.5).
   */
  preparedRestore: boolean;
  diskFormats: ("qcow2" | "raw")[];
  network: NetMode[];
  /** Whether `pause`/`resume` work. */
  pause: boolean;
  /**
   * Whether the guest gets `VmSpec.stdin` as its `ovms.stdin` port (a cold
   * boot; spec 13.3). Default false.
   */
  stdin?: boolean;
  /**
   * Whether the guest gets `VmSpec.identity` (QEMU: fw_cfg), so a restored
   * clone takes its own MAC and address (spec 7.6.6). Default false.
   */
  guestIdentity?: boolean;
}

/** One read-only layer of the root disk chain, used in place inside its blob. */
export interface DiskLayerFile {
  /** The blob (a disk-layer tar) holding the image. */
  path: string;
  /** Offset of the image inside `path` (512 for OVMS disk tars). */
  offset: number;
  /** Length of the image in bytes. */
  length: number;
  format: "qcow2" | "raw";
  /** Virtual size in bytes. */
  virtualSize: number;
}

export interface PortMapping {
  /** Host address to bind; ovm defaults to 127.0.0.1. */
  hostIp: string;
  hostPort: number;
  guestPort: number;
  protocol: "tcp" | "udp";
}

/** A guest NIC backed by a host TAP device (bridge mode). */
export interface NicSpec {
  /** The TAP device; it exists, owned by `VmSpec.runAs`, before the VMM starts. */
  tap: string;
  /** The guest's MAC address. */
  mac: string;
}

/**
 * The guest's network. `mode` says which kind; each mode reads its own
 * fields (`user`: `publish`; `bridge`: `nics`), so backends refuse a mode
 * they do not list in `capabilities.network`.
 */
export interface NetworkSpec {
  mode: NetMode;
  /** Ports the VMM forwards (user mode); in bridge mode the host's nftables DNAT does it. */
  publish: PortMapping[];
  /** Bridge mode: the NICs in guest order (eth0 first). */
  nics?: NicSpec[];
}

/** Everything a backend needs to start one VM. Paths are absolute. */
export interface VmSpec {
  /** Instance id; names shared-memory files and the QMP socket. */
  id: string;
  kernel: string;
  initrd?: string;
  cmdline: string;
  memoryBytes: number;
  cpus: number;
  accel: Accel;
  /** The root disk: read-only layers base first, plus the instance's writable overlay. */
  rootDisk?: { layers: DiskLayerFile[]; overlay: string };
  /** Extra raw disks after the root disk (the bootstrap config disk), read-only. */
  extraDisks: { path: string; readOnly: boolean }[];
  devices: Device[];
  network: NetworkSpec;
  /** Directory the backend owns for this VM (sockets, console log, its own files). */
  vmDir: string;
  /** Where the guest's serial console is appended. */
  consoleLog: string;
  /**
   * A file (a FIFO whose writer the caller holds) the VMM reads into the
   * guest's virtio-serial port named `ovms.stdin`; its end of file (every
   * writer closed) becomes the port's end of file. ovms-init gives the port
   * to the workload as its stdin (`ovms.stdin=port`, spec 6.4). Backends
   * without `capabilities.stdin` ignore it (the guest then reads /dev/null).
   */
  stdin?: string;
  /** Run the VMM as this user (ovm runs as root). */
  runAs?: { uid: number; gid: number };
  /** Whether the VMM must outlive the ovm process that starts it. */
  detach: boolean;
  /**
   * Guest RAM: a file the VMM maps shared (snapshots read it back), or, for
   * a restore, a snapshot's memory template mapped privately (copy-on-write).
   * Default: a per-instance file in /dev/shm, shared.
   */
  memory?: { path: string; share: boolean; create: boolean };
  /** A fresh VM generation id (a UUID) for the guest's vmgenid device. */
  vmgenid?: string;
  /**
   * The guest identity document (spec section 7.6.6: generation, hostname,
   * NIC addresses, RNG seed), exactly {@linkcode IDENTITY_SIZE} bytes, no
   * commas. QEMU hands it to the guest as fw_cfg file `opt/ovms/identity`,
   * where ovms-init reads it at boot and again whenever it changes (a
   * restored clone).
   */
  identity?: string;
}

/** The fixed size of the guest identity document (a restored guest caches the size). */
export const IDENTITY_SIZE = 512;

/** Plain, persistable facts about a started VM: enough to control it from another process. */
export interface VmHandle {
  adapter: string;
  pid: number;
  /** Start time of `pid` in clock ticks since boot (guards against pid reuse). */
  pidStartTime?: number;
  /** The VMM's control socket (QMP for QEMU). */
  controlSocket: string;
  /** Files that exist only while the VM runs and must be removed after it (shm files). */
  runtimeFiles: string[];
  /** Device facts surfaced to users (e.g. where ivshmem regions are). */
  devices: DeviceStatus[];
  /** The full VMM command line, for `ovm inspect` and bug reports. */
  argv: string[];
}

export interface DeviceStatus {
  type: Device["type"];
  name: string;
  size: number;
  /** The manifest's requested address. */
  mmioAddr: string;
  /** Host file backing the region. */
  hostPath?: string;
  /** Where the guest will find it, in the backend's terms. */
  guestLocation?: string;
}

export interface VmStatus {
  state: VmState;
  /** The VMM's own run state when it answered (QEMU: "running", "paused", "shutdown", ...). */
  detail?: string;
  reason?: string;
}

export interface StopResult {
  /** How it ended: the guest powered off, the VMM quit on request, or it was killed. */
  how: "poweroff" | "quit" | "killed" | "already-stopped";
}

/** Something that a VM launch produced and the caller may wait on. */
export interface StartedVm {
  handle: VmHandle;
  /** Resolves when the VMM process ends (only for the process that started it). */
  exited: Promise<{ code: number; signal?: string }>;
  /** Lets the process exit while the VM keeps running (detached runs). */
  release(): void;
}

/** Options of {@linkcode VmmAdapter.snapshot}. */
export interface SnapshotOptions {
  kind: SnapshotKind;
  /** A fresh directory the backend writes the snapshot's files into. */
  dest: string;
  /** The VM's directory (`VmSpec.vmDir` of the start). */
  vmDir: string;
  /** The VM's writable overlay (`VmSpec.rootDisk.overlay`), when it has a root disk. */
  overlay?: string;
  signal?: AbortSignal;
}

/** What a RAM snapshot of a running VM produced: what the snapshot artifact records. */
export interface SnapshotFiles {
  /** The guest RAM image (the VM's memory file), from `memoryOffset` on. */
  memory: string;
  memoryBytes: number;
  /** Where the RAM starts in `memory`. Default 0. */
  memoryOffset?: number;
  /** The device state stream (at most {@linkcode MAX_DEVICE_STATE} bytes). */
  deviceState: string;
  /** The VMM's version, for the restore record. */
  vmmVersion: string;
  /** The machine type a restore must use (the restore record's `machine`). */
  machine: string;
  /** The kernel command line the guest booted with (a restore uses the same). */
  cmdline: string;
  /**
   * The root disk as the paused guest left it: a self-contained qcow2 file
   * (no backing name) in `dest`. `whole`: it is the entire disk (the backend
   * flattened the chain), so it replaces the chain instead of going on top.
   */
  disk?: { path: string; whole: boolean };
  /**
   * A VM restored from a snapshot: its RAM as the pages it changed over the
   * memory template it maps (then `memory` is that template). `ranges` are
   * `[offset, length]` of guest memory, page-aligned, sorted, disjoint;
   * `pages` holds their bytes back to back. The runtime writes a RAM diff
   * layer of them (spec 8.6).
   */
  diff?: { ranges: [number, number][]; pages: string };
}

/** Options of a restore (one-shot or prepared). */
export interface RestoreOptions {
  kind: SnapshotKind;
  /**
   * `template` sources: the directory holding `device-state` (the memory
   * template is `spec.memory`). `ramsnap` sources: the ramsnap blob.
   */
  source: string;
  /** The manifest's `preload_hint` (ramsnap sources: decode onto tmpfs). */
  preload?: boolean;
  /** The manifest's `mlock_required` (ramsnap sources: lock the decoded memory). */
  mlock?: boolean;
  signal?: AbortSignal;
}

/**
 * Phase one of a two-phase restore: a VMM started on the snapshot's memory
 * template, waiting for its device state. `load` is phase two; with
 * `resume: false` the state is loaded and the vCPUs wait for `resume()`
 * (what the warm pool holds, so a start costs only `resume`).
 */
export interface PreparedVm {
  readonly vm: StartedVm;
  /** The version of the VMM that runs (checked against the restore record). */
  readonly version: string;
  /** Loads the device state from the restore's `source`; with `resume` (default), the guest runs. */
  load(options?: { resume?: boolean; timeoutMs?: number }): Promise<void>;
  /** Lets a VM loaded with `resume: false` run. */
  resume(): Promise<void>;
  /** The VM's status, through the connection this holds (a VMM may serve one client at a time). */
  status(): Promise<VmStatus>;
  /** Releases the control connection; the VM keeps waiting or running. */
  close(): void;
}

export interface VmmAdapter {
  readonly name: string;
  /** `adapter`: coded in ovm; `descriptor`: a runtime descriptor drives a CLI binary. */
  readonly kind: "adapter" | "descriptor";
  readonly capabilities: AdapterCapabilities;
  /**
   * The VMM's own log (its stdout and stderr) in the VM directory, for error
   * reports; "" when its output goes to the console log.
   */
  readonly logName: string;
  /**
   * Whether this backend can run here; the reason when it cannot. The
   * version may be "unknown" unless `probeVersion` asks to run the binary.
   */
  available(
    options?: { probeVersion?: boolean },
  ): Promise<{ ok: true; version: string } | { ok: false; reason: string }>;
  /**
   * Validates the spec against the capabilities and readies backend files
   * (the writable overlay). Nothing runs yet; failures here leave no process.
   */
  prepare(spec: VmSpec, options?: { signal?: AbortSignal }): Promise<void>;
  start(spec: VmSpec, options?: { signal?: AbortSignal }): Promise<StartedVm>;
  status(handle: VmHandle): Promise<VmStatus>;
  /**
   * Whether the guest shows signs of running an OS beyond the console (QEMU:
   * it has done disk I/O). The boot watchdog accepts this as life for guests
   * that print nothing.
   */
  guestActive(handle: VmHandle): Promise<boolean>;
  pause(handle: VmHandle): Promise<void>;
  resume(handle: VmHandle): Promise<void>;
  /** Graceful (guest power-off) within `timeoutMs`, then forced; always removes runtime files. */
  stop(handle: VmHandle, options?: { timeoutMs?: number; force?: boolean }): Promise<StopResult>;
  /**
   * Pauses the VM and saves its state (`ram`: guest RAM, device state, the
   * root disk, the boot command line). A backend refuses a VM it cannot
   * snapshot before pausing it. The caller resumes or stops the VM afterwards.
   */
  snapshot(handle: VmHandle, options: SnapshotOptions): Promise<SnapshotFiles>;
  /** Starts a VM from a snapshot instead of booting it; resolves once the guest runs. */
  restore(spec: VmSpec, options: RestoreOptions): Promise<StartedVm>;
  /**
   * Phase one of a two-phase restore (only when `capabilities.preparedRestore`):
   * `paused` keeps the vCPUs stopped after `load({resume: false})`.
   */
  prepareRestore?(
    spec: VmSpec,
    options: RestoreOptions & { paused?: boolean },
  ): Promise<PreparedVm>;
  /** Whether a VMM of version `running` can load a snapshot written by version `recorded`. */
  restoresFrom(recorded: string, running: string): boolean;
}

/** Removes what a VM leaves behind once its process is gone (shm files, control socket). */
export async function removeVmFiles(handle: VmHandle): Promise<void> {
  for (const f of [...handle.runtimeFiles, handle.controlSocket]) {
    await Deno.remove(f).catch(() => {});
  }
}

/**
 * The handle of a VM whose directory was renamed from `from` to `to` (a warm
 * pool's VM becoming an instance): paths inside it move along.
 */
export function relocateHandle(handle: VmHandle, from: string, to: string): VmHandle {
  const move = (p: string) =>
    p === from || p.startsWith(from + "/") ? to + p.slice(from.length) : p;
  return {
    ...handle,
    controlSocket: move(handle.controlSocket),
    runtimeFiles: handle.runtimeFiles.map(move),
  };
}

/** "v53.0" and "53.0" name the same release. */
export function bareVersion(v: string): string {
  return v.trim().replace(/^v/, "");
}
