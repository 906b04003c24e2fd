/**
 * @module
 * The QEMU backend of {@linkcode VmmAdapter}: direct kernel boot, the root disk
 * as a `-blockdev` chain over the layer blobs, ivshmem, user networking, QMP
 * control over a per-instance socket, and a seccomp sandbox. QEMU always runs
 * in its own session, so terminal signals reach ovm (which stops the VM
 * cleanly) and a detached VM outlives the ovm that started it.
 */
import { join } from "node:path";
import { ConflictError, ValidationError, VmmError } from "../../errors.ts";
import {
  processStartTime,
  run,
  signalPid,
  spawn,
  type SpawnOptions,
  which,
} from "../../process/mod.ts";
import { exists } from "../../util/fs.ts";
import type {
  AdapterCapabilities,
  SnapshotKind,
  StartedVm,
  StopResult,
  VmHandle,
  VmmAdapter,
  VmSpec,
  VmStatus,
} from "../adapter.ts";
import { buildQemuCommand, QMP_SOCKET_NAME } from "./cmdline.ts";
import { QmpClient } from "./qmp.ts";

export const QEMU_LOG_NAME = "qemu.log";

export interface QemuAdapterOptions {
  /** The emulator binary (default `$OVM_QEMU` or `qemu-system-x86_64`). */
  binary?: string;
  qemuImg?: string;
}

export class QemuAdapter implements VmmAdapter {
  readonly name = "qemu";
  readonly capabilities: AdapterCapabilities = {
    devices: ["ivshmem"],
    snapshotKinds: [],
    diskFormats: ["qcow2", "raw"],
    network: ["none", "user"],
    pause: true,
  };
  readonly #binary: string;
  readonly #qemuImg: string;

  constructor(options: QemuAdapterOptions = {}) {
    this.#binary = options.binary ?? Deno.env.get("OVM_QEMU") ?? "qemu-system-x86_64";
    this.#qemuImg = options.qemuImg ?? "qemu-img";
  }

  async available(): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
    // Only a PATH lookup: this runs on every `ovm run`, and spawning
    // `qemu --version` there costs tens of ms. The QMP greeting has the version.
    const bin = await which(this.#binary);
    if (!bin) return { ok: false, reason: `"${this.#binary}" is not installed` };
    if (!(await which(this.#qemuImg))) {
      return { ok: false, reason: `"${this.#qemuImg}" is not installed` };
    }
    return { ok: true, version: "unknown" };
  }

  async prepare(spec: VmSpec): Promise<void> {
    for (const d of spec.devices) {
      if (!this.capabilities.devices.includes(d.type)) {
        throw new ValidationError(`Device type "${d.type}" is not supported by qemu`, {
          hint: `supported device types: ${this.capabilities.devices.join(", ")}`,
        });
      }
    }
    if (!this.capabilities.network.includes(spec.network.mode)) {
      throw new ValidationError(`Network mode "${spec.network.mode}" is not supported by qemu`);
    }
    const cmd = buildQemuCommand(spec);
    await Deno.mkdir(spec.vmDir, { recursive: true, mode: 0o700 });
    // Shared-memory files are created here, exclusively (no following a
    // planted symlink in the world-writable /dev/shm), mode 0600 and owned by
    // the VMM's user: readable by the host side, not by other local users.
    const created: string[] = [];
    try {
      for (const f of cmd.runtimeFiles) {
        try {
          (await Deno.open(f, { write: true, createNew: true, mode: 0o600 })).close();
        } catch (e) {
          if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
          throw new ConflictError(`Shared-memory file "${f}" already exists`, {
            cause: e,
            hint: "another VM with the same instance id and device name runs, or a stale " +
              "file is left over: remove it if no VM uses it",
          });
        }
        created.push(f);
        if (spec.runAs) await Deno.chown(f, spec.runAs.uid, spec.runAs.gid);
      }
      await this.#prepareFiles(spec);
    } catch (e) {
      for (const f of created) await Deno.remove(f).catch(() => {});
      throw e;
    }
  }

  async #prepareFiles(spec: VmSpec): Promise<void> {
    if (spec.rootDisk) {
      const top = spec.rootDisk.layers.at(-1);
      if (!top) throw new ValidationError("The root disk has no layers");
      // No backing name in the overlay itself: its backing is set on the
      // command line to the top layer's node, so the chain is always ovm's.
      await run(this.#qemuImg, [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        `size=${top.virtualSize}`,
        spec.rootDisk.overlay,
      ]).catch((e) => {
        throw new VmmError("qemu", "prepare", "creating the instance overlay failed", {
          cause: e,
        });
      });
    }
    await Deno.writeFile(spec.consoleLog, new Uint8Array(), { append: true, mode: 0o640 });
    if (spec.runAs) {
      const { uid, gid } = spec.runAs;
      await Deno.chown(spec.vmDir, uid, gid);
      await Deno.chown(spec.consoleLog, uid, gid);
      if (spec.rootDisk) await Deno.chown(spec.rootDisk.overlay, uid, gid);
    }
  }

  async start(spec: VmSpec, options: { signal?: AbortSignal } = {}): Promise<StartedVm> {
    const cmd = buildQemuCommand(spec);
    const bin = (await which(this.#binary)) ?? this.#binary;
    const qemuLog = join(spec.vmDir, QEMU_LOG_NAME);
    const spawnOptions: SpawnOptions = {
      cwd: spec.vmDir,
      passFiles: cmd.passFiles,
      dropTo: spec.runAs,
      newSession: true,
      outputFile: qemuLog,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    };
    const proc = spawn(bin, cmd.args, spawnOptions);
    const startTime = await processStartTime(proc.pid);
    const handle: VmHandle = {
      adapter: this.name,
      pid: proc.pid,
      pidStartTime: startTime,
      controlSocket: join(spec.vmDir, cmd.qmpSocketName),
      runtimeFiles: cmd.runtimeFiles,
      devices: cmd.devices,
      argv: [bin, ...cmd.args],
    };
    const exited = proc.status.then((s) => ({
      code: s.code,
      ...(s.signal ? { signal: s.signal } : {}),
    }));
    // QEMU creates the QMP socket during startup; failing before that means a
    // bad command line or an unopenable file, which qemu.log explains.
    const deadline = Date.now() + 15_000;
    while (true) {
      if (proc.exited) {
        const tail = await tailFile(qemuLog, 20);
        await removeFiles(handle);
        throw new VmmError("qemu", "start", `qemu exited with code ${proc.exited.code}`, {
          hint: tail ? `qemu said:\n${tail}` : undefined,
        });
      }
      if (await exists(handle.controlSocket)) break;
      if (options.signal?.aborted || Date.now() > deadline) {
        await proc.stop(1000);
        await removeFiles(handle);
        if (options.signal?.aborted) throw options.signal.reason;
        throw new VmmError("qemu", "start", "qemu did not open its QMP socket within 15 s");
      }
      await sleep(5);
    }
    return {
      handle,
      exited,
      release: () => {
        proc.child.unref();
      },
    };
  }

  /** True while the VM's process (the same one, not a recycled pid) runs. */
  async #alive(handle: VmHandle): Promise<boolean> {
    const st = await processStartTime(handle.pid);
    if (st === undefined) return false;
    return handle.pidStartTime === undefined || st === handle.pidStartTime;
  }

  async #connect(handle: VmHandle, timeoutMs = 5000): Promise<QmpClient> {
    return await QmpClient.connect(handle.controlSocket, { timeoutMs, cwdPid: handle.pid });
  }

  async status(handle: VmHandle): Promise<VmStatus> {
    if (!(await this.#alive(handle))) return { state: "stopped", detail: "no process" };
    try {
      await using qmp = await this.#connect(handle, 3000);
      const s = await qmp.execute<{ status: string; running: boolean }>("query-status");
      const state = s.running
        ? "running"
        : s.status === "shutdown"
        ? "stopping"
        : s.status === "internal-error" || s.status === "guest-panicked"
        ? "error"
        : "paused";
      return { state, detail: s.status };
    } catch (e) {
      return {
        state: "error",
        detail: "unreachable",
        reason: `the process runs but QMP does not answer: ${(e as Error).message}`,
      };
    }
  }

  async guestActive(handle: VmHandle): Promise<boolean> {
    try {
      await using qmp = await this.#connect(handle, 2000);
      const stats = await qmp.execute<{ stats?: { rd_operations?: number } }[]>(
        "query-blockstats",
        { "query-nodes": false },
        { timeoutMs: 2000 },
      );
      // The firmware reads one sector (the boot record) of each disk; a second
      // read on any disk means the guest kernel is probing or mounting it.
      return stats.some((s) => (s.stats?.rd_operations ?? 0) >= 2);
    } catch {
      return false;
    }
  }

  async pause(handle: VmHandle): Promise<void> {
    await using qmp = await this.#connect(handle);
    await qmp.execute("stop");
  }

  async resume(handle: VmHandle): Promise<void> {
    await using qmp = await this.#connect(handle);
    await qmp.execute("cont");
  }

  async stop(
    handle: VmHandle,
    options: { timeoutMs?: number; force?: boolean } = {},
  ): Promise<StopResult> {
    if (!(await this.#alive(handle))) {
      await removeFiles(handle);
      return { how: "already-stopped" };
    }
    let how: StopResult["how"] = "poweroff";
    let qmp: QmpClient | undefined;
    try {
      qmp = await this.#connect(handle, 3000).catch(() => undefined);
      if (qmp && !options.force) {
        // A paused guest cannot react to the power button: let it run first.
        const st = await qmp.execute<{ running: boolean; status: string }>("query-status")
          .catch(() => undefined);
        if (st && !st.running && st.status === "paused") await qmp.execute("cont").catch(() => {});
        // Ctrl-Alt-Del reaches PID 1 as SIGINT (ovms-init stops the workload
        // and powers off); the ACPI power button serves images with acpid/systemd.
        await qmp.execute("send-key", {
          keys: ["ctrl", "alt", "delete"].map((k) => ({ type: "qcode", data: k })),
        }).catch(() => {});
        await qmp.execute("system_powerdown").catch(() => {});
        if (await this.#waitGone(handle, options.timeoutMs ?? 10_000)) {
          return { how };
        }
      }
      how = "quit";
      if (qmp) {
        // QEMU flushes the overlay and exits; the guest sees a power cut.
        await qmp.execute("quit", undefined, { timeoutMs: 2000 }).catch(() => {});
        if (await this.#waitGone(handle, 3000)) return { how };
      }
      how = "killed";
      signalPid(handle.pid, "SIGTERM");
      if (await this.#waitGone(handle, 2000)) return { how };
      signalPid(handle.pid, "SIGKILL");
      if (!(await this.#waitGone(handle, 5000))) {
        throw new VmmError("qemu", "stop", `process ${handle.pid} survived SIGKILL`);
      }
      return { how };
    } finally {
      qmp?.close();
      await removeFiles(handle);
    }
  }

  async #waitGone(handle: VmHandle, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (!(await this.#alive(handle))) return true;
      await sleep(50);
    }
    return !(await this.#alive(handle));
  }

  snapshot(_handle: VmHandle, options: { kind: SnapshotKind }): Promise<void> {
    return Promise.reject(
      new VmmError("qemu", "snapshot", `"${options.kind}" snapshots are not implemented yet`),
    );
  }

  restore(_spec: VmSpec, options: { kind: SnapshotKind }): Promise<StartedVm> {
    return Promise.reject(
      new VmmError("qemu", "restore", `"${options.kind}" snapshots are not implemented yet`),
    );
  }
}

/** Removes what a VM leaves behind once its process is gone. */
async function removeFiles(handle: VmHandle): Promise<void> {
  for (const f of [...handle.runtimeFiles, handle.controlSocket]) {
    await Deno.remove(f).catch(() => {});
  }
}

async function tailFile(path: string, lines: number): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export { QMP_SOCKET_NAME };
