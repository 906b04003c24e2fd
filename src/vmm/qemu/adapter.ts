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
import { run, which } from "../../process/mod.ts";
import { tailLines } from "../../util/fs.ts";
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
import { MAX_DEVICE_STATE, removeVmFiles } from "../adapter.ts";
import { launchVmm, probeVersion, sleep, terminate, vmmAlive, waitGone } from "../process.ts";
import { buildQemuCommand, MIGRATION_SOCKET_NAME, QMP_SOCKET_NAME, ramPath } from "./cmdline.ts";
import { QmpClient } from "./qmp.ts";
import { clearSharedBlockAddrs } from "./migration_stream.ts";
import { restoredTemplate, snapshotRestored } from "./diff_snapshot.ts";
import { closeFd, openTapQueue } from "../../../ffi/mod.ts";

/**
 * A QEMU waiting for an incoming migration (`-incoming defer`) with
 * `x-ignore-shared` set and its migration socket listening: restoring into it
 * costs only streaming the device state (the warm pool keeps these ready).
 */
export interface IncomingVm {
  vm: StartedVm;
  spec: VmSpec;
  qmp: QmpClient;
  /** The QEMU version from the QMP greeting. */
  version: string;
}

export { MAX_DEVICE_STATE };

/** The machine type of every QEMU VM (a snapshot restores only into the same). */
export const QEMU_MACHINE = "q35";

export const QEMU_LOG_NAME = "qemu.log";

export interface QemuAdapterOptions {
  /** The emulator binary (default `$OVM_QEMU` or `qemu-system-x86_64`). */
  binary?: string;
  qemuImg?: string;
}

export class QemuAdapter implements VmmAdapter {
  readonly name = "qemu";
  readonly kind = "adapter";
  readonly logName = QEMU_LOG_NAME;
  readonly capabilities: AdapterCapabilities = {
    devices: ["ivshmem"],
    snapshotKinds: ["ram"],
    restoreKinds: ["ram"],
    restoreFrom: ["template"],
    preparedRestore: true,
    diskFormats: ["qcow2", "raw"],
    network: ["none", "user", "bridge"],
    guestIdentity: true,
    pause: true,
    stdin: true,
  };
  readonly #binary: string;
  readonly #qemuImg: string;

  constructor(options: QemuAdapterOptions = {}) {
    this.#binary = options.binary ?? Deno.env.get("OVM_QEMU") ?? "qemu-system-x86_64";
    this.#qemuImg = options.qemuImg ?? "qemu-img";
  }

  async available(
    options: { probeVersion?: boolean } = {},
  ): Promise<{ ok: true; version: string } | { ok: false; reason: string }> {
    // Only a PATH lookup unless asked: this runs on every `ovm run`, and
    // spawning `qemu --version` there costs tens of ms. The QMP greeting has the version.
    const bin = await which(this.#binary);
    if (!bin) return { ok: false, reason: `"${this.#binary}" is not installed` };
    if (!(await which(this.#qemuImg))) {
      return { ok: false, reason: `"${this.#qemuImg}" is not installed` };
    }
    return { ok: true, version: options.probeVersion ? await probeVersion(bin) : "unknown" };
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
    return await this.#spawn(spec, options, false);
  }

  async #spawn(
    spec: VmSpec,
    options: { signal?: AbortSignal },
    incoming: boolean,
    paused = false,
  ): Promise<StartedVm> {
    const tapFds: number[] = [];
    try {
      for (const nic of spec.network.mode === "bridge" ? spec.network.nics ?? [] : []) {
        tapFds.push(openTapQueue(nic.tap));
      }
    } catch (e) {
      for (const fd of tapFds) closeFd(fd);
      throw new VmmError("qemu", "start", "cannot open the VM's TAP device", { cause: e });
    }
    try {
      return await this.#spawnWith(spec, options, { incoming, paused, tapFds });
    } finally {
      // QEMU holds its own copies now (or failed): ovm's go.
      for (const fd of tapFds) closeFd(fd);
    }
  }

  async #spawnWith(
    spec: VmSpec,
    options: { signal?: AbortSignal },
    how: { incoming: boolean; paused: boolean; tapFds: number[] },
  ): Promise<StartedVm> {
    const { incoming, paused, tapFds } = how;
    const cmd = buildQemuCommand(spec, { incoming, paused, tapFds });
    const bin = (await which(this.#binary)) ?? this.#binary;
    // QEMU creates the QMP socket during startup; failing before that means a
    // bad command line or an unopenable file, which qemu.log explains.
    return await launchVmm(this.name, bin, {
      args: cmd.args,
      cwd: spec.vmDir,
      outputFile: join(spec.vmDir, QEMU_LOG_NAME),
      ready: { socket: join(spec.vmDir, cmd.qmpSocketName) },
      passFiles: cmd.passFiles,
      runAs: spec.runAs,
      runtimeFiles: cmd.runtimeFiles,
      devices: cmd.devices,
      inheritFds: tapFds,
      stdinFile: spec.stdin,
      signal: options.signal,
    });
  }

  async #connect(handle: VmHandle, timeoutMs = 5000, retryMs = 0): Promise<QmpClient> {
    return await QmpClient.connect(handle.controlSocket, {
      timeoutMs,
      cwdPid: handle.pid,
      retryMs,
    });
  }

  async status(handle: VmHandle): Promise<VmStatus> {
    if (!(await vmmAlive(handle))) return { state: "stopped", detail: "no process" };
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
    if (!(await vmmAlive(handle))) {
      await removeVmFiles(handle);
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
        if (await waitGone(handle, options.timeoutMs ?? 10_000)) {
          return { how };
        }
      }
      how = "quit";
      if (qmp) {
        // QEMU flushes the overlay and exits; the guest sees a power cut.
        await qmp.execute("quit", undefined, { timeoutMs: 2000 }).catch(() => {});
        if (await waitGone(handle, 3000)) return { how };
      }
      how = "killed";
      await terminate(this.name, handle);
      return { how };
    } finally {
      qmp?.close();
      await removeVmFiles(handle);
    }
  }

  /**
   * Device state through a migration with `x-ignore-shared` (guest RAM stays
   * in the VM's shared memory file, consistent while the VM stays paused);
   * the overlay copied once the migration has flushed and inactivated it.
   */
  async snapshot(handle: VmHandle, options: SnapshotOptions): Promise<SnapshotFiles> {
    if (options.kind !== "ram") {
      throw new ValidationError(`Snapshot kind "${options.kind}" is not supported by qemu`);
    }
    const template = restoredTemplate(handle);
    if (template) {
      // Restored from a snapshot: its RAM becomes a diff over the template
      // it maps (spec 8.6), not a migration of the whole private mapping.
      return await snapshotRestored(handle, options, {
        template,
        memoryBytes: (await Deno.stat(template)).size,
        cmdline: handle.argv[handle.argv.indexOf("-append") + 1] ?? "",
        machine: QEMU_MACHINE,
      });
    }
    const ram = await guestRam(handle);
    await using qmp = await this.#connect(handle);
    // The socket QEMU connects to: a private directory that only the VMM's
    // user may enter, short enough for sockaddr_un.
    const dir = await Deno.makeTempDir({ prefix: "ovm-mig-" });
    const sock = join(dir, "s.sock");
    const dest = join(options.dest, "device-state");
    const listener = Deno.listen({ transport: "unix", path: sock });
    try {
      const owner = await Deno.stat(handle.controlSocket).catch(() => undefined);
      if (owner?.uid !== undefined && owner.uid !== null && owner.uid !== Deno.uid()) {
        await Deno.chown(dir, owner.uid, owner.gid);
        await Deno.chown(sock, owner.uid, owner.gid);
      }
      // No `stop` first: with x-ignore-shared there is no RAM to iterate, so
      // QEMU goes straight to completion, which stops the vCPUs, saves the
      // devices and flushes and inactivates the disks; the guest stays
      // stopped (postmigrate) until resumed. The stream records "running",
      // so a restore resumes by itself, without a `cont` round trip.
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [{ capability: "x-ignore-shared", state: true }],
      });
      const accepted = listener.accept();
      // If `migrate` is refused, nobody awaits the accept: closing the listener
      // rejects it, and that rejection must not go unhandled.
      accepted.catch(() => {});
      await qmp.execute("migrate", { uri: `unix:${sock}` });
      const conn = await withAbort(accepted, options.signal, 30_000, "qemu did not connect");
      const out = await Deno.open(dest, { write: true, createNew: true, mode: 0o600 });
      try {
        let total = 0;
        for await (const chunk of conn.readable) {
          total += chunk.byteLength;
          if (total > MAX_DEVICE_STATE) {
            throw new VmmError(
              "qemu",
              "snapshot",
              `device state exceeds ${MAX_DEVICE_STATE} bytes`,
            );
          }
          let off = 0;
          while (off < chunk.byteLength) off += await out.write(chunk.subarray(off));
        }
      } finally {
        out.close();
      }
      const deadline = Date.now() + 30_000;
      while (true) {
        const st = await qmp.execute<{ status?: string; "error-desc"?: string }>("query-migrate");
        if (st.status === "completed") break;
        if (st.status === "failed" || st.status === "cancelled") {
          throw new VmmError("qemu", "snapshot", `migration ${st.status}`, {
            hint: st["error-desc"],
          });
        }
        if (Date.now() > deadline) throw new VmmError("qemu", "snapshot", "migration timed out");
        await sleep(5);
      }
      let disk: SnapshotFiles["disk"];
      if (options.overlay) {
        // After the migration QEMU has flushed and inactivated the overlay:
        // it is consistent with the RAM until the guest resumes. It names no
        // backing file (the chain is set on the command line).
        disk = { path: join(options.dest, "disk.qcow2"), whole: false };
        await Deno.copyFile(options.overlay, disk.path);
      }
      const argv = handle.argv;
      return {
        ...ram,
        deviceState: dest,
        vmmVersion: qmp.version,
        machine: QEMU_MACHINE,
        cmdline: argv[argv.indexOf("-append") + 1] ?? "",
        ...(disk ? { disk } : {}),
      };
    } catch (e) {
      await Deno.remove(dest).catch(() => {});
      // Leave the source as it was: running.
      await qmp.execute("migrate_cancel").catch(() => {});
      await qmp.execute("cont").catch(() => {});
      throw e;
    } finally {
      listener.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }

  /**
   * Starts QEMU for a restore: `-incoming defer`, then `x-ignore-shared`
   * (guest RAM comes from the memory template, not the stream) and
   * `migrate-incoming` on a socket in the VM's directory. Nothing runs in the
   * guest until {@linkcode loadState}.
   */
  async startIncoming(
    spec: VmSpec,
    options: { signal?: AbortSignal; paused?: boolean } = {},
  ): Promise<IncomingVm> {
    const vm = await this.#spawn(spec, options, true, options.paused);
    let qmp: QmpClient | undefined;
    try {
      qmp = await this.#connect(vm.handle, 5000, 2000);
      await qmp.execute("migrate-set-capabilities", {
        capabilities: [
          { capability: "x-ignore-shared", state: true },
          { capability: "events", state: true },
        ],
      });
      await qmp.execute("migrate-incoming", { uri: `unix:${MIGRATION_SOCKET_NAME}` });
      return { vm, spec, qmp, version: qmp.version };
    } catch (e) {
      qmp?.close();
      // QEMU that dies here (a template it cannot map, a device it refuses)
      // says why only in its log, which goes with the VM's directory.
      const tail = await tailLines(join(spec.vmDir, QEMU_LOG_NAME), 10);
      await this.stop(vm.handle, { force: true }).catch(() => {});
      throw new VmmError("qemu", "restore", "qemu did not wait for the incoming snapshot", {
        cause: e,
        hint: tail ? `qemu said:\n${tail}` : (e as Error).message,
      });
    }
  }

  /**
   * Streams `deviceState` into a QEMU from {@linkcode startIncoming} and
   * waits until the guest runs, or, with `resume: false` (a QEMU started
   * `paused`), until the state is loaded and the vCPUs wait for `cont`.
   * `socketPath` overrides where the migration socket is (a renamed VM dir).
   */
  async loadState(
    incoming: IncomingVm,
    deviceState: Uint8Array,
    options: { timeoutMs?: number; socketPath?: string; resume?: boolean } = {},
  ): Promise<void> {
    const { qmp, vm } = incoming;
    deviceState = withUnmappedSharedRegions(deviceState, incoming.spec);
    const resume = options.resume ?? true;
    // QEMU restores the run state the snapshot recorded: a snapshot of a
    // running guest resumes by itself (RESUME comes before MIGRATION
    // completed); one of a paused guest stays paused, and gets a `cont`.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const running = new Promise<void>((resolve, reject) => {
      let resumed = false;
      const off = qmp.onEvent((e) => {
        const status = e.data?.status;
        if (e.event === "RESUME") {
          resumed = true;
          off();
          resolve();
        } else if (e.event === "MIGRATION" && status === "completed" && !resume) {
          // Loaded and kept stopped (`-S`): the caller resumes it later.
          off();
          resolve();
        } else if (e.event === "MIGRATION" && status === "completed" && !resumed) {
          qmp.execute("cont").catch(reject);
        } else if (e.event === "MIGRATION" && (status === "failed" || status === "cancelled")) {
          off();
          reject(new VmmError("qemu", "restore", `loading the device state ${status}`));
        }
      });
      qmp.closed.then(() => {
        off();
        reject(new VmmError("qemu", "restore", "qemu exited while loading the device state"));
      });
      timer = setTimeout(() => {
        off();
        reject(new VmmError("qemu", "restore", "loading the device state timed out"));
      }, options.timeoutMs ?? 30_000);
    });
    running.catch(() => {}).finally(() => clearTimeout(timer));
    let path = options.socketPath ?? join(incoming.spec.vmDir, MIGRATION_SOCKET_NAME);
    if (path.length > 107) path = `/proc/${vm.handle.pid}/cwd/${MIGRATION_SOCKET_NAME}`;
    const conn = await Deno.connect({ transport: "unix", path }).catch((e) => {
      throw new VmmError("qemu", "restore", `cannot connect to the migration socket "${path}"`, {
        cause: e,
      });
    });
    let streamError: unknown;
    try {
      let off = 0;
      while (off < deviceState.byteLength) off += await conn.write(deviceState.subarray(off));
    } catch (e) {
      // QEMU closed the stream: it refused the state. Its log says why.
      streamError = e;
    } finally {
      conn.close();
    }
    try {
      if (streamError) {
        await Promise.race([running, new Promise((r) => setTimeout(r, 1000))]).catch(() => {});
        throw streamError;
      }
      await running;
    } catch (e) {
      const tail = await tailLines(join(incoming.spec.vmDir, QEMU_LOG_NAME), 10);
      throw new VmmError("qemu", "restore", "the guest did not resume from the snapshot", {
        cause: e,
        hint: tail ? `qemu said:\n${tail}` : undefined,
      });
    }
  }

  async restore(spec: VmSpec, options: RestoreOptions): Promise<StartedVm> {
    const prepared = await this.prepareRestore(spec, options);
    try {
      await prepared.load();
      return prepared.vm;
    } catch (e) {
      await this.stop(prepared.vm.handle, { force: true }).catch(() => {});
      throw e;
    } finally {
      prepared.close();
    }
  }

  /**
   * {@linkcode startIncoming}; `load` streams `source/device-state` in
   * ({@linkcode loadState}), `resume` is `cont` (`cont` returns once the
   * vCPUs run: QEMU emits RESUME before replying).
   */
  async prepareRestore(
    spec: VmSpec,
    options: RestoreOptions & { paused?: boolean },
  ): Promise<PreparedVm> {
    if (options.kind !== "ram") {
      throw new ValidationError(`Snapshot kind "${options.kind}" is not supported by qemu`);
    }
    const incoming = await this.startIncoming(spec, options);
    return {
      vm: incoming.vm,
      version: incoming.version,
      load: async (o = {}) => {
        const state = await Deno.readFile(join(options.source, "device-state"));
        await this.loadState(incoming, state, { resume: o.resume, timeoutMs: o.timeoutMs });
      },
      resume: async () => {
        await incoming.qmp.execute("cont");
      },
      status: async () => {
        const s = await incoming.qmp.execute<{ status: string; running: boolean }>("query-status");
        return { state: s.running ? "running" : "paused", detail: s.status };
      },
      close: () => incoming.qmp.close(),
    };
  }

  /** QEMU keeps migration compatible within a release's machine type: "7.2.22" loads "7.2.x". */
  restoresFrom(recorded: string, running: string): boolean {
    const release = (v: string) => v.split(".").slice(0, 2).join(".");
    return release(recorded) === release(running);
  }
}

function withAbort<T>(p: Promise<T>, signal: AbortSignal | undefined, ms: number, what: string) {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new VmmError("qemu", "snapshot", what)), ms);
    const onAbort = () => reject(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    });
  });
}

/**
 * The VM's guest RAM file. A restored VM has none: its RAM is a private
 * copy-on-write mapping of a snapshot template, which QEMU 7.2 migrates
 * page by page (`x-ignore-shared` skips only shared memory); `snapshot`
 * takes it as a RAM diff layer instead (`diff_snapshot.ts`).
 */
async function guestRam(handle: VmHandle): Promise<{ memory: string; memoryBytes: number }> {
  const file = handle.runtimeFiles.find((f) => f.endsWith("-ram"));
  if (file) return { memory: file, memoryBytes: (await Deno.stat(file)).size };
  if (/id=ram0,[^ ]*share=off/.test(handle.argv.join(" "))) {
    throw new ValidationError("A VM restored from a snapshot cannot be migrated to a snapshot", {
      hint: "its RAM is a private copy of the snapshot (QEMU 7.2 can only skip shared RAM " +
        "when saving); 'snapshot' takes it as a RAM diff layer",
    });
  }
  throw new VmmError("qemu", "snapshot", "the VM has no RAM file to snapshot", {
    hint: "it was started by an older ovm (memfd RAM); snapshot a VM booted by this ovm",
  });
}

export { QMP_SOCKET_NAME, ramPath };

/**
 * The device state with the recorded guest-physical address of each ivshmem
 * region set to 0, where the destination has it while loading RAM. With
 * `x-ignore-shared`, QEMU 7.2 compares the two for every shared block in
 * `ram_load_precopy` (migration/ram.c, "Mismatched GPAs") — before the PCI
 * section that maps the BAR is loaded, so a destination never matches. The
 * region's content is not in the stream (it is shared, hence ignored): the
 * restored VM gets its own fresh region, and the PCI state maps its BAR
 * where the guest had it.
 */
function withUnmappedSharedRegions(deviceState: Uint8Array, spec: VmSpec): Uint8Array {
  const shared = spec.devices.filter((d) => d.type === "ivshmem").map((d) => `/shm-${d.name}`);
  if (!shared.length) return deviceState;
  const copy = deviceState.slice();
  clearSharedBlockAddrs(copy, (idstr) => shared.some((s) => idstr.endsWith(s)));
  return copy;
}
