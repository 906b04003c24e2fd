/**
 * @module
 * The generic adapter for VMMs driven by their command line: a
 * {@linkcode RuntimeDescriptor} says which flags carry the kernel, initrd,
 * disks, RAM snapshot, devices and kernel command line; this adapter turns a
 * VM spec into that argv, starts the binary in its own session with its
 * stdout and stderr appended to the instance console log, and stops it by
 * signal (then SIGKILL after the descriptor's timeout).
 */
import { join, relative } from "node:path";
import { ValidationError, VmmError } from "../../errors.ts";
import { lockFileInMemory } from "../../../ffi/mod.ts";
import { run, which } from "../../process/mod.ts";
import { decodeRamsnap } from "../../snapshot/mod.ts";
import type {
  AdapterCapabilities,
  DeviceStatus,
  RestoreOptions,
  SnapshotKind,
  StartedVm,
  StopResult,
  VmHandle,
  VmmAdapter,
  VmSpec,
  VmStatus,
} from "../adapter.ts";
import { bareVersion } from "../adapter.ts";
import { launchVmm, removeRuntimeFiles, terminate, vmmAlive } from "../process.ts";
import { createOverlayOn, flattenToRaw, materializeLayers } from "./chain_files.ts";
import { expand, type RuntimeDescriptor } from "./schema.ts";

export interface CliAdapterOptions {
  /** The binary, overriding the descriptor (`--runtime-path`). */
  binary?: string;
  qemuImg?: string;
  /** How long a start waits for the binary to fail at once. Default 500 ms. */
  startGraceMs?: number;
}

/**
 * The restore options a CLI runtime honours: `source` is the ramsnap blob
 * (section 8); `preload` decodes the memory image onto tmpfs (`/dev/shm`);
 * `mlock` locks it in RAM while ovm waits on the VM.
 */
export type RamRestoreOptions = RestoreOptions;

/** Files prepared for one VM: what the `disk` and `ramSnapshot` mappings receive. */
export interface PreparedFiles {
  disks: { path: string; format: "qcow2" | "raw"; readOnly: boolean }[];
  ramSnapshot?: { path: string; size: number };
}

export class CliRuntimeAdapter implements VmmAdapter {
  readonly name: string;
  readonly kind = "descriptor";
  /** None of its own: the binary's output goes to the console log. */
  readonly logName = "";
  readonly capabilities: AdapterCapabilities;
  readonly descriptor: RuntimeDescriptor;
  /** Snapshot kinds `restore` accepts (`ram` when the descriptor maps `ramSnapshot`). */
  readonly restoreKinds: SnapshotKind[];
  readonly #binary?: string;
  readonly #qemuImg: string;
  readonly #graceMs: number;

  constructor(descriptor: RuntimeDescriptor, options: CliAdapterOptions = {}) {
    this.descriptor = descriptor;
    this.name = descriptor.name;
    this.#binary = options.binary;
    this.#qemuImg = options.qemuImg ?? "qemu-img";
    this.#graceMs = options.startGraceMs ?? 500;
    this.restoreKinds = descriptor.args.ramSnapshot ? ["ram"] : [];
    this.capabilities = {
      devices: descriptor.args.devices.ivshmem ? ["ivshmem"] : [],
      // A CLI runtime cannot take snapshots; it may restore them from their ramsnap blob.
      snapshotKinds: [],
      restoreKinds: this.restoreKinds,
      restoreFrom: this.restoreKinds.length ? ["ramsnap"] : [],
      preparedRestore: false,
      diskFormats: ["qcow2", "raw"],
      network: descriptor.network,
      pause: false,
    };
  }

  /** The binary to run: `--runtime-path`, else the descriptor's path or name on PATH. */
  async binary(): Promise<string | undefined> {
    return await which(this.#binary ?? this.descriptor.binary);
  }

  async available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
    const wanted = this.#binary ?? this.descriptor.binary;
    const bin = await which(wanted);
    if (!bin) {
      return {
        ok: false,
        reason: `"${wanted}" is not installed (put it on PATH or pass --runtime-path)`,
      };
    }
    const r = await run(bin, this.descriptor.version.args, { allowFailure: true }).catch(() =>
      undefined
    );
    const m = r ? new RegExp(this.descriptor.version.pattern).exec(r.stdout + r.stderr) : null;
    return { ok: true, version: m?.[1] ?? "unknown" };
  }

  #check(spec: VmSpec): void {
    const mapped = this.descriptor.args.devices as Record<string, string[] | undefined>;
    for (const d of spec.devices) {
      if (!mapped[d.type]) {
        throw new ValidationError(
          `Device type "${d.type}" is not mapped by the ${this.name} runtime descriptor`,
          { hint: `mapped device types: ${Object.keys(mapped).join(", ") || "none"}` },
        );
      }
    }
    if (!this.descriptor.network.includes(spec.network.mode)) {
      throw new ValidationError(
        `Network mode "${spec.network.mode}" is not supported by ${this.name}`,
        { hint: `use --net ${this.descriptor.network.join(" or --net ")}` },
      );
    }
    if (spec.initrd && !this.descriptor.args.initrd) {
      throw new ValidationError(
        `The artifact has an initrd, but the ${this.name} runtime descriptor maps no initrd flag`,
      );
    }
  }

  async prepare(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#check(spec);
    await Deno.mkdir(spec.vmDir, { recursive: true, mode: 0o700 });
    await this.#prepareDisks(spec, options.signal);
    await Deno.writeFile(spec.consoleLog, new Uint8Array(), { append: true, mode: 0o640 });
    if (spec.runAs) {
      // The binary runs as the VM's own user with the VM directory as its
      // working directory and no path access elsewhere in $OVM_HOME: it gets
      // copies of the boot files and extra disks there, all owned by it.
      const staged = stagedNames(spec);
      await Deno.copyFile(spec.kernel, join(spec.vmDir, staged.kernel));
      if (spec.initrd) await Deno.copyFile(spec.initrd, join(spec.vmDir, staged.initrd!));
      for (const [i, d] of spec.extraDisks.entries()) {
        await Deno.copyFile(d.path, join(spec.vmDir, staged.extraDisks[i]));
      }
      const { uid, gid } = spec.runAs;
      await Deno.chown(spec.vmDir, uid, gid);
      for await (const e of Deno.readDir(spec.vmDir)) {
        await Deno.chown(join(spec.vmDir, e.name), uid, gid);
      }
      await Deno.chown(spec.consoleLog, uid, gid);
    }
  }

  /** Disk files live in `vmDir`; see {@linkcode diskFiles} for their order. */
  async #prepareDisks(spec: VmSpec, signal?: AbortSignal): Promise<void> {
    if (!spec.rootDisk) return;
    const top = spec.rootDisk.layers.at(-1);
    if (!top) throw new ValidationError("The root disk has no layers");
    const opts = { adapter: this.name, qemuImg: this.#qemuImg, signal };
    if (this.descriptor.disks === "flat-raw") {
      await flattenToRaw(spec.rootDisk.layers, join(spec.vmDir, "root.raw"), opts);
      return;
    }
    const layers = await materializeLayers(spec.rootDisk.layers, spec.vmDir, opts);
    await createOverlayOn(layers.at(-1)!, spec.rootDisk.overlay, {
      ...opts,
      virtualSize: top.virtualSize,
    });
  }

  /**
   * The disks in the order the binary gets them. Files in the VM directory
   * (its working directory) are named relative to it.
   */
  diskFiles(spec: VmSpec): PreparedFiles["disks"] {
    const out: PreparedFiles["disks"] = [];
    const inVm = (p: string) => vmRelative(spec, p);
    if (spec.rootDisk) {
      if (this.descriptor.disks === "flat-raw") {
        out.push({ path: "root.raw", format: "raw", readOnly: false });
      } else {
        for (const [i, l] of spec.rootDisk.layers.entries()) {
          out.push({ path: `layer-${i}.${l.format}`, format: l.format, readOnly: true });
        }
        out.push({ path: inVm(spec.rootDisk.overlay), format: "qcow2", readOnly: false });
      }
    }
    const staged = stagedNames(spec);
    for (const [i, d] of spec.extraDisks.entries()) {
      out.push({ path: staged.extraDisks[i], format: "raw", readOnly: d.readOnly });
    }
    return out;
  }

  /** The argv after the binary: pure, from the spec and the prepared files. */
  buildArgs(spec: VmSpec, files: PreparedFiles): string[] {
    this.#check(spec);
    const a = this.descriptor.args;
    const args = [...(a.prefix ?? [])];
    const staged = stagedNames(spec);
    args.push(...expand(a.kernel, { path: staged.kernel }));
    if (staged.initrd && a.initrd) args.push(...expand(a.initrd, { path: staged.initrd }));
    for (const d of files.disks) {
      args.push(
        ...expand(a.disk, { path: d.path, format: d.format, readonly: String(d.readOnly) }),
      );
    }
    if (files.ramSnapshot) {
      if (!a.ramSnapshot) {
        throw new VmmError(
          this.name,
          "restore",
          "the runtime descriptor maps no RAM snapshot flag",
        );
      }
      args.push(...expand(a.ramSnapshot, files.ramSnapshot));
    }
    if (a.memory) {
      args.push(...expand(a.memory, { bytes: spec.memoryBytes, mib: spec.memoryBytes >> 20 }));
    }
    if (a.cpus) args.push(...expand(a.cpus, { count: spec.cpus }));
    for (const d of spec.devices) {
      const tpl = (a.devices as Record<string, string[] | undefined>)[d.type]!;
      args.push(...expand(tpl, { name: d.name, size: d.size, mmio_addr: d.mmio_addr }));
    }
    if (spec.network.mode === "bridge" && a.nic) {
      for (const [index, nic] of (spec.network.nics ?? []).entries()) {
        args.push(...expand(a.nic, { tap: nic.tap, mac: nic.mac, index }));
      }
    }
    args.push(...expand(a.cmdline, { cmdline: spec.cmdline }));
    return args;
  }

  start(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<StartedVm> {
    return this.#launch(spec, { disks: this.diskFiles(spec) }, [], options.signal);
  }

  async #launch(
    spec: VmSpec,
    files: PreparedFiles,
    runtimeFiles: string[],
    signal?: AbortSignal,
    onExit?: () => void,
  ): Promise<StartedVm> {
    const bin = await this.binary();
    if (!bin) {
      throw new VmmError(
        this.name,
        "start",
        `"${this.#binary ?? this.descriptor.binary}" not found`,
        {
          hint: "put the binary on PATH, name it in the descriptor, or pass --runtime-path",
        },
      );
    }
    const args = this.buildArgs(spec, files);
    // A binary that refuses its flags exits at once, and its complaint lands
    // in the console log: catch that here, not as "the guest printed something".
    return await launchVmm(this.name, bin, {
      args,
      cwd: spec.vmDir,
      outputFile: spec.consoleLog,
      ready: { graceMs: this.#graceMs },
      runAs: spec.runAs,
      runtimeFiles,
      devices: spec.devices.map((d): DeviceStatus => ({
        type: d.type,
        name: d.name,
        size: d.size,
        mmioAddr: d.mmio_addr,
        guestLocation: `${this.name} --addr ${d.mmio_addr}`,
      })),
      onExit,
      signal,
    });
  }

  async status(handle: VmHandle): Promise<VmStatus> {
    return (await vmmAlive(handle))
      ? { state: "running", detail: "process running" }
      : { state: "stopped", detail: "no process" };
  }

  guestActive(_handle: VmHandle): Promise<boolean> {
    // A CLI runtime has no control channel to ask; the console is the only sign.
    return Promise.resolve(false);
  }

  pause(_handle: VmHandle): Promise<void> {
    return Promise.reject(new VmmError(this.name, "pause", "this runtime cannot pause a VM"));
  }

  resume(_handle: VmHandle): Promise<void> {
    return Promise.reject(new VmmError(this.name, "resume", "this runtime cannot resume a VM"));
  }

  async stop(
    handle: VmHandle,
    options: { timeoutMs?: number; force?: boolean } = {},
  ): Promise<StopResult> {
    try {
      if (!(await vmmAlive(handle))) return { how: "already-stopped" };
      const how = await terminate(this.name, handle, {
        signal: options.force ? "SIGKILL" : this.descriptor.stop.signal,
        graceMs: options.force ? 0 : options.timeoutMs ?? this.descriptor.stop.timeoutMs,
      });
      return { how: how === "signal" && !options.force ? "quit" : "killed" };
    } finally {
      await removeRuntimeFiles(handle);
    }
  }

  /** A descriptor runtime restores the ramsnap blob as it is; versions must match exactly. */
  restoresFrom(recorded: string, running: string): boolean {
    return bareVersion(recorded) === bareVersion(running);
  }

  snapshot(_handle: VmHandle, options: { kind: SnapshotKind }): Promise<never> {
    return Promise.reject(
      new VmmError(this.name, "snapshot", `a CLI runtime cannot take "${options.kind}" snapshots`),
    );
  }

  /**
   * Starts the VM from a ramsnap blob: the memory section is decoded first
   * (onto `/dev/shm` when `preload`), locked in RAM when `mlock`, and handed
   * to the binary through the descriptor's `ramSnapshot` mapping.
   */
  async restore(spec: VmSpec, options: RestoreOptions): Promise<StartedVm> {
    if (options.kind !== "ram" || !this.descriptor.args.ramSnapshot) {
      throw new VmmError(this.name, "restore", `"${options.kind}" snapshots are not mapped`);
    }
    const st = await Deno.stat(options.source).catch((e) => {
      throw new VmmError(this.name, "restore", `no snapshot at "${options.source}"`, { cause: e });
    });
    if (st.isDirectory) {
      throw new VmmError(
        this.name,
        "restore",
        `"${options.source}" is a decoded template; a descriptor runtime restores from the ramsnap blob`,
        { hint: "restore the artifact's ramSnapshot blob (capabilities.restoreFrom: ramsnap)" },
      );
    }
    const memory = options.preload ? `/dev/shm/ovm-${spec.id}-ram` : join(spec.vmDir, "ram.mem");
    const deviceState = join(spec.vmDir, "device-state");
    let header;
    try {
      header = await decodeRamsnap(options.source, { memory, "device-state": deviceState }, {
        limits: { memory: spec.memoryBytes },
        signal: options.signal,
      });
    } catch (e) {
      throw new VmmError(this.name, "restore", "decoding the RAM snapshot failed", { cause: e });
    }
    const size = header.sections.find((s) => s.name === "memory")?.size ?? 0;
    if (spec.runAs) {
      await Deno.chown(memory, spec.runAs.uid, spec.runAs.gid);
      await Deno.chown(deviceState, spec.runAs.uid, spec.runAs.gid);
    }
    let lock: Disposable | undefined;
    if (options.mlock) {
      try {
        lock = lockFileInMemory(memory, size);
      } catch (e) {
        await Deno.remove(memory).catch(() => {});
        await Deno.remove(deviceState).catch(() => {});
        throw new VmmError(this.name, "restore", "locking the RAM snapshot in memory failed", {
          cause: e,
        });
      }
    }
    try {
      return await this.#launch(
        spec,
        { disks: this.diskFiles(spec), ramSnapshot: { path: vmRelative(spec, memory), size } },
        [memory, deviceState],
        options.signal,
        () => lock?.[Symbol.dispose](),
      );
    } catch (e) {
      lock?.[Symbol.dispose]();
      await Deno.remove(memory).catch(() => {});
      await Deno.remove(deviceState).catch(() => {});
      throw e;
    }
  }
}

/** A path inside the VM directory relative to it (the binary's working directory); others as is. */
function vmRelative(spec: VmSpec, path: string): string {
  const r = relative(spec.vmDir, path);
  return r.startsWith("..") || r.startsWith("/") ? path : r;
}

/**
 * What the binary calls the boot files and extra disks: copies in the VM
 * directory when it runs as the VM's own user (see `prepare`), else the
 * files themselves.
 */
function stagedNames(spec: VmSpec): { kernel: string; initrd?: string; extraDisks: string[] } {
  if (!spec.runAs) {
    return {
      kernel: spec.kernel,
      initrd: spec.initrd,
      extraDisks: spec.extraDisks.map((d) => vmRelative(spec, d.path)),
    };
  }
  return {
    kernel: "kernel",
    initrd: spec.initrd ? "initrd" : undefined,
    extraDisks: spec.extraDisks.map((_, i) => `extra-${i}.raw`),
  };
}
