/**
 * @module
 * Starting instances from RAM snapshots (spec §8.3): the compatibility check,
 * the decoded memory template cached once per ramsnap digest under
 * `/dev/shm/ovm/snapshots/<hex>/`, and QEMU started with that template
 * mapped privately (copy-on-write: the template is never written, clones
 * share its clean pages) waiting for the device state. `startInstance` calls
 * {@linkcode restoreInstance} for any artifact with a `ramSnapshot`; the warm
 * pool ({@linkcode WarmPool}) uses {@linkcode prepareRestore} ahead of time.
 */
import { join, resolve } from "node:path";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { BootstrapConfigSchema, type Digest, type Manifest, sha256Hex } from "../manifest/mod.ts";
import type { Artifact, ContentStore } from "../store/mod.ts";
import { buildConfigDisk } from "../system/mod.ts";
import { assertSnapshotSystem } from "../system/snapshot.ts";
import type { SystemSet } from "../system/mod.ts";
import { decodeRamsnap, readRamsnapLayout } from "../snapshot/mod.ts";
import { lockFileInMemory, type Mapping } from "../../ffi/mod.ts";
import type { VmSpec } from "../vmm/adapter.ts";
import { type IncomingVm, MAX_DEVICE_STATE, QemuAdapter } from "../vmm/qemu/adapter.ts";
import { getAdapter } from "../vmm/mod.ts";
import { assembleChain, readKernelVersion } from "./chain.ts";
import { assertInstanceId, type InstanceState, InstanceStore, newInstanceId } from "./instance.ts";
import {
  bootFile,
  readBootstrap,
  type StartedInstance,
  type StartOptions,
  VMM_UID_BASE,
  vmmUser,
} from "./runtime.ts";
import { RESTORE_ANNOTATION, type RestoreRecord } from "./snapshot.ts";
import { exists } from "../util/fs.ts";
import { pidAlive } from "../process/mod.ts";

/** Where decoded snapshots live: tmpfs, shared by every ovm home (content-addressed). */
export const SNAPSHOT_CACHE = "/dev/shm/ovm/snapshots";

/** The decoded files of one snapshot. */
export interface SnapshotTemplate {
  dir: string;
  memory: string;
  deviceState: string;
  memoryBytes: number;
}

/** Reads the restore-compatibility record from a snapshot manifest's annotations. */
export function readRestoreRecord(m: Manifest): RestoreRecord {
  const raw = m.annotations?.[RESTORE_ANNOTATION];
  if (!raw) {
    throw new ValidationError(
      `The snapshot "${m.name}:${m.version}" has no "${RESTORE_ANNOTATION}" annotation`,
      { hint: "it was not made by 'ovm snapshot'; boot it cold or snapshot again" },
    );
  }
  let r: RestoreRecord;
  try {
    r = JSON.parse(raw);
  } catch (e) {
    throw new ValidationError(`The "${RESTORE_ANNOTATION}" annotation is not JSON`, { cause: e });
  }
  if (r?.recordVersion !== 1 || typeof r.memoryBytes !== "number" || !Array.isArray(r.diskChain)) {
    throw new ValidationError(`The "${RESTORE_ANNOTATION}" annotation has an unknown shape`, {
      hint: "a newer ovm wrote it; upgrade ovm",
    });
  }
  return r;
}

function mismatch(field: string, recorded: unknown, now: unknown, hint?: string): never {
  throw new ConflictError(
    `The snapshot cannot be restored here: ${field} is "${now}", the snapshot recorded "${recorded}"`,
    { hint: hint ?? "restore with the recorded value, or boot the base artifact cold" },
  );
}

/** The group that may open a snapshot's memory template (each VM keeps its own uid). */
export function snapshotGid(digest: string): number {
  return VMM_UID_BASE + 0x10000 + (parseInt(digest.slice(7, 15), 16) % 0x10000);
}

/** "7.2.22" → "7.2": QEMU keeps migration compatible within a release's machine type. */
function release(v: string): string {
  return v.split(".").slice(0, 2).join(".");
}

/** Refuses start options that contradict what the snapshot recorded. */
export function checkOptions(record: RestoreRecord, options: StartOptions): void {
  if (options.runtime && options.runtime !== "auto" && options.runtime !== record.vmm) {
    mismatch("the runtime", record.vmm, options.runtime);
  }
  if (options.memoryBytes !== undefined && options.memoryBytes !== record.memoryBytes) {
    mismatch("the memory size", record.memoryBytes, options.memoryBytes, "omit --memory");
  }
  if (options.cpus !== undefined && options.cpus !== record.cpus) {
    mismatch("the CPU count", record.cpus, options.cpus, "omit --cpus");
  }
  if (options.net !== undefined && options.net !== record.network) {
    mismatch("the network mode", record.network, options.net, "omit --net");
  }
  if (options.accel && options.accel !== "auto" && options.accel !== record.accel) {
    mismatch("the accelerator", record.accel, options.accel, "omit --accel");
  }
  if (options.cmd?.length || options.entrypoint !== undefined || options.env?.length) {
    throw new ValidationError("A snapshot resumes a running workload: it takes no command or env", {
      hint: "drop the command, --entrypoint and --env",
    });
  }
}

/** Checks everything that can be checked before anything runs; returns the record. */
export async function checkRestore(
  store: ContentStore,
  artifact: Artifact,
  options: StartOptions,
): Promise<{ record: RestoreRecord; kernel: string; initrd?: string }> {
  const m = artifact.manifest;
  const record = readRestoreRecord(m);
  checkOptions(record, options);
  const chain = m.diskLayers.map((l) => l.ref);
  if (chain.join(",") !== record.diskChain.join(",")) {
    mismatch("the disk chain", record.diskChain.join(","), chain.join(","));
  }
  const devices = m.devices.map((d) => d.name);
  if (devices.join(",") !== record.devices.join(",")) {
    mismatch("the device list", record.devices.join(","), devices.join(","));
  }
  if (m.kernel.ref !== record.kernelDigest) {
    mismatch("the kernel", record.kernelDigest, m.kernel.ref);
  }
  if ((m.initrd?.ref ?? "") !== (record.initrdDigest ?? "")) {
    mismatch("the initrd", record.initrdDigest ?? "none", m.initrd?.ref ?? "none");
  }
  const kernel = await bootFile(store, "kernel", m.kernel.ref);
  const initrd = m.initrd ? await bootFile(store, "initrd", m.initrd.ref) : undefined;
  // The system versions the snapshot names must be the ones it runs with now.
  const annotated = m.annotations ?? {};
  const recorded = {
    kernelVersion: annotated["ovms.system.kernel.version"] ?? record.kernelVersion ?? "",
    kernelDigest: annotated["ovms.system.kernel.digest"] ?? record.kernelDigest,
    initrdVersion: annotated["ovms.system.initrd.version"] ?? record.initrdVersion ?? "",
    initrdDigest: annotated["ovms.system.initrd.digest"] ?? record.initrdDigest,
  };
  const current = {
    kernel: {
      version: kernel.version ?? await readKernelVersion(kernel.path) ?? "",
      digest: m.kernel.ref as Digest,
    },
    initrd: { version: initrd?.version ?? "", digest: (m.initrd?.ref ?? "") as Digest },
  } as unknown as SystemSet;
  if (!recorded.initrdDigest) recorded.initrdDigest = current.initrd.digest;
  assertSnapshotSystem(recorded, current);
  if (!m.ramSnapshot) throw new ValidationError("The artifact has no RAM snapshot");
  return { record, kernel: kernel.path, initrd: initrd?.path };
}

/** Mappings that keep `mlock_required` templates resident while this process lives. */
const LOCKS = new Map<string, Mapping>();

/**
 * Decodes a snapshot's ramsnap blob into the tmpfs cache (once per digest)
 * and returns the template. Refuses before writing when the blob's sections
 * exceed the recorded sizes or free memory; leaves nothing behind on failure.
 */
export async function ensureTemplate(
  store: ContentStore,
  artifact: Artifact,
  record: RestoreRecord,
  options: { signal?: AbortSignal; lock?: boolean } = {},
): Promise<SnapshotTemplate> {
  const ram = artifact.manifest.ramSnapshot!;
  const digest = ram.ref as Digest;
  if (!(await store.has(digest))) {
    throw new NotFoundError(`The RAM snapshot blob "${digest}" is not in the store`, {
      hint: "pull the snapshot again with 'ovm pull'",
    });
  }
  const hex = digest.slice(7);
  const dir = join(SNAPSHOT_CACHE, hex);
  const tpl: SnapshotTemplate = {
    dir,
    memory: join(dir, "memory"),
    deviceState: join(dir, "device-state"),
    memoryBytes: record.memoryBytes,
  };
  if (!(await exists(tpl.deviceState)) || !(await exists(tpl.memory))) {
    await decodeTemplate(store.blobPath(digest), tpl, record, options.signal);
  }
  await markTemplateUser(digest, store.paths.home);
  if (ram.mlock_required && options.lock !== false && !LOCKS.has(hex)) {
    // This process holds the lock: the foreground `ovm run` or `ovm serve`.
    LOCKS.set(hex, lockFileInMemory(tpl.memory, record.memoryBytes));
  }
  return tpl;
}

async function decodeTemplate(
  blob: string,
  tpl: SnapshotTemplate,
  record: RestoreRecord,
  signal?: AbortSignal,
): Promise<void> {
  const layout = await readRamsnapLayout(blob);
  const mem = layout.header.sections.find((s) => s.name === "memory");
  if (!mem || mem.size !== record.memoryBytes) {
    throw new ValidationError(
      `RAM snapshot "${blob}" is invalid: its memory section is ${mem?.size ?? "missing"} bytes, ` +
        `the snapshot declares ${record.memoryBytes}`,
      { hint: "the blob is corrupt; pull or create the snapshot again" },
    );
  }
  const needed = layout.header.sections.reduce((n, s) => n + s.size, 0);
  const free = Deno.systemMemoryInfo().available;
  if (needed > free) {
    throw new ValidationError(
      `Restoring needs ${needed} bytes of memory for the snapshot, only ${free} are available`,
      { hint: "stop other VMs or remove cached snapshots under " + SNAPSHOT_CACHE },
    );
  }
  const tmp = await newTemplateDir();
  try {
    await decodeRamsnap(blob, {
      memory: join(tmp, "memory"),
      "device-state": join(tmp, "device-state"),
    }, {
      limits: { memory: record.memoryBytes, "device-state": MAX_DEVICE_STATE },
      signal,
    });
    await installTemplate(tmp, `sha256:${tpl.dir.slice(-64)}`);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** A fresh directory in the template cache to assemble a template in. */
export async function newTemplateDir(): Promise<string> {
  await Deno.mkdir(SNAPSHOT_CACHE, { recursive: true, mode: 0o711 });
  await Deno.chmod("/dev/shm/ovm", 0o711).catch(() => {});
  await Deno.chmod(SNAPSHOT_CACHE, 0o711).catch(() => {});
  const tmp = join(SNAPSHOT_CACHE, `.tmp-${crypto.randomUUID()}`);
  await Deno.mkdir(tmp, { mode: 0o711 });
  return tmp;
}

/**
 * Moves a directory holding `memory` and `device-state` into the cache as
 * the template of ramsnap blob `digest` (or drops it when one is there).
 */
export async function installTemplate(tmp: string, digest: string): Promise<void> {
  // QEMU 7.2 opens a private memory file read-write (it has no read-only
  // RAM backend that stays writable for the guest): the snapshot's group
  // may open it, and its mapping is MAP_PRIVATE so no write reaches it.
  await Deno.chmod(join(tmp, "memory"), 0o660);
  if (Deno.uid() === 0) await Deno.chown(join(tmp, "memory"), 0, snapshotGid(digest));
  const dir = join(SNAPSHOT_CACHE, digest.replace(/^sha256:/, ""));
  try {
    await Deno.rename(tmp, dir);
  } catch (e) {
    // Another ovm decoded the same snapshot first: use theirs.
    if (!(await exists(join(dir, "device-state")))) throw e;
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Removes a decoded snapshot from the tmpfs cache (its running clones keep their mappings). */
export async function dropTemplate(ramsnapDigest: string): Promise<void> {
  const hex = ramsnapDigest.replace(/^sha256:/, "");
  const m = LOCKS.get(hex);
  if (m) {
    m[Symbol.dispose]();
    LOCKS.delete(hex);
  }
  await Deno.remove(join(SNAPSHOT_CACHE, hex), { recursive: true }).catch(() => {});
}

/** Paths of one restored VM before it becomes an instance (`dir` as in `instancePaths`). */
export interface RestorePaths {
  dir: string;
  vmDir: string;
  consoleLog: string;
  overlay: string;
  configDisk: string;
}

export function restorePaths(dir: string): RestorePaths {
  const vmDir = join(dir, "vm");
  return {
    dir,
    vmDir,
    consoleLog: join(vmDir, "console.log"),
    overlay: join(vmDir, "overlay.qcow2"),
    configDisk: join(dir, "config.tar"),
  };
}

/**
 * Everything up to a QEMU waiting for the device state: the overlay on the
 * snapshot's chain, the config disk the guest saw, QEMU on the template.
 */
export async function prepareRestore(
  store: ContentStore,
  artifact: Artifact,
  options: {
    id: string;
    paths: RestorePaths;
    record: RestoreRecord;
    kernel: string;
    initrd?: string;
    template: SnapshotTemplate;
    publish?: StartOptions["publish"];
    detach?: boolean;
    signal?: AbortSignal;
    /** Keep the vCPUs stopped after the state is loaded (`-S`; the warm pool). */
    paused?: boolean;
  },
): Promise<IncomingVm> {
  const { record, paths, id } = options;
  const adapter = getAdapter(record.vmm);
  if (!(adapter instanceof QemuAdapter)) {
    throw new ValidationError(`Runtime "${record.vmm}" cannot restore RAM snapshots`);
  }
  const chain = await assembleChain(store, artifact.manifest.diskLayers);
  await Deno.mkdir(paths.vmDir, { recursive: true, mode: 0o700 });
  const extraDisks: VmSpec["extraDisks"] = [];
  if (record.configDiskBytes !== undefined) {
    const config = await readBootstrap(store, artifact) ?? BootstrapConfigSchema.parse({});
    await buildConfigDisk(paths.configDisk, config);
    // The guest read it at boot; only its size is part of the device state.
    await Deno.truncate(paths.configDisk, record.configDiskBytes);
    extraDisks.push({ path: paths.configDisk, readOnly: true });
  }
  const user = vmmUser(store.paths.home, id);
  const spec: VmSpec = {
    id,
    kernel: options.kernel,
    initrd: options.initrd,
    cmdline: record.cmdline,
    memoryBytes: record.memoryBytes,
    cpus: record.cpus,
    accel: record.accel,
    rootDisk: chain.length ? { layers: chain, overlay: paths.overlay } : undefined,
    extraDisks,
    devices: artifact.manifest.devices,
    network: { mode: record.network, publish: options.publish ?? [] },
    vmDir: paths.vmDir,
    consoleLog: paths.consoleLog,
    runAs: user
      ? { uid: user.uid, gid: snapshotGid(artifact.manifest.ramSnapshot!.ref) }
      : undefined,
    detach: options.detach ?? false,
    memory: { path: options.template.memory, share: false, create: false },
    vmgenid: crypto.randomUUID(),
  };
  await adapter.prepare(spec);
  const incoming = await adapter.startIncoming(spec, {
    signal: options.signal,
    paused: options.paused,
  });
  if (release(incoming.version) !== release(record.vmmVersion)) {
    incoming.qmp.close();
    await adapter.stop(incoming.vm.handle, { force: true }).catch(() => {});
    mismatch("the QEMU version", record.vmmVersion, incoming.version);
  }
  return incoming;
}

/** A QEMU made ready for a snapshot ahead of a start (what the warm pool holds). */
export interface PreparedRestore {
  id: string;
  paths: RestorePaths;
  incoming: IncomingVm;
  deviceState: Uint8Array;
  artifactDigest: string;
  /** The record the pool checked when it filled (compatibility, versions). */
  record: RestoreRecord;
  /** The device state is already loaded; the vCPUs wait for `cont`. */
  loaded?: boolean;
}

/** Starts an instance from a snapshot artifact (called by `startInstance`). */
export async function restoreInstance(
  store: ContentStore,
  ref: string,
  artifact: Artifact,
  options: StartOptions,
): Promise<StartedInstance> {
  const home = store.paths.home;
  let mark = performance.now();
  const step = (name: string) => {
    const now = performance.now();
    options.trace?.(name, now - mark);
    mark = now;
  };
  const m = artifact.manifest;
  if (m.annotations?.[RESTORE_ANNOTATION] && readRestoreRecord(m).vmm !== "qemu") {
    return await restoreOnAdapter(store, ref, artifact, options);
  }
  let pooled = m.devices.length || options.publish?.length
    ? undefined
    : options.pool?.take(artifact.descriptor.digest);
  if (pooled && !pidAlive(pooled.incoming.vm.handle.pid)) {
    // A waiting QEMU that died (killed, OOM): restore without the pool.
    pooled.incoming.qmp.close();
    await Deno.remove(pooled.paths.dir, { recursive: true }).catch(() => {});
    options.pool?.refill(artifact.descriptor.digest);
    pooled = undefined;
  }
  let checked: Awaited<ReturnType<typeof checkRestore>>;
  if (pooled) {
    // The pool ran the full check when it filled; only the options remain.
    try {
      checkOptions(pooled.record, options);
    } catch (e) {
      pooled.incoming.qmp.close();
      await getAdapter("qemu").stop(pooled.incoming.vm.handle, { force: true }).catch(() => {});
      await Deno.remove(pooled.paths.dir, { recursive: true }).catch(() => {});
      throw e;
    }
    checked = { record: pooled.record, kernel: "", initrd: undefined };
  } else {
    checked = await checkRestore(store, artifact, options);
  }
  const { record, kernel, initrd } = checked;
  step("check snapshot compatibility");
  const instances = new InstanceStore(home);
  const adapter = getAdapter(record.vmm) as QemuAdapter;
  assertLockHolder(artifact, options);
  const publish = options.publish ?? [];
  const prepared = pooled;
  let id: string;
  if (prepared) {
    id = options.name ? assertInstanceId(options.name) : prepared.id;
    // The pool's directory becomes the instance's: QEMU holds its files open
    // and its sockets live in its working directory, which moves along.
    await Deno.mkdir(instances.dir, { recursive: true });
    await instances.create(id);
    await Deno.rename(prepared.paths.dir, instances.paths(id).dir);
    step("take a warm VM from the pool");
  } else {
    id = options.name ? assertInstanceId(options.name) : newInstanceId();
    await instances.create(id);
  }
  const paths = instances.paths(id);
  let state = startingState(id, ref, artifact, record, {
    adapter: adapter.name,
    publish,
    detach: options.detach,
  });
  let incoming: IncomingVm | undefined = prepared?.incoming;
  try {
    if (!prepared) await instances.write(state);
    let deviceState = prepared?.deviceState;
    if (!incoming) {
      const template = await ensureTemplate(store, artifact, record, { signal: options.signal });
      step("decode or find the memory template");
      incoming = await prepareRestore(store, artifact, {
        id,
        paths: restorePaths(paths.dir),
        record,
        kernel,
        initrd,
        template,
        publish,
        detach: options.detach,
        signal: options.signal,
      });
      step("spawn qemu -incoming");
      deviceState = await Deno.readFile(template.deviceState);
    }
    const handle = {
      ...incoming.vm.handle,
      controlSocket: join(paths.vmDir, "qmp.sock"),
    };
    if (prepared?.loaded) {
      // `cont` returns once the vCPUs run (QEMU emits RESUME before replying).
      await incoming.qmp.execute("cont");
    } else {
      await adapter.loadState(incoming, deviceState!, {
        socketPath: join(paths.vmDir, "migrate.sock"),
      });
    }
    step(prepared?.loaded ? "cont the preloaded VM" : "load device state until the guest runs");
    state = {
      ...state,
      state: "running",
      pid: handle.pid,
      qmpSocket: handle.controlSocket,
      devices: handle.devices,
      startedAt: new Date().toISOString(),
      vm: handle,
    };
    await instances.write(state);
    step("record the running state");
    return { state, vm: { ...incoming.vm, handle }, adapter };
  } catch (e) {
    if (incoming) await adapter.stop(incoming.vm.handle, { force: true }).catch(() => {});
    await instances.remove(id).catch(() => {});
    throw e;
  } finally {
    incoming?.qmp.close();
    if (prepared) options.pool?.refill(artifact.descriptor.digest);
  }
}

/** "v53.0" and "53.0" name the same release. */
function bareVersion(v: string): string {
  return v.trim().replace(/^v/, "");
}

/**
 * Restores a Cloud Hypervisor or Firecracker snapshot: the same checks and
 * template cache as QEMU's, then the adapter's `restore` (`vm.restore`,
 * `PUT /snapshot/load`) on the template. These VMMs load only a snapshot of
 * their own exact version.
 */
async function restoreOnAdapter(
  store: ContentStore,
  ref: string,
  artifact: Artifact,
  options: StartOptions,
): Promise<StartedInstance> {
  const home = store.paths.home;
  const m = artifact.manifest;
  const { record, kernel, initrd } = await checkRestore(store, artifact, options);
  const adapter = getAdapter(record.vmm);
  if (!adapter.capabilities.snapshotKinds.includes("ram")) {
    throw new ValidationError(`Runtime "${record.vmm}" cannot restore RAM snapshots`);
  }
  const avail = await adapter.available();
  if (!avail.ok) {
    throw new ValidationError(
      `The snapshot needs runtime "${record.vmm}", which is not usable here: ${avail.reason}`,
      { hint: `install ${record.vmm} ${record.vmmVersion}, or pass --runtime-path` },
    );
  }
  if (bareVersion(avail.version) !== bareVersion(record.vmmVersion)) {
    mismatch(`the ${record.vmm} version`, record.vmmVersion, avail.version);
  }
  assertLockHolder(artifact, options);
  const template = await ensureTemplate(store, artifact, record, { signal: options.signal });
  const instances = new InstanceStore(home);
  const id = options.name ? assertInstanceId(options.name) : newInstanceId();
  await instances.create(id);
  const paths = instances.paths(id);
  const publish = options.publish ?? [];
  let state = startingState(id, ref, artifact, record, {
    adapter: adapter.name,
    publish,
    detach: options.detach,
  });
  let started: Awaited<ReturnType<typeof adapter.restore>> | undefined;
  try {
    await instances.write(state);
    const chain = await assembleChain(store, m.diskLayers);
    await Deno.mkdir(paths.vmDir, { recursive: true, mode: 0o700 });
    const extraDisks: VmSpec["extraDisks"] = [];
    if (record.configDiskBytes !== undefined) {
      const config = await readBootstrap(store, artifact) ?? BootstrapConfigSchema.parse({});
      await buildConfigDisk(paths.configDisk, config);
      await Deno.truncate(paths.configDisk, record.configDiskBytes);
      extraDisks.push({ path: paths.configDisk, readOnly: true });
    }
    const user = vmmUser(home, id);
    const spec: VmSpec = {
      id,
      kernel,
      initrd,
      cmdline: record.cmdline,
      memoryBytes: record.memoryBytes,
      cpus: record.cpus,
      accel: record.accel,
      rootDisk: chain.length ? { layers: chain, overlay: paths.overlay } : undefined,
      extraDisks,
      devices: m.devices,
      network: { mode: record.network, publish },
      vmDir: paths.vmDir,
      consoleLog: paths.consoleLog,
      runAs: user ? { uid: user.uid, gid: snapshotGid(m.ramSnapshot!.ref) } : undefined,
      detach: options.detach ?? false,
      memory: { path: template.memory, share: false, create: false },
      vmgenid: crypto.randomUUID(),
    };
    await adapter.prepare(spec, { signal: options.signal });
    started = await adapter.restore(spec, {
      kind: "ram",
      source: template.dir,
      signal: options.signal,
    });
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
    return { state, vm: started, adapter };
  } catch (e) {
    if (started) await adapter.stop(started.handle, { force: true }).catch(() => {});
    await instances.remove(id).catch(() => {});
    throw e;
  }
}

/** The marker a home leaves in a template it uses: the cache is shared by every home. */
function homeMarker(home: string): string {
  return sha256Hex(resolve(home)).slice(0, 16);
}

/** Records that `home` uses the decoded template of ramsnap `digest`. */
export async function markTemplateUser(digest: string, home: string): Promise<void> {
  const dir = join(SNAPSHOT_CACHE, digest.replace(/^sha256:/, ""), "homes");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 }).catch(() => {});
  await Deno.writeTextFile(join(dir, homeMarker(home)), resolve(home) + "\n").catch(() => {});
}

/**
 * Drops the decoded templates (in the host-wide cache) that no ovm home uses
 * any more: for each snapshot this store no longer holds, this home's marker
 * goes; a template with no marker left is removed. Running clones keep their
 * private mappings of a dropped file; a later restore decodes again. Returns
 * what was (or, with `dryRun`, would be) removed and the tmpfs bytes freed.
 */
export async function pruneTemplates(
  store: ContentStore,
  options: { dryRun?: boolean } = {},
): Promise<{ removed: string[]; freedBytes: number }> {
  const removed: string[] = [];
  let freedBytes = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(SNAPSHOT_CACHE));
  } catch {
    return { removed, freedBytes };
  }
  const mine = homeMarker(store.paths.home);
  for (const e of entries) {
    if (!e.isDirectory || !/^[a-f0-9]{64}$/.test(e.name)) continue;
    const digest = `sha256:${e.name}`;
    if (await store.has(digest)) continue;
    const homes = join(SNAPSHOT_CACHE, e.name, "homes");
    const users = (await Array.fromAsync(Deno.readDir(homes)).catch(() => []))
      .map((m) => m.name);
    if (users.some((u) => u !== mine)) {
      // Another home still uses it: only this home lets go.
      if (!options.dryRun) await Deno.remove(join(homes, mine)).catch(() => {});
      continue;
    }
    for (const f of ["memory", "device-state"]) {
      const st = await Deno.stat(join(SNAPSHOT_CACHE, e.name, f)).catch(() => null);
      // Templates are sparse: count the blocks in use, not the length.
      freedBytes += st ? (st.blocks ?? 0) * 512 : 0;
    }
    removed.push(digest);
    if (!options.dryRun) await dropTemplate(digest);
  }
  return { removed, freedBytes };
}

/** A snapshot that must stay locked in RAM needs a process that lives to hold the lock. */
function assertLockHolder(artifact: Artifact, options: StartOptions): void {
  if (artifact.manifest.ramSnapshot?.mlock_required && options.detach) {
    throw new ValidationError(
      "This snapshot must stay locked in memory (mlock_required), which needs a process that lives",
      { hint: "run it in the foreground, or through 'ovm serve', which holds the lock" },
    );
  }
}

/** The `state.json` of an instance being restored from `record`, before its VM runs. */
function startingState(
  id: string,
  ref: string,
  artifact: Artifact,
  record: RestoreRecord,
  options: { adapter: string; publish: NonNullable<StartOptions["publish"]>; detach?: boolean },
): InstanceState {
  const m = artifact.manifest;
  return {
    schemaVersion: 1,
    id,
    ref,
    manifestDigest: artifact.descriptor.digest as Digest,
    name: m.name,
    version: m.version,
    adapter: options.adapter,
    state: "starting",
    kernelDigest: m.kernel.ref as Digest,
    kernelVersion: record.kernelVersion,
    ...(m.initrd
      ? { initrdDigest: m.initrd.ref as Digest, initrdVersion: record.initrdVersion }
      : {}),
    accel: record.accel,
    memoryBytes: record.memoryBytes,
    cpus: record.cpus,
    network: { mode: record.network, publish: options.publish },
    devices: [],
    detached: options.detach ?? false,
    createdAt: new Date().toISOString(),
    ownerPid: Deno.pid,
  };
}
