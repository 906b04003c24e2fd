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

/** Lifecycle states, as written to `state.json`. */
export type VmState = "starting" | "running" | "paused" | "stopping" | "stopped" | "error";

export type Accel = "kvm" | "tcg";
export type SnapshotKind = "ram";
export type NetMode = "none" | "user";

/** What a backend can do; the runtime refuses the rest before starting anything. */
export interface AdapterCapabilities {
  /** Device types of the OVMS manifest this backend can attach. */
  devices: Device["type"][];
  /** Snapshot kinds `snapshot`/`restore` accept (empty: none). */
  snapshotKinds: SnapshotKind[];
  diskFormats: ("qcow2" | "raw")[];
  network: NetMode[];
  /** Whether `pause`/`resume` work. */
  pause: boolean;
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

export interface NetworkSpec {
  mode: NetMode;
  publish: PortMapping[];
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
}

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

export interface VmmAdapter {
  readonly name: string;
  readonly capabilities: AdapterCapabilities;
  /** Whether this backend can run here; the reason when it cannot. */
  available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }>;
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
   * Pauses the VM and saves its state (`ram`: device state into
   * `dest/device-state`; guest RAM is the VM's memory file, consistent while
   * the VM stays paused). The caller resumes or stops the VM afterwards.
   */
  snapshot(
    handle: VmHandle,
    options: { kind: SnapshotKind; dest: string; signal?: AbortSignal },
  ): Promise<SnapshotFiles>;
  /**
   * Starts a VM from a snapshot instead of booting it (QEMU: `-incoming`):
   * `spec.memory` is the memory template, `source` the directory holding
   * `device-state`. Resolves once the guest runs.
   */
  restore(
    spec: VmSpec,
    options: { kind: SnapshotKind; source: string; signal?: AbortSignal },
  ): Promise<StartedVm>;
}

/** What a RAM snapshot of a running VM produced. */
export interface SnapshotFiles {
  /** The guest RAM image (the VM's memory file), from `memoryOffset` on. */
  memory: string;
  memoryBytes: number;
  /**
   * Where the RAM starts in `memory` (a restored QEMU's private mapping is
   * read through `/proc/<pid>/mem` at its address). Default 0.
   */
  memoryOffset?: number;
  /** The device state stream. */
  deviceState: string;
  /** The VMM's version, for the restore-compatibility record. */
  vmmVersion: string;
}

/** Removes what a VM leaves behind once its process is gone (shm files, control socket). */
export async function removeVmFiles(handle: VmHandle): Promise<void> {
  for (const f of [...handle.runtimeFiles, handle.controlSocket]) {
    await Deno.remove(f).catch(() => {});
  }
}
