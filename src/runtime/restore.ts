/**
 * @module
 * Starting instances from RAM snapshots (spec §8.3): the compatibility check
 * of the artifact and the start options against the restore record, then
 * the backend's two-phase restore — the VMM started on the snapshot's
 * memory template (`template_cache.ts`), the device state loaded, the guest
 * resumed — or a warm VM from a pool ({@linkcode RestorePool}), which costs
 * only the resume. Nothing here knows which backend runs: the record names
 * it, the adapter's capabilities say what it can do.
 */
import { ConflictError, ValidationError } from "../errors.ts";
import type { Digest, Manifest } from "../manifest/mod.ts";
import type { Artifact, ContentStore } from "../store/mod.ts";
import { assertSnapshotSystem, SystemAnnotations, type SystemSet } from "../system/mod.ts";
import { pidAlive } from "../process/mod.ts";
import {
  getAdapter,
  type PreparedVm,
  relocateHandle,
  type StartedVm,
  type VmmAdapter,
} from "../vmm/mod.ts";
import { assertInstanceId, InstanceStore, newInstanceId, type VmPaths } from "./instance.ts";
import { claimInstance, recordRunning, startingState } from "./lifecycle.ts";
import {
  type PreparedRestore,
  type StartedInstance,
  type StartOptions,
  stepTimer,
} from "./options.ts";
import { hasRestoreRecord, readRestoreRecord, type RestoreRecord } from "./restore_record.ts";
import { exists } from "../util/fs.ts";
import {
  type InstanceNetwork,
  joinWhenIdentified,
  keptGuestAddress,
  releaseInstanceNetwork,
  setupInstanceNetwork,
} from "./net.ts";
import { ensureTemplate, type SnapshotTemplate } from "./template_cache.ts";
import { type HostFiles, hostFiles, restoreSpec, snapshotGid, vmmUser } from "./vm_spec.ts";

function mismatch(field: string, recorded: unknown, now: unknown, hint?: string): never {
  throw new ConflictError(
    `The snapshot cannot be restored here: ${field} is "${now}", the snapshot recorded "${recorded}"`,
    { hint: hint ?? "restore with the recorded value, or boot the base artifact cold" },
  );
}

/**
 * A bridge clone on a VMM that cannot give its guest a new identity (no
 * `capabilities.guestIdentity`): the guest keeps the snapshot's MAC and
 * address, so the clone leases exactly that address, and a second holder of
 * it on the network (the source, another clone) is refused (spec 8.4).
 */
function keptIdentity(record: RestoreRecord): { address: string; addressHint: string } {
  const address = keptGuestAddress(record.cmdline);
  if (!address) {
    throw new ConflictError(
      `The snapshot's guest address is unknown: its command line has no "ovms.net=ADDRESS/PREFIX"`,
      { hint: "snapshot an instance that ovm started with --net bridge" },
    );
  }
  return {
    address,
    addressHint: `a ${record.vmm} clone keeps its snapshot's MAC and address on the ` +
      `snapshot's network (${record.vmm} cannot give a restored guest a new identity): ` +
      "remove the instance holding it ('ovm rm -f'), or snapshot on QEMU, whose clones get " +
      "addresses of their own",
  };
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

/** The manifest's chain, devices, kernel and initrd must be the ones the record names. */
function checkManifest(m: Manifest, record: RestoreRecord): void {
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
  if (!m.ramSnapshot) throw new ValidationError("The artifact has no RAM snapshot");
}

/** Checks everything that can be checked before anything runs; returns the record and files. */
export async function checkRestore(
  store: ContentStore,
  artifact: Artifact,
  options: StartOptions,
): Promise<{ record: RestoreRecord; files: HostFiles }> {
  const m = artifact.manifest;
  const record = readRestoreRecord(m);
  checkOptions(record, options);
  checkManifest(m, record);
  const files = await hostFiles(store, m);
  // The system versions the snapshot names must be the ones it runs with now.
  const annotated = m.annotations ?? {};
  const recorded = {
    kernelVersion: annotated[SystemAnnotations.kernelVersion] ?? record.kernelVersion ?? "",
    kernelDigest: annotated[SystemAnnotations.kernelDigest] ?? record.kernelDigest,
    initrdVersion: annotated[SystemAnnotations.initrdVersion] ?? record.initrdVersion ?? "",
    initrdDigest: annotated[SystemAnnotations.initrdDigest] ?? record.initrdDigest,
  };
  const current = {
    kernel: { version: files.kernel.version ?? "", digest: m.kernel.ref as Digest },
    initrd: { version: files.initrd?.version ?? "", digest: (m.initrd?.ref ?? "") as Digest },
  } as unknown as SystemSet;
  if (!recorded.initrdDigest) recorded.initrdDigest = current.initrd.digest;
  assertSnapshotSystem(recorded, current);
  return { record, files };
}

/** The adapter the record names, when it can restore RAM snapshots from a template here. */
export async function restoringAdapter(record: RestoreRecord): Promise<VmmAdapter> {
  const adapter = getAdapter(record.vmm);
  const caps = adapter.capabilities;
  if (!caps.restoreKinds.includes("ram") || !caps.restoreFrom.includes("template")) {
    throw new ValidationError(`Runtime "${record.vmm}" cannot restore RAM snapshots`);
  }
  const avail = await adapter.available();
  if (!avail.ok) {
    throw new ValidationError(
      `The snapshot needs runtime "${record.vmm}", which is not usable here: ${avail.reason}`,
      { hint: `install ${record.vmm} ${record.vmmVersion}, or pass --runtime-path` },
    );
  }
  return adapter;
}

/** What a restore's VM is built from. */
export interface RestoreInput {
  artifact: Artifact;
  id: string;
  paths: VmPaths;
  record: RestoreRecord;
  files: HostFiles;
  template: SnapshotTemplate;
  publish?: StartOptions["publish"];
  detach?: boolean;
  signal?: AbortSignal;
  /** Keep the vCPUs stopped after the state is loaded (the warm pool). */
  paused?: boolean;
  /** The console log starts with this file's content (a resumed instance's goes on). */
  consoleFrom?: string;
  /** The clone's own network (bridge mode: its TAP and lease); default: the record's mode. */
  network?: InstanceNetwork;
  /** The workload's stdin (`StartOptions.stdin`) for a guest with the stdin port. */
  stdin?: string;
}

/**
 * Phase one: the overlay on the snapshot's chain, the config disk the guest
 * saw, the VMM started on the template and waiting for the device state, its
 * version checked against the record.
 */
export async function prepareRestore(
  store: ContentStore,
  input: RestoreInput,
): Promise<{ adapter: VmmAdapter; prepared: PreparedVm }> {
  const { record, artifact } = input;
  const adapter = await restoringAdapter(record);
  if (!adapter.prepareRestore || !adapter.capabilities.preparedRestore) {
    throw new ValidationError(`Runtime "${record.vmm}" cannot prepare a restore ahead of time`);
  }
  const user = vmmUser(store.paths.home, input.id);
  const spec = await restoreSpec(store, {
    id: input.id,
    artifact,
    files: input.files,
    paths: input.paths,
    machine: record,
    network: input.network?.spec ?? { mode: record.network, publish: input.publish ?? [] },
    guestNics: input.network?.nics,
    // The snapshot's group may open its memory template; each VM keeps its own uid.
    runAs: user
      ? { uid: user.uid, gid: snapshotGid(artifact.manifest.ramSnapshot!.ref) }
      : undefined,
    detach: input.detach ?? false,
    cmdline: record.cmdline,
    configDiskBytes: record.configDiskBytes,
    memory: input.template.memory,
    stdin: input.stdin,
  });
  // The VMM opens the console log for appending: a seeded one goes on.
  if (input.consoleFrom && await exists(input.consoleFrom)) {
    await Deno.copyFile(input.consoleFrom, spec.consoleLog);
  }
  await adapter.prepare(spec, { signal: input.signal });
  const prepared = await adapter.prepareRestore(spec, {
    kind: "ram",
    source: input.template.dir,
    paused: input.paused,
    signal: input.signal,
  });
  if (!adapter.restoresFrom(record.vmmVersion, prepared.version)) {
    prepared.close();
    await adapter.stop(prepared.vm.handle, { force: true }).catch(() => {});
    mismatch(`the ${adapter.name} version`, record.vmmVersion, prepared.version);
  }
  return { adapter, prepared };
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

/** A warm VM for this start, if the pool has a live one and the options fit its record. */
async function takeWarm(
  artifact: Artifact,
  options: StartOptions,
): Promise<PreparedRestore | undefined> {
  const pool = options.pool;
  // Devices, published ports and bridge NICs are per instance: such starts never come
  // from the pool.
  if (
    !pool || artifact.manifest.devices.length || options.publish?.length || options.consoleFrom ||
    options.stdin ||
    options.net === "bridge" ||
    (hasRestoreRecord(artifact.manifest) &&
      readRestoreRecord(artifact.manifest).network === "bridge")
  ) return undefined;
  const warm = pool.take(artifact.descriptor.digest);
  if (!warm) return undefined;
  if (!pidAlive(warm.prepared.vm.handle.pid)) {
    // A waiting VMM that died (killed, OOM): restore without the pool.
    await pool.discard(warm);
    pool.refill(artifact.descriptor.digest);
    return undefined;
  }
  try {
    // The pool ran the full check when it filled; only the options remain.
    checkOptions(warm.record, options);
  } catch (e) {
    await pool.discard(warm);
    throw e;
  }
  return warm;
}

/** Starts an instance from a snapshot artifact (called by `startInstance`). */
export async function restoreInstance(
  store: ContentStore,
  ref: string,
  input: { artifact: Artifact; options: StartOptions },
): Promise<StartedInstance> {
  const { artifact, options } = input;
  const step = stepTimer(options);
  const warm = await takeWarm(artifact, options);
  const checked = warm ? undefined : await checkRestore(store, artifact, options);
  const record = warm?.record ?? checked!.record;
  step("check snapshot compatibility");
  assertLockHolder(artifact, options);
  const instances = new InstanceStore(store.paths.home);
  const id = options.name ? assertInstanceId(options.name) : warm?.id ?? newInstanceId();
  const publish = options.publish ?? [];
  let state = startingState({
    id,
    ref,
    artifact,
    adapter: record.vmm,
    kernelVersion: record.kernelVersion,
    initrdVersion: record.initrdVersion,
    machine: record,
    network: { mode: record.network, publish },
    detach: options.detach,
  });
  const paths = instances.paths(id);
  if (warm) {
    // The pool's directory becomes the instance's: the VMM holds its files
    // open and its sockets live in its working directory, which moves along.
    await instances.adopt(id, warm.paths.dir, { claimed: options.claimed }).catch(async (e) => {
      await options.pool?.discard(warm);
      options.pool?.refill(artifact.descriptor.digest);
      throw e;
    });
  } else {
    await claimInstance(instances, state, { claimed: options.claimed });
  }
  let vm: StartedVm | undefined;
  let adapter = warm?.adapter;
  let prepared = warm?.prepared;
  try {
    if (warm) {
      vm = {
        ...warm.prepared.vm,
        handle: relocateHandle(warm.prepared.vm.handle, warm.paths.dir, paths.dir),
      };
      step("take a warm VM from the pool");
      await (warm.loaded ? warm.prepared.resume() : warm.prepared.load());
      step(warm.loaded ? "cont the preloaded VM" : "load device state until the guest runs");
    } else {
      let network: InstanceNetwork | undefined;
      let standby = false;
      if (record.network === "bridge") {
        // Only a guest that is told its identity can be waited for.
        standby = (await restoringAdapter(record)).capabilities.guestIdentity === true;
        // A clone: its own lease and TAP, pushed into the guest by the identity document;
        // without one, the lease of the address the guest keeps, refused while it is held.
        const kept = standby ? undefined : keptIdentity(record);
        const user = vmmUser(store.paths.home, id);
        network = await setupInstanceNetwork(store.paths.home, id, {
          mode: "bridge",
          network: options.network,
          publish,
          standby,
          ...kept,
          runAs: user
            ? { uid: user.uid, gid: snapshotGid(artifact.manifest.ramSnapshot!.ref) }
            : undefined,
        });
        state = { ...state, network: network.record };
        await instances.write(state);
        step("network: address, TAP, published ports");
      }
      const template = await ensureTemplate(store, artifact, record, { signal: options.signal });
      step("decode or find the memory template");
      ({ adapter, prepared } = await prepareRestore(store, {
        artifact,
        id,
        paths,
        record,
        files: checked!.files,
        template,
        publish,
        detach: options.detach,
        signal: options.signal,
        consoleFrom: options.consoleFrom,
        network,
        stdin: options.stdin,
      }));
      vm = prepared.vm;
      step("spawn the VMM for the restore");
      await prepared.load();
      step("load device state until the guest runs");
      if (standby) {
        const confirmed = await joinWhenIdentified(store.paths.home, id, {
          consoleLog: paths.consoleLog,
          signal: options.signal,
        });
        if (!confirmed) {
          options.note?.(
            "the restored guest did not confirm its new identity (OVMS-IDENTITY) in 15 s: " +
              "it may still use the snapshot's address",
          );
        }
        step("guest took its identity; TAP on the bridge");
      }
    }
    const running = await recordRunning(instances, state, vm.handle, {
      bootMs: Date.now() - (options.requestedAt ?? Date.now()),
      restored: true,
    });
    if (warm && options.claimed) await Deno.remove(paths.claim).catch(() => {});
    step("record the running state");
    return { state: running, vm, adapter: adapter! };
  } catch (e) {
    if (vm && adapter) await adapter.stop(vm.handle, { force: true }).catch(() => {});
    await releaseInstanceNetwork(store.paths.home, id, { release: true }).catch(() => {});
    await instances.remove(id).catch(() => {});
    throw e;
  } finally {
    prepared?.close();
    if (warm) options.pool?.refill(artifact.descriptor.digest);
  }
}
