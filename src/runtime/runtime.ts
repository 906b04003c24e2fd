/**
 * @module
 * Instances: a manifest in the store becomes a running VM. `startInstance`
 * resolves the artifact, assembles the disk chain, builds the config disk and
 * kernel command line, and starts the VM through the selected adapter;
 * `refreshInstance` reattaches to what an earlier ovm started (pid + start
 * time + QMP) and records VMs that died; `stopInstance`, `removeInstance` and
 * the log helpers act on instances from any ovm process.
 */
import { join } from "node:path";
import { ConflictError, NotFoundError, ValidationError, VmmError } from "../errors.ts";
import {
  type BootstrapConfig,
  BootstrapConfigSchema,
  type Digest,
  isDigest,
  parseBootstrapConfig,
} from "../manifest/mod.ts";
import { type Artifact, type ContentStore, loadArtifact } from "../store/mod.ts";
import { applyOverrides } from "../convert/bootstrap.ts";
import { buildConfigDisk, imageDir, listSystem } from "../system/mod.ts";
import type {
  NetMode,
  PortMapping,
  StartedVm,
  VmHandle,
  VmmAdapter,
  VmSpec,
  VmState,
} from "../vmm/adapter.ts";
import { getAdapter } from "../vmm/mod.ts";
import { CliRuntimeAdapter, type RamRestoreOptions } from "../vmm/descriptor/cli_adapter.ts";
import { pidAlive } from "../process/mod.ts";
import { tailLines } from "../util/fs.ts";
import { type AccelRequest, chooseAccel } from "../vmm/qemu/accel.ts";
import { assembleChain, readKernelVersion } from "./chain.ts";
import { assertInstanceId, type InstanceState, InstanceStore, newInstanceId } from "./instance.ts";
import { USER_NET } from "./options.ts";
import { selectAdapter } from "./select.ts";
import { restoreInstance } from "./restore.ts";
import type { WarmPool } from "./pool.ts";

export interface StartOptions {
  memoryBytes?: number;
  cpus?: number;
  runtime?: string;
  accel?: AccelRequest;
  detach?: boolean;
  name?: string;
  net?: NetMode;
  publish?: PortMapping[];
  /** Replaces the bootstrap config's `cmd` (like `docker run IMAGE CMD...`). */
  cmd?: string[];
  /** `--entrypoint`: replaces the entrypoint and drops the config's cmd (convert's `applyOverrides`). */
  entrypoint?: string[];
  /** `--env NAME=value` adds or replaces, `--env NAME` unsets. */
  env?: string[];
  /** A boot that prints nothing on the console within this bound fails. Default 60 s. */
  bootTimeoutMs?: number;
  signal?: AbortSignal;
  /** Notes for people (accelerator fallback, runtime warnings). */
  note?: (msg: string) => void;
  /** Called after each step with its duration (`OVM_TRACE=1 ovm run`; the bench reads it). */
  trace?: (step: string, ms: number) => void;
  /** Boot an artifact that has a RAM snapshot cold instead of restoring it. */
  cold?: boolean;
  /** A warm pool to take a prepared VM from when restoring a snapshot (spec §8.5). */
  pool?: WarmPool;
}

export interface StartedInstance {
  state: InstanceState;
  vm: StartedVm;
  adapter: VmmAdapter;
}

export const DEFAULT_MEMORY = 512 * 1024 * 1024;
const ACTIVE: VmState[] = ["starting", "running", "paused", "stopping"];

export function isActive(state: InstanceState): boolean {
  return ACTIVE.includes(state.state);
}

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

export async function readBootstrap(
  store: ContentStore,
  a: Artifact,
): Promise<BootstrapConfig | undefined> {
  const ref = a.manifest.bootstrap?.ref;
  if (!ref || !isDigest(ref)) return undefined;
  return parseBootstrapConfig(await store.readBlob(ref), `bootstrap config ${ref}`);
}

interface BootFile {
  path: string;
  /** The system version when the digest is one of ovm's system images. */
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

/** Boots an artifact; returns once the guest printed its first console output. */
export async function startInstance(
  store: ContentStore,
  ref: string,
  options: StartOptions = {},
): Promise<StartedInstance> {
  const home = store.paths.home;
  const note = options.note ?? (() => {});
  let mark = performance.now();
  const step = (name: string) => {
    const now = performance.now();
    options.trace?.(name, now - mark);
    mark = now;
  };
  // A CLI runtime that maps `ramSnapshot` (Cherrybomb's --ram-snapshot) gets the
  // blob itself: it boots through the ordinary path and its adapter's restore.
  let cliRestore: Omit<RamRestoreOptions, "signal"> | undefined;
  if (!options.cold) {
    const restored = await store.lease(async () => {
      const artifact = await loadArtifact(store, ref);
      step("resolve manifest");
      const snap = artifact.manifest.ramSnapshot;
      if (!snap) return undefined;
      const requested = options.runtime ? tryAdapter(options.runtime) : undefined;
      if (requested instanceof CliRuntimeAdapter && requested.restoreKinds.includes("ram")) {
        if (!isDigest(snap.ref)) {
          throw new ValidationError("The artifact's RAM snapshot is a registry reference", {
            hint: "pull the artifact first with 'ovm pull'",
          });
        }
        cliRestore = {
          kind: "ram",
          source: store.blobPath(snap.ref),
          preload: snap.preload_hint,
          mlock: snap.mlock_required,
        };
        return undefined;
      }
      return await restoreInstance(store, ref, artifact, options);
    });
    if (restored) return restored;
  }
  // Until state.json names the artifact, a concurrent gc could take its blobs:
  // hold the store lease from resolving the ref to claiming the instance.
  const claimed = await store.lease(async () => {
    const artifact = await loadArtifact(store, ref);
    step("resolve manifest");
    const m = artifact.manifest;
    if (m.metadata && m.metadata.platform.arch !== "x86_64") {
      throw new ValidationError(
        `The artifact is for "${m.metadata.platform.arch}"; ovm runs x86_64`,
      );
    }
    if (!isDigest(m.kernel.ref) || (m.initrd && !isDigest(m.initrd.ref))) {
      throw new ValidationError("The artifact's kernel or initrd is a registry reference", {
        hint: "pull the artifact first with 'ovm pull'",
      });
    }
    if (m.ramSnapshot && !cliRestore) {
      note("the artifact has a RAM snapshot; this run boots it cold (--cold)");
    }
    const adapter = await selectAdapter(m, { requested: options.runtime, warn: note });
    for (const d of m.devices) {
      if (!adapter.capabilities.devices.includes(d.type)) {
        throw new ValidationError(`Device type "${d.type}" is not supported by ${adapter.name}`, {
          hint: `supported device types: ${adapter.capabilities.devices.join(", ")}`,
        });
      }
    }
    const accel = await chooseAccel(options.accel ?? "auto");
    if (accel.fallbackReason) note(`using TCG (software emulation): ${accel.fallbackReason}`);
    step("select runtime and accelerator");
    const chain = await assembleChain(store, m.diskLayers);
    step("assemble disk chain");

    const kernelFile = await bootFile(store, "kernel", m.kernel.ref);
    const initrdFile = m.initrd ? await bootFile(store, "initrd", m.initrd.ref) : undefined;
    const id = options.name ? assertInstanceId(options.name) : newInstanceId();
    const instances = new InstanceStore(home);
    const paths = instances.paths(id);
    const publish = options.publish ?? [];
    const net = options.net ?? "user";
    const kernel = kernelFile.path;
    const initrd = initrdFile?.path;
    const now = new Date().toISOString();
    const state: InstanceState = {
      schemaVersion: 1,
      id,
      ref,
      manifestDigest: artifact.descriptor.digest,
      name: m.name,
      version: m.version,
      adapter: adapter.name,
      state: "starting",
      kernelDigest: m.kernel.ref as Digest,
      kernelVersion: kernelFile.version ?? await readKernelVersion(kernel),
      ...(m.initrd
        ? { initrdDigest: m.initrd.ref as Digest, initrdVersion: initrdFile?.version }
        : {}),
      accel: accel.accel,
      memoryBytes: options.memoryBytes ?? DEFAULT_MEMORY,
      cpus: options.cpus ?? 1,
      network: { mode: net, publish },
      devices: [],
      detached: options.detach ?? false,
      createdAt: now,
      ownerPid: Deno.pid,
    };
    await instances.create(id);
    try {
      await instances.write(state);
    } catch (e) {
      await instances.remove(id).catch(() => {});
      throw e;
    }
    return {
      artifact,
      m,
      adapter,
      accel,
      chain,
      id,
      instances,
      paths,
      publish,
      net,
      kernel,
      initrd,
      state,
    };
  });
  const { artifact, m, adapter, accel, chain, id, instances, paths, publish, net, kernel, initrd } =
    claimed;
  let state = claimed.state;
  let started: StartedVm | undefined;
  try {
    await Deno.mkdir(paths.vmDir, { mode: 0o700 });

    let config = await readBootstrap(store, artifact);
    if (options.cmd?.length || options.entrypoint !== undefined || options.env?.length) {
      config = applyOverrides(config ?? BootstrapConfigSchema.parse({}), {
        entrypoint: options.entrypoint,
        env: options.env,
        args: options.cmd,
      });
    }
    const args = [m.kernel.args.trim()];
    const extraDisks: VmSpec["extraDisks"] = [];
    if (config) {
      await buildConfigDisk(paths.configDisk, config);
      extraDisks.push({ path: paths.configDisk, readOnly: true });
      // Virtio disks appear in command-line order: the root chain is vda.
      args.push(`ovms.config=/dev/vd${chain.length ? "b" : "a"}`);
    }
    args.push(
      `ovms.net=${
        net === "user" ? `${USER_NET.address},${USER_NET.gateway},${USER_NET.dns}` : "none"
      }`,
    );
    const spec: VmSpec = {
      id,
      kernel,
      initrd,
      cmdline: args.filter(Boolean).join(" "),
      memoryBytes: state.memoryBytes,
      cpus: state.cpus,
      accel: accel.accel,
      rootDisk: chain.length ? { layers: chain, overlay: paths.overlay } : undefined,
      extraDisks,
      devices: m.devices,
      network: { mode: net, publish },
      vmDir: paths.vmDir,
      consoleLog: paths.consoleLog,
      runAs: vmmUser(home, id),
      detach: options.detach ?? false,
      vmgenid: crypto.randomUUID(),
    };
    step("instance dir, config disk, cmdline");
    await adapter.prepare(spec, { signal: options.signal });
    step("prepare (overlay)");
    started = cliRestore && adapter instanceof CliRuntimeAdapter
      ? await adapter.restore(spec, { ...cliRestore, signal: options.signal })
      : await adapter.start(spec, { signal: options.signal });
    step("spawn until QMP socket");
    state = {
      ...state,
      state: "running",
      pid: started.handle.pid,
      qmpSocket: started.handle.controlSocket,
      devices: started.handle.devices,
      startedAt: new Date().toISOString(),
      vm: started.handle,
    };
    await instances.write(state);
  } catch (e) {
    if (started) await adapter.stop(started.handle, { force: true }).catch(() => {});
    // Nothing ran (or it was stopped at once): leave no instance behind.
    await instances.remove(id).catch(() => {});
    throw e;
  }

  const boot = await waitFirstOutput(paths.consoleLog, started, adapter, {
    timeoutMs: options.bootTimeoutMs ?? 60_000,
    signal: options.signal,
  });
  step("wait for first console output");
  if (boot !== "output") {
    await adapter.stop(started.handle, { force: true }).catch(() => {});
    const tail = await tailLines(paths.consoleLog, 20);
    const qemuTail = await tailLines(join(paths.vmDir, "qemu.log"), 10);
    const reason = boot === "exited"
      ? "the VMM exited before the guest printed anything"
      : boot === "aborted"
      ? "interrupted during boot"
      : `the guest printed nothing on its console and did no disk I/O within ${
        Math.round((options.bootTimeoutMs ?? 60_000) / 1000)
      } s`;
    await instances.write({
      ...state,
      state: "error",
      reason,
      stoppedAt: new Date().toISOString(),
    });
    if (boot === "aborted") {
      throw options.signal?.reason ?? new DOMException("aborted", "AbortError");
    }
    throw new VmmError(adapter.name, "boot", reason, {
      hint: [
        tail ? `last console lines:\n${tail}` : "the console log is empty",
        qemuTail ? `qemu said:\n${qemuTail}` : "",
      ].filter(Boolean).join("\n"),
    });
  }
  return { state, vm: started, adapter };
}

/**
 * The boot watchdog: waits for the first console output — or, for guests
 * that print nothing (a quiet kernel and a silent workload), for the guest's
 * first disk I/O — and gives up after `timeoutMs`.
 */
async function waitFirstOutput(
  consoleLog: string,
  vm: StartedVm,
  adapter: VmmAdapter,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<"output" | "exited" | "timeout" | "aborted"> {
  let exited = false;
  vm.exited.then(() => (exited = true), () => (exited = true));
  const deadline = Date.now() + options.timeoutMs;
  let nextActivityCheck = Date.now() + 500;
  while (true) {
    const st = await Deno.stat(consoleLog).catch(() => undefined);
    if (st && st.size > 0) return "output";
    if (Date.now() > nextActivityCheck) {
      if (await adapter.guestActive(vm.handle)) return "output";
      nextActivityCheck = Date.now() + 500;
    }
    if (exited) return "exited";
    if (options.signal?.aborted) return "aborted";
    if (Date.now() > deadline) return "timeout";
    await sleep(10);
  }
}

/** The workload's exit code from the console (`OVMS-EXIT: <code>`), if it printed one. */
export async function consoleExitCode(consoleLog: string): Promise<number | undefined> {
  const text = await tailLines(consoleLog, 50);
  const all = [...text.matchAll(/^OVMS-EXIT: (\d+)\s*$/gm)];
  return all.length ? Number(all[all.length - 1][1]) : undefined;
}

async function guestPoweredOff(consoleLog: string): Promise<boolean> {
  const text = await tailLines(consoleLog, 30);
  return /OVMS-EXIT: \d+|reboot: Power down|reboot: Restarting system/.test(text);
}

/**
 * Brings an instance's recorded state up to date: a VM whose process is gone
 * becomes stopped (it powered off, or ovm stopped it) or error (it died), and
 * its leftovers (sockets, shm files) are removed.
 */
export async function refreshInstance(home: string, state: InstanceState): Promise<InstanceState> {
  if (!isActive(state)) return state;
  if (!state.vm) {
    // Still starting: fine while the ovm that starts it lives.
    if (state.ownerPid && !pidAlive(state.ownerPid)) {
      const next: InstanceState = {
        ...state,
        state: "error",
        reason: `ovm (pid ${state.ownerPid}) exited while starting the VM`,
        stoppedAt: new Date().toISOString(),
      };
      await new InstanceStore(home).write(next);
      return next;
    }
    return state;
  }
  const adapter = getAdapter(state.adapter);
  const status = await adapter.status(state.vm);
  if (status.state !== "stopped") {
    const live: VmState = status.state === "paused"
      ? "paused"
      : state.state === "stopping"
      ? "stopping"
      : status.state === "error"
      ? state.state
      : status.state;
    if (live !== state.state) {
      state = { ...state, state: live };
      await new InstanceStore(home).write(state);
    }
    return state;
  }
  return await recordExit(home, state, adapter);
}

async function recordExit(
  home: string,
  state: InstanceState,
  adapter: VmmAdapter,
  exit?: { code: number; signal?: string },
): Promise<InstanceState> {
  const instances = new InstanceStore(home);
  // Re-read: another ovm (a `stop`) may have recorded why it ended.
  const current = await instances.read(state.id).catch(() => state);
  if (!isActive(current)) return current;
  if (current.vm) await adapter.stop(current.vm).catch(() => {});
  const paths = instances.paths(state.id);
  const exitCode = await consoleExitCode(paths.consoleLog);
  let next: InstanceState;
  if (current.state === "stopping") {
    const how = await guestPoweredOff(paths.consoleLog) ? "the guest powered off" : "the VMM ended";
    next = {
      ...current,
      state: "stopped",
      reason: `${current.reason ?? "stopped by ovm"} (${how})`,
    };
  } else if (await guestPoweredOff(paths.consoleLog) && !exit?.signal) {
    next = { ...current, state: "stopped", reason: "the guest powered off" };
  } else {
    const how = exit?.signal
      ? `was killed by ${exit.signal}`
      : exit
      ? `exited with code ${exit.code}`
      : "ended without the guest powering off (killed?)";
    const qemuTail = await tailLines(join(paths.vmDir, "qemu.log"), 3);
    next = {
      ...current,
      state: "error",
      reason: `the ${current.adapter} process (pid ${current.pid}) ${how}` +
        (qemuTail ? `: ${qemuTail.replaceAll("\n", " | ")}` : ""),
    };
  }
  next = {
    ...next,
    stoppedAt: new Date().toISOString(),
    ...(exitCode !== undefined ? { exitCode } : {}),
  };
  await instances.write(next);
  return next;
}

/** Waits for a VM this process started and records how it ended. */
export async function waitInstance(
  home: string,
  started: StartedInstance,
): Promise<InstanceState> {
  const exit = await started.vm.exited;
  return await recordExit(home, started.state, started.adapter, exit);
}

export async function listInstances(home: string): Promise<InstanceState[]> {
  const out: InstanceState[] = [];
  for (const s of await new InstanceStore(home).list()) out.push(await refreshInstance(home, s));
  return out;
}

export async function getInstance(home: string, id: string): Promise<InstanceState> {
  return await refreshInstance(home, await new InstanceStore(home).read(assertInstanceId(id)));
}

/** Stops a VM: guest power-off within `timeoutMs`, then forced. */
export async function stopInstance(
  home: string,
  id: string,
  options: { timeoutMs?: number; force?: boolean; reason?: string } = {},
): Promise<InstanceState> {
  const instances = new InstanceStore(home);
  let state = await getInstance(home, id);
  if (!isActive(state) || !state.vm) return state;
  const adapter = getAdapter(state.adapter);
  state = { ...state, state: "stopping", reason: options.reason ?? "stopped by 'ovm stop'" };
  await instances.write(state);
  const res = await adapter.stop(state.vm!, {
    timeoutMs: options.timeoutMs,
    force: options.force,
  });
  const cur = await instances.read(id);
  if (!isActive(cur)) return cur;
  const exitCode = await consoleExitCode(instances.paths(id).consoleLog);
  const how = res.how === "poweroff"
    ? "the guest powered off"
    : res.how === "quit"
    ? "the guest did not power off in time; the VMM was told to quit"
    : res.how === "killed"
    ? "the VMM was killed"
    : "it had already stopped";
  const next: InstanceState = {
    ...cur,
    state: "stopped",
    reason: `${cur.reason ?? "stopped"} (${how})`,
    stoppedAt: new Date().toISOString(),
    ...(exitCode !== undefined ? { exitCode } : {}),
  };
  await instances.write(next);
  return next;
}

/** Removes a stopped instance (with `force`, stops it first). */
export async function removeInstance(
  home: string,
  id: string,
  options: { force?: boolean } = {},
): Promise<void> {
  const state = await getInstance(home, id);
  if (isActive(state)) {
    if (!options.force) {
      throw new ConflictError(`Instance "${id}" is ${state.state}`, {
        hint: `stop it first ('ovm stop ${id}') or use 'ovm rm -f ${id}'`,
      });
    }
    await stopInstance(home, id, { timeoutMs: 3000, reason: "removed by 'ovm rm -f'" });
  }
  await new InstanceStore(home).remove(id);
}

/** Streams the console log from `offset`, calling `write` with new bytes until `until()` says stop. */
export async function followConsole(
  path: string,
  write: (chunk: Uint8Array) => void,
  options: { offset?: number; until: () => Promise<boolean> | boolean; signal?: AbortSignal },
): Promise<number> {
  let offset = options.offset ?? 0;
  const buf = new Uint8Array(64 * 1024);
  const drain = async () => {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch {
      return;
    }
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      while (true) {
        const n = await f.read(buf);
        if (n === null || n === 0) break;
        write(buf.slice(0, n));
        offset += n;
      }
    } finally {
      f.close();
    }
  };
  while (true) {
    await drain();
    if (options.signal?.aborted || (await options.until())) break;
    await sleep(50);
  }
  await drain();
  return offset;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export type { VmHandle };

/** The adapter named `name`, or undefined when there is none (selection reports it later). */
function tryAdapter(name: string) {
  try {
    return getAdapter(name);
  } catch {
    return undefined;
  }
}
