/**
 * @module
 * The Cloud Hypervisor backend: `cloud-hypervisor --api-socket <path>` driven
 * through its REST API (`/api/v1/vm.create`, `vm.boot`, `vm.info`,
 * `vm.pause`/`vm.resume`, `vm.snapshot`/`vm.restore`, `vm.shutdown`,
 * `vmm.shutdown`). Cloud Hypervisor cannot read an image at an offset inside
 * a tar, so the layers are copied into the VM directory and chained by
 * backing names ovm writes; `backing_files` is enabled for that chain only.
 */
import { join } from "node:path";
import { ValidationError, VmmError } from "../../errors.ts";
import { run, which } from "../../process/mod.ts";
import type {
  AdapterCapabilities,
  PreparedVm,
  RestoreOptions,
  SnapshotFiles,
  SnapshotOptions,
  StartedVm,
  StopResult,
  VmHandle,
  VmmAdapter,
  VmSpec,
  VmStatus,
} from "../adapter.ts";
import { bareVersion, removeVmFiles } from "../adapter.ts";
import { createOverlayOn, materializeLayers } from "../descriptor/chain_files.ts";
import { HttpUnixClient } from "../http_unix.ts";
import { launchVmm, probeVersion, terminate, vmmAlive, waitGone } from "../process.ts";

export const CH_SOCKET_NAME = "ch.sock";
export const CH_LOG_NAME = "cloud-hypervisor.log";
const ADAPTER = "cloud-hypervisor";

export interface CloudHypervisorOptions {
  /** Default `$OVM_CLOUD_HYPERVISOR` or `cloud-hypervisor` on PATH. */
  binary?: string;
  qemuImg?: string;
}

/** The `vm.create` body for a spec (pure; the contract test checks it against the OpenAPI file). */
export function vmConfig(spec: VmSpec): Record<string, unknown> {
  const disks: Record<string, unknown>[] = [];
  if (spec.rootDisk) {
    disks.push({
      id: "root",
      path: spec.rootDisk.overlay,
      readonly: false,
      image_type: "Qcow2",
      // The overlay's backing chain is the layer copies ovm wrote next to it.
      backing_files: true,
    });
  }
  for (const [i, d] of spec.extraDisks.entries()) {
    disks.push({ id: `extra${i}`, path: d.path, readonly: d.readOnly, image_type: "Raw" });
  }
  const net = (spec.network.nics ?? []).map((nic, i) => ({
    id: `net${i}`,
    tap: nic.tap,
    mac: nic.mac,
  }));
  return {
    payload: {
      kernel: spec.kernel,
      ...(spec.initrd ? { initramfs: spec.initrd } : {}),
      cmdline: spec.cmdline,
    },
    cpus: { boot_vcpus: spec.cpus, max_vcpus: spec.cpus },
    memory: { size: spec.memoryBytes, shared: true },
    ...(disks.length ? { disks } : {}),
    ...(net.length ? { net } : {}),
    serial: { mode: "File", file: spec.consoleLog },
    console: { mode: "Off" },
  };
}

export class CloudHypervisorAdapter implements VmmAdapter {
  readonly name = ADAPTER;
  readonly kind = "adapter";
  readonly logName = CH_LOG_NAME;
  readonly capabilities: AdapterCapabilities = {
    devices: [],
    snapshotKinds: ["ram"],
    restoreKinds: ["ram"],
    restoreFrom: ["template"],
    preparedRestore: true,
    diskFormats: ["qcow2", "raw"],
    network: ["none", "bridge"],
    pause: true,
  };
  readonly #binary: string;
  readonly #qemuImg: string;

  constructor(options: CloudHypervisorOptions = {}) {
    this.#binary = options.binary ?? Deno.env.get("OVM_CLOUD_HYPERVISOR") ?? "cloud-hypervisor";
    this.#qemuImg = options.qemuImg ?? "qemu-img";
  }

  async available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
    const bin = await which(this.#binary);
    if (!bin) return { ok: false, reason: `"${this.#binary}" is not installed` };
    return { ok: true, version: await probeVersion(bin) };
  }

  #check(spec: VmSpec): void {
    for (const d of spec.devices) {
      throw new ValidationError(`Device type "${d.type}" is not supported by cloud-hypervisor`, {
        hint: `device "${d.name}" needs ivshmem, which Cloud Hypervisor lacks: use --runtime qemu`,
      });
    }
    if (!this.capabilities.network.includes(spec.network.mode)) {
      throw new ValidationError(
        `Network mode "${spec.network.mode}" is not supported by cloud-hypervisor`,
        {
          hint:
            "use --net bridge or --net none (Cloud Hypervisor networks through TAP devices only)",
        },
      );
    }
  }

  async prepare(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#check(spec);
    await Deno.mkdir(spec.vmDir, { recursive: true, mode: 0o700 });
    if (spec.rootDisk) {
      const top = spec.rootDisk.layers.at(-1);
      if (!top) throw new ValidationError("The root disk has no layers");
      const opts = { adapter: ADAPTER, qemuImg: this.#qemuImg, signal: options.signal };
      const layers = await materializeLayers(spec.rootDisk.layers, spec.vmDir, opts);
      await createOverlayOn(layers.at(-1)!, spec.rootDisk.overlay, {
        ...opts,
        virtualSize: top.virtualSize,
      });
    }
    await Deno.writeFile(spec.consoleLog, new Uint8Array(), { append: true, mode: 0o640 });
  }

  async #launch(spec: VmSpec, signal?: AbortSignal) {
    const bin = (await which(this.#binary)) ?? this.#binary;
    const socket = join(spec.vmDir, CH_SOCKET_NAME);
    return await launchVmm(ADAPTER, bin, {
      args: ["--api-socket", socket],
      ready: { socket, connect: true },
      cwd: spec.vmDir,
      outputFile: join(spec.vmDir, CH_LOG_NAME),
      signal,
    });
  }

  async start(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<StartedVm> {
    this.#check(spec);
    const vm = await this.#launch(spec, options.signal);
    try {
      using api = client(vm.handle);
      await api.request("PUT", "/vm.create", { body: vmConfig(spec), step: "vm.create" });
      await api.request("PUT", "/vm.boot", { step: "vm.boot" });
    } catch (e) {
      await terminate(ADAPTER, vm.handle).catch(() => {});
      throw e;
    }
    return vm;
  }

  async status(handle: VmHandle): Promise<VmStatus> {
    if (!(await vmmAlive(handle))) return { state: "stopped", detail: "no process" };
    try {
      using api = client(handle);
      const info = (await api.request("GET", "/vm.info", { step: "vm.info", timeoutMs: 3000 }))
        .body as { state?: string };
      const s = info?.state;
      const state = s === "Running"
        ? "running"
        : s === "Paused"
        ? "paused"
        : s === "Shutdown"
        ? "stopping"
        : "starting";
      return { state, detail: s };
    } catch (e) {
      return { state: "error", detail: "unreachable", reason: (e as Error).message };
    }
  }

  guestActive(_handle: VmHandle): Promise<boolean> {
    return Promise.resolve(false);
  }

  async pause(handle: VmHandle): Promise<void> {
    using api = client(handle);
    await api.request("PUT", "/vm.pause", { step: "vm.pause" });
  }

  async resume(handle: VmHandle): Promise<void> {
    using api = client(handle);
    await api.request("PUT", "/vm.resume", { step: "vm.resume" });
  }

  async stop(
    handle: VmHandle,
    options: { timeoutMs?: number; force?: boolean } = {},
  ): Promise<StopResult> {
    try {
      if (!(await vmmAlive(handle))) return { how: "already-stopped" };
      using api = client(handle);
      if (!options.force) {
        const info = await api.request("GET", "/vm.info", { step: "vm.info", timeoutMs: 3000 })
          .catch(() => undefined);
        if ((info?.body as { state?: string })?.state === "Paused") {
          await api.request("PUT", "/vm.resume", { step: "vm.resume" }).catch(() => {});
        }
        // ACPI power button: ovms-init and systemd power off on it.
        await api.request("PUT", "/vm.power-button", { step: "vm.power-button" }).catch(() => {});
        if (await waitGone(handle, options.timeoutMs ?? 10_000)) return { how: "poweroff" };
      }
      await api.request("PUT", "/vm.shutdown", { step: "vm.shutdown", timeoutMs: 3000 })
        .catch(() => {});
      await api.request("PUT", "/vmm.shutdown", { step: "vmm.shutdown", timeoutMs: 3000 })
        .catch(() => {});
      if (await waitGone(handle, 3000)) return { how: "quit" };
      await terminate(ADAPTER, handle);
      return { how: "killed" };
    } finally {
      await removeVmFiles(handle);
    }
  }

  /**
   * Pauses the VM and snapshots it into `dest/ch/` (Cloud Hypervisor writes
   * `config.json`, `state.json` and `memory-ranges`). The guest RAM section
   * is `memory-ranges`; the device-state section is `dest/device-state`, a
   * JSON object holding the two JSON files by name. The overlay is copied
   * with its backing name (a layer copy in the VM directory) removed: the
   * copy, never the live overlay, becomes a plain diff layer.
   */
  async snapshot(handle: VmHandle, options: SnapshotOptions): Promise<SnapshotFiles> {
    if (options.kind !== "ram") {
      throw new VmmError(ADAPTER, "snapshot", `"${options.kind}" snapshots are not supported`);
    }
    using api = client(handle);
    const ping = await api.request("GET", "/vmm.ping", { step: "vmm.ping" });
    const info = await api.request("GET", "/vm.info", { step: "vm.info" });
    const vmInfo = info.body as {
      state: string;
      config: { memory?: { size?: number }; payload?: { cmdline?: string } };
    };
    if (vmInfo.state !== "Paused") await api.request("PUT", "/vm.pause", { step: "vm.pause" });
    const dir = join(options.dest, "ch");
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await api.request("PUT", "/vm.snapshot", {
      body: { destination_url: `file://${dir}` },
      step: "vm.snapshot",
      timeoutMs: 600_000,
      signal: options.signal,
    });
    const files: Record<string, string> = {};
    for (const n of ["config.json", "state.json"]) {
      files[n] = await Deno.readTextFile(join(dir, n)).catch((e) => {
        throw new VmmError(ADAPTER, "vm.snapshot", `the snapshot has no ${n}`, { cause: e });
      });
    }
    const deviceState = join(options.dest, "device-state");
    await Deno.writeTextFile(deviceState, JSON.stringify({ format: "cloud-hypervisor", files }));
    const memory = join(dir, "memory-ranges");
    const st = await Deno.stat(memory).catch((e) => {
      throw new VmmError(ADAPTER, "vm.snapshot", "the snapshot has no memory-ranges", { cause: e });
    });
    let disk: SnapshotFiles["disk"];
    if (options.overlay) {
      const copy = join(options.dest, "disk.qcow2");
      await Deno.copyFile(options.overlay, copy);
      await run(this.#qemuImg, ["rebase", "-u", "-b", "", copy], { signal: options.signal });
      disk = { path: copy, whole: false };
    }
    return {
      memory,
      memoryBytes: vmInfo.config.memory?.size ?? st.size,
      deviceState,
      vmmVersion: (ping.body as { version: string }).version,
      machine: ADAPTER,
      cmdline: vmInfo.config.payload?.cmdline ?? "",
      ...(disk ? { disk } : {}),
    };
  }

  /**
   * Restores from `source/device-state` and the memory template
   * (`spec.memory.path`): {@linkcode prepareRestore}, then the load resumes.
   */
  async restore(spec: VmSpec, options: RestoreOptions): Promise<StartedVm> {
    const prepared = await this.prepareRestore(spec, options);
    try {
      await prepared.load();
      return prepared.vm;
    } catch (e) {
      await terminate(ADAPTER, prepared.vm.handle).catch(() => {});
      throw e;
    } finally {
      prepared.close();
    }
  }

  /**
   * The snapshot directory is rebuilt in the VM directory with this
   * instance's paths written into `config.json`, and the VMM started; `load`
   * is `vm.restore` (resuming, or kept paused for a later `vm.resume`).
   */
  async prepareRestore(
    spec: VmSpec,
    options: RestoreOptions & { paused?: boolean },
  ): Promise<PreparedVm> {
    if (options.kind !== "ram") {
      throw new VmmError(ADAPTER, "restore", `"${options.kind}" snapshots are not supported`);
    }
    if (!spec.memory) throw new VmmError(ADAPTER, "restore", "no memory template was given");
    this.#check(spec);
    let saved: { format?: string; files?: Record<string, string> };
    try {
      saved = JSON.parse(await Deno.readTextFile(join(options.source, "device-state")));
    } catch (e) {
      throw new VmmError(ADAPTER, "restore", "the snapshot's device state is unreadable", {
        cause: e,
      });
    }
    if (saved.format !== "cloud-hypervisor" || !saved.files?.["config.json"]) {
      throw new VmmError(
        ADAPTER,
        "restore",
        "the device state was not written by cloud-hypervisor",
      );
    }
    const dir = join(spec.vmDir, "ch-restore");
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    const config = JSON.parse(saved.files["config.json"]);
    const fresh = vmConfig(spec);
    // Same machine, this instance's files.
    config.payload = { ...config.payload, ...(fresh.payload as object) };
    config.disks = fresh.disks ?? null;
    // This instance's TAPs (the guest keeps its MAC until ovms-init changes it).
    if (Array.isArray(config.net) && Array.isArray(fresh.net)) {
      const nets = fresh.net as { id: string; tap: string }[];
      config.net = config.net.map((n: { id?: string }, i: number) => ({
        ...n,
        tap: (nets.find((f) => f.id === n.id) ?? nets[i])?.tap,
      }));
    }
    config.serial = fresh.serial;
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(config));
    await Deno.writeTextFile(join(dir, "state.json"), saved.files["state.json"] ?? "{}");
    await Deno.symlink(spec.memory.path, join(dir, "memory-ranges"));
    const vm = await this.#launch(spec, options.signal);
    let version: string;
    try {
      using api = client(vm.handle);
      version = ((await api.request("GET", "/vmm.ping", { step: "vmm.ping" })).body as {
        version: string;
      }).version;
    } catch (e) {
      await terminate(ADAPTER, vm.handle).catch(() => {});
      throw e;
    }
    const signal = options.signal;
    return {
      vm,
      version,
      async load(o = {}) {
        using api = client(vm.handle);
        await api.request("PUT", "/vm.restore", {
          body: { source_url: `file://${dir}`, resume: o.resume ?? true },
          step: "vm.restore",
          timeoutMs: o.timeoutMs ?? 600_000,
          signal,
        });
      },
      async resume() {
        using api = client(vm.handle);
        await api.request("PUT", "/vm.resume", { step: "vm.resume" });
      },
      status: () => this.status(vm.handle),
      close() {},
    };
  }

  /** Cloud Hypervisor loads only a snapshot of its own version. */
  restoresFrom(recorded: string, running: string): boolean {
    return bareVersion(recorded) === bareVersion(running);
  }
}

function client(handle: VmHandle): HttpUnixClient {
  return new HttpUnixClient(handle.controlSocket, { adapter: ADAPTER, basePath: "/api/v1" });
}
