/**
 * @module
 * The Firecracker backend: `firecracker --api-sock <path>` configured through
 * its REST API (`PUT /boot-source`, `/machine-config`, `/serial`,
 * `/drives/{id}`, `/actions` InstanceStart). Firecracker takes raw images
 * only, so the disk chain is flattened into one sparse raw file per
 * instance (`qemu-img convert -O raw`): a copy, not the copy-free chain the
 * other backends use. Snapshots pause the VM (`PATCH /vm`) and use
 * `PUT /snapshot/create`; restores use `PUT /snapshot/load` with the File
 * memory backend on the (preloaded) memory template.
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
import { flattenToRaw } from "../descriptor/chain_files.ts";
import { HttpUnixClient } from "../http_unix.ts";
import { launchVmm, probeVersion, terminate, vmmAlive, waitGone } from "../process.ts";

export const FC_SOCKET_NAME = "firecracker.sock";
export const FC_LOG_NAME = "firecracker.log";
export const FC_ROOT_NAME = "root.raw";
const ADAPTER = "firecracker";

export interface FirecrackerOptions {
  /** Default `$OVM_FIRECRACKER` or `firecracker` on PATH. */
  binary?: string;
  qemuImg?: string;
}

/** One API call of the boot sequence. */
export interface FcCall {
  method: "PUT" | "PATCH";
  path: string;
  body: Record<string, unknown>;
}

/** The calls that configure and start a VM, in order (pure; checked by the contract test). */
export function bootCalls(spec: VmSpec): FcCall[] {
  const calls: FcCall[] = [
    {
      method: "PUT",
      path: "/boot-source",
      body: {
        kernel_image_path: spec.kernel,
        ...(spec.initrd ? { initrd_path: spec.initrd } : {}),
        boot_args: spec.cmdline,
      },
    },
    {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: spec.cpus, mem_size_mib: Math.ceil(spec.memoryBytes / (1 << 20)) },
    },
    { method: "PUT", path: "/serial", body: { serial_out_path: spec.consoleLog } },
  ];
  const drives: { id: string; path: string; ro: boolean }[] = [];
  if (spec.rootDisk) drives.push({ id: "root", path: join(spec.vmDir, FC_ROOT_NAME), ro: false });
  for (const [i, d] of spec.extraDisks.entries()) {
    drives.push({ id: `extra${i}`, path: d.path, ro: d.readOnly });
  }
  for (const d of drives) {
    calls.push({
      method: "PUT",
      path: `/drives/${d.id}`,
      // ovms-init mounts the root itself: no root= on the kernel command line.
      body: { drive_id: d.id, path_on_host: d.path, is_root_device: false, is_read_only: d.ro },
    });
  }
  for (const [i, nic] of (spec.network.nics ?? []).entries()) {
    calls.push({
      method: "PUT",
      path: `/network-interfaces/eth${i}`,
      body: { iface_id: `eth${i}`, host_dev_name: nic.tap, guest_mac: nic.mac },
    });
  }
  calls.push({ method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } });
  return calls;
}

/** True for a Linux bzImage (Firecracker on x86_64 boots an uncompressed ELF vmlinux). */
async function isBzImage(path: string): Promise<boolean> {
  try {
    using f = await Deno.open(path, { read: true });
    const buf = new Uint8Array(0x206);
    let got = 0;
    while (got < buf.byteLength) {
      const n = await f.read(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return got >= 0x206 && new DataView(buf.buffer).getUint32(0x202, true) === 0x53726448;
  } catch {
    return false;
  }
}

export class FirecrackerAdapter implements VmmAdapter {
  readonly name = ADAPTER;
  readonly kind = "adapter";
  readonly logName = FC_LOG_NAME;
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

  constructor(options: FirecrackerOptions = {}) {
    this.#binary = options.binary ?? Deno.env.get("OVM_FIRECRACKER") ?? "firecracker";
    this.#qemuImg = options.qemuImg ?? "qemu-img";
  }

  async available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
    const bin = await which(this.#binary);
    if (!bin) return { ok: false, reason: `"${this.#binary}" is not installed` };
    return { ok: true, version: await probeVersion(bin) };
  }

  async #check(spec: VmSpec): Promise<void> {
    for (const d of spec.devices) {
      throw new ValidationError(`Device type "${d.type}" is not supported by firecracker`, {
        hint: `device "${d.name}" needs ivshmem, which Firecracker lacks: use --runtime qemu`,
      });
    }
    if (!this.capabilities.network.includes(spec.network.mode)) {
      throw new ValidationError(
        `Network mode "${spec.network.mode}" is not supported by firecracker`,
        { hint: "use --net bridge or --net none (Firecracker networks through TAP devices only)" },
      );
    }
    if (await isBzImage(spec.kernel)) {
      throw new ValidationError(
        `The kernel "${spec.kernel}" is a bzImage; Firecracker boots an uncompressed vmlinux only`,
        { hint: "build the artifact with an ELF vmlinux kernel, or use --runtime qemu" },
      );
    }
  }

  async prepare(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#check(spec);
    await Deno.mkdir(spec.vmDir, { recursive: true, mode: 0o700 });
    if (spec.rootDisk) {
      // Raw only: a sparse per-instance copy of the whole chain.
      await flattenToRaw(spec.rootDisk.layers, join(spec.vmDir, FC_ROOT_NAME), {
        adapter: ADAPTER,
        qemuImg: this.#qemuImg,
        signal: options.signal,
      });
    }
    await Deno.writeFile(spec.consoleLog, new Uint8Array(), { append: true, mode: 0o640 });
  }

  async #launch(spec: VmSpec, logFile: string, signal?: AbortSignal) {
    const bin = (await which(this.#binary)) ?? this.#binary;
    const socket = join(spec.vmDir, FC_SOCKET_NAME);
    return await launchVmm(ADAPTER, bin, {
      args: ["--api-sock", socket],
      ready: { socket, connect: true },
      cwd: spec.vmDir,
      outputFile: logFile,
      signal,
    });
  }

  async start(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<StartedVm> {
    await this.#check(spec);
    const vm = await this.#launch(spec, join(spec.vmDir, FC_LOG_NAME), options.signal);
    try {
      using api = client(vm.handle);
      for (const c of bootCalls(spec)) {
        await api.request(c.method, c.path, { body: c.body, step: `${c.method} ${c.path}` });
      }
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
      const info = (await api.request("GET", "/", { step: "GET /", timeoutMs: 3000 })).body as {
        state?: string;
      };
      const state = info?.state === "Running"
        ? "running"
        : info?.state === "Paused"
        ? "paused"
        : "starting";
      return { state, detail: info?.state };
    } catch (e) {
      return { state: "error", detail: "unreachable", reason: (e as Error).message };
    }
  }

  guestActive(_handle: VmHandle): Promise<boolean> {
    return Promise.resolve(false);
  }

  async pause(handle: VmHandle): Promise<void> {
    using api = client(handle);
    await api.request("PATCH", "/vm", { body: { state: "Paused" }, step: "PATCH /vm Paused" });
  }

  async resume(handle: VmHandle): Promise<void> {
    using api = client(handle);
    await api.request("PATCH", "/vm", { body: { state: "Resumed" }, step: "PATCH /vm Resumed" });
  }

  async stop(
    handle: VmHandle,
    options: { timeoutMs?: number; force?: boolean } = {},
  ): Promise<StopResult> {
    try {
      if (!(await vmmAlive(handle))) return { how: "already-stopped" };
      if (!options.force) {
        using api = client(handle);
        const info = await api.request("GET", "/", { step: "GET /", timeoutMs: 3000 })
          .catch(() => undefined);
        if ((info?.body as { state?: string })?.state === "Paused") {
          await api.request("PATCH", "/vm", { body: { state: "Resumed" }, step: "PATCH /vm" })
            .catch(() => {});
        }
        // Ctrl-Alt-Del reaches PID 1 as SIGINT: ovms-init stops the workload and powers off.
        await api.request("PUT", "/actions", {
          body: { action_type: "SendCtrlAltDel" },
          step: "PUT /actions SendCtrlAltDel",
        }).catch(() => {});
        if (await waitGone(handle, options.timeoutMs ?? 10_000)) return { how: "poweroff" };
      }
      // Firecracker has no shutdown call: a signal ends the VMM.
      await terminate(ADAPTER, handle);
      return { how: "killed" };
    } finally {
      await removeVmFiles(handle);
    }
  }

  /**
   * Pauses the VM and writes `dest/device-state` (the microVM state) and
   * `dest/memory`. The disk is the instance's flattened raw file, converted
   * to a self-contained qcow2 (zeros skipped): the whole disk, compact, and
   * a restore flattens it to raw again.
   */
  async snapshot(handle: VmHandle, options: SnapshotOptions): Promise<SnapshotFiles> {
    if (options.kind !== "ram") {
      throw new VmmError(ADAPTER, "snapshot", `"${options.kind}" snapshots are not supported`);
    }
    using api = client(handle);
    const version = await api.request("GET", "/version", { step: "GET /version" });
    const config = await api.request("GET", "/vm/config", { step: "GET /vm/config" });
    await api.request("PATCH", "/vm", { body: { state: "Paused" }, step: "PATCH /vm Paused" });
    await Deno.mkdir(options.dest, { recursive: true, mode: 0o700 });
    const deviceState = join(options.dest, "device-state");
    const memory = join(options.dest, "memory");
    await api.request("PUT", "/snapshot/create", {
      body: { snapshot_type: "Full", snapshot_path: deviceState, mem_file_path: memory },
      step: "PUT /snapshot/create",
      timeoutMs: 600_000,
      signal: options.signal,
    });
    const body = config.body as {
      "machine-config"?: { mem_size_mib?: number };
      "boot-source"?: { boot_args?: string };
    };
    const mib = body?.["machine-config"]?.mem_size_mib;
    const st = await Deno.stat(memory).catch((e) => {
      throw new VmmError(ADAPTER, "snapshot", `no memory file at "${memory}"`, { cause: e });
    });
    let disk: SnapshotFiles["disk"];
    if (options.overlay) {
      const copy = join(options.dest, "disk.qcow2");
      const raw = join(options.vmDir, FC_ROOT_NAME);
      await run(this.#qemuImg, ["convert", "-f", "raw", "-O", "qcow2", raw, copy], {
        signal: options.signal,
      });
      disk = { path: copy, whole: true };
    }
    return {
      memory,
      memoryBytes: mib ? mib * (1 << 20) : st.size,
      deviceState,
      vmmVersion: (version.body as { firecracker_version: string }).firecracker_version,
      machine: ADAPTER,
      cmdline: body?.["boot-source"]?.boot_args ?? "",
      ...(disk ? { disk } : {}),
    };
  }

  /** {@linkcode prepareRestore}, then the load resumes the guest. */
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
   * Starts Firecracker; `load` is `PUT /snapshot/load` with the File memory
   * backend on `spec.memory.path` (the preloaded template), the root drive
   * pointed at this instance's raw copy, then (unless kept paused) resumed.
   * The serial console of a restored Firecracker goes to its stdout, so
   * that is the console log here.
   */
  async prepareRestore(
    spec: VmSpec,
    options: RestoreOptions & { paused?: boolean },
  ): Promise<PreparedVm> {
    if (options.kind !== "ram") {
      throw new VmmError(ADAPTER, "restore", `"${options.kind}" snapshots are not supported`);
    }
    const memory = spec.memory;
    if (!memory) throw new VmmError(ADAPTER, "restore", "no memory template was given");
    await this.#check(spec);
    const vm = await this.#launch(spec, spec.consoleLog, options.signal);
    let version: string;
    try {
      using api = client(vm.handle);
      version = ((await api.request("GET", "/version", { step: "GET /version" })).body as {
        firecracker_version: string;
      }).firecracker_version;
    } catch (e) {
      await terminate(ADAPTER, vm.handle).catch(() => {});
      throw e;
    }
    const resume = async () => {
      using api = client(vm.handle);
      await api.request("PATCH", "/vm", { body: { state: "Resumed" }, step: "PATCH /vm Resumed" });
    };
    return {
      vm,
      version,
      async load(o = {}) {
        using api = client(vm.handle);
        await api.request("PUT", "/snapshot/load", {
          body: {
            snapshot_path: join(options.source, "device-state"),
            mem_backend: { backend_type: "File", backend_path: memory.path },
            resume_vm: false,
            // A restored VM uses this instance's TAPs, not the snapshotted VM's.
            ...(spec.network.nics?.length
              ? {
                network_overrides: spec.network.nics.map((nic, i) => ({
                  iface_id: `eth${i}`,
                  host_dev_name: nic.tap,
                })),
              }
              : {}),
          },
          step: "PUT /snapshot/load",
          timeoutMs: o.timeoutMs ?? 600_000,
          signal: options.signal,
        });
        if (spec.rootDisk) {
          await api.request("PATCH", "/drives/root", {
            body: { drive_id: "root", path_on_host: join(spec.vmDir, FC_ROOT_NAME) },
            step: "PATCH /drives/root",
          });
        }
        if (o.resume ?? true) await resume();
      },
      resume,
      status: () => this.status(vm.handle),
      close() {},
    };
  }

  /** Firecracker loads only a snapshot of its own version. */
  restoresFrom(recorded: string, running: string): boolean {
    return bareVersion(recorded) === bareVersion(running);
  }
}

function client(handle: VmHandle): HttpUnixClient {
  return new HttpUnixClient(handle.controlSocket, { adapter: ADAPTER });
}
