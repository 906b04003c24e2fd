/**
 * @module
 * `ovm run`'s start: a manifest in the store becomes a running VM.
 * {@linkcode startInstance} resolves the artifact; one with a RAM snapshot
 * is restored (`restore.ts`) unless `cold`, or, on a runtime that restores
 * the ramsnap blob itself, booted with it. Otherwise the adapter is selected,
 * the instance claimed, its spec built (`vm_spec.ts`), the VM started, and
 * the boot watched until the guest's first console output.
 */
import { join } from "node:path";
import { ValidationError, VmmError } from "../errors.ts";
import { isDigest } from "../manifest/mod.ts";
import { type Artifact, type ContentStore, loadArtifact } from "../store/mod.ts";
import { tailLines } from "../util/fs.ts";
import {
  chooseAccel,
  getAdapter,
  type NetworkSpec,
  type RestoreOptions,
  type StartedVm,
  type VmmAdapter,
} from "../vmm/mod.ts";
import { assertInstanceId, type InstanceState, InstanceStore, newInstanceId } from "./instance.ts";
import { claimInstance, recordRunning, recordTransition, startingState } from "./lifecycle.ts";
import { DEFAULT_MEMORY, type StartedInstance, type StartOptions, stepTimer } from "./options.ts";
import { restoreInstance } from "./restore.ts";
import { releaseInstanceNetwork, setupInstanceNetwork } from "./net.ts";
import type { GuestNicIdentity } from "../system/mod.ts";
import { selectAdapter } from "./select.ts";
import { bootSpec, type HostFiles, hostFiles, type MachineSpec, vmmUser } from "./vm_spec.ts";

/** Boots an artifact; returns once the guest printed its first console output. */
export async function startInstance(
  store: ContentStore,
  ref: string,
  options: StartOptions = {},
): Promise<StartedInstance> {
  const step = stepTimer(options);
  options = { ...options, requestedAt: options.requestedAt ?? Date.now() };
  // A runtime that restores the ramsnap blob itself (a descriptor's
  // --ram-snapshot) gets the blob: it boots through the ordinary path.
  let ramsnap: Omit<RestoreOptions, "signal"> | undefined;
  if (!options.cold) {
    const restored = await store.lease(async () => {
      const artifact = await loadArtifact(store, ref);
      step("resolve manifest");
      const snap = artifact.manifest.ramSnapshot;
      if (!snap) return undefined;
      if (restoresRamsnap(options.runtime)) {
        if (!isDigest(snap.ref)) {
          throw new ValidationError("The artifact's RAM snapshot is a registry reference", {
            hint: "pull the artifact first with 'ovm pull'",
          });
        }
        if ((snap.layers?.length ?? 1) > 1) {
          // The runtime reads one full ramsnap; a chain is built into a template.
          throw new ValidationError(
            `Runtime "${options.runtime}" restores a single RAM snapshot blob; this one is a ` +
              `chain of ${snap.layers!.length} RAM layers (spec 8.6)`,
            { hint: "restore it with a runtime that restores from a memory template" },
          );
        }
        ramsnap = {
          kind: "ram",
          source: store.blobPath(snap.ref),
          preload: snap.preload_hint,
          mlock: snap.mlock_required,
        };
        return undefined;
      }
      return await restoreInstance(store, ref, { artifact, options });
    });
    if (restored) return restored;
  }
  // Until state.json names the artifact, a concurrent gc could take its blobs:
  // hold the store lease from resolving the ref to claiming the instance.
  const claimed = await store.lease(() => claimBoot(store, ref, { options, ramsnap, step }));
  const started = await launch(store, claimed, { options, ramsnap, step });
  await watchBoot(claimed, started, options);
  step("wait for first console output");
  const bootMs = Date.now() - options.requestedAt!;
  const state = await recordTransition(claimed.instances, started.state, {
    ...started.state,
    bootMs,
  });
  return { ...started, state };
}

/** True when `--runtime` names a backend that restores the ramsnap blob itself. */
function restoresRamsnap(runtime: string | undefined): boolean {
  if (!runtime) return false;
  try {
    return getAdapter(runtime).capabilities.restoreFrom.includes("ramsnap");
  } catch {
    return false; // An unknown runtime: selection reports it.
  }
}

interface Claimed {
  artifact: Artifact;
  adapter: VmmAdapter;
  files: HostFiles;
  machine: MachineSpec;
  network: NetworkSpec;
  instances: InstanceStore;
  state: InstanceState;
}

/** Checks the artifact against the selected runtime, resolves its files, claims the instance. */
async function claimBoot(
  store: ContentStore,
  ref: string,
  ctx: { options: StartOptions; ramsnap?: unknown; step: (name: string) => void },
): Promise<Claimed> {
  const { options, step } = ctx;
  const note = options.note ?? (() => {});
  const artifact = await loadArtifact(store, ref);
  step("resolve manifest");
  const m = artifact.manifest;
  if (m.metadata && m.metadata.platform.arch !== "x86_64") {
    throw new ValidationError(`The artifact is for "${m.metadata.platform.arch}"; ovm runs x86_64`);
  }
  if (m.ramSnapshot && !ctx.ramsnap) {
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
  if (options.stdin && !adapter.capabilities.stdin) {
    throw new ValidationError(`Runtime "${adapter.name}" cannot connect the workload's stdin`, {
      hint: "run it with the qemu runtime",
    });
  }
  const accel = await chooseAccel(options.accel ?? "auto");
  if (accel.fallbackReason) note(`using TCG (software emulation): ${accel.fallbackReason}`);
  step("select runtime and accelerator");
  const files = await hostFiles(store, m);
  step("assemble disk chain");
  const id = options.name ? assertInstanceId(options.name) : newInstanceId();
  const instances = new InstanceStore(store.paths.home);
  const machine: MachineSpec = {
    memoryBytes: options.memoryBytes ?? DEFAULT_MEMORY,
    cpus: options.cpus ?? 1,
    accel: accel.accel,
  };
  // The manifest's hint applies when the run names no mode (spec 7.6).
  const mode = options.net ?? m.runtimeHints?.network ?? "user";
  if (mode === "none" && options.publish?.length) {
    throw new ValidationError("-p needs a network: the artifact asks for none (runtimeHints)", {
      hint: "pass --net user or --net bridge",
    });
  }
  const network: NetworkSpec = { mode, publish: options.publish ?? [] };
  const state = startingState({
    id,
    ref,
    artifact,
    adapter: adapter.name,
    kernelVersion: files.kernel.version,
    initrdVersion: files.initrd?.version,
    machine,
    network,
    detach: options.detach,
  });
  await claimInstance(instances, state, { claimed: options.claimed });
  return { artifact, adapter, files, machine, network, instances, state };
}

/** Builds the spec and starts the VM; a failure leaves no instance behind. */
async function launch(
  store: ContentStore,
  c: Claimed,
  ctx: {
    options: StartOptions;
    ramsnap?: Omit<RestoreOptions, "signal">;
    step: (name: string) => void;
  },
): Promise<StartedInstance> {
  const { options, step } = ctx;
  const { adapter, instances } = c;
  const id = c.state.id;
  const home = store.paths.home;
  const runAs = vmmUser(home, id);
  let started: StartedVm | undefined;
  try {
    await Deno.mkdir(instances.paths(id).vmDir, { mode: 0o700 });
    let network = c.network;
    let guestNics: GuestNicIdentity[] = [];
    if (network.mode === "bridge") {
      // The address is leased (durably) before the TAP exists; both are rolled back below.
      const net = await setupInstanceNetwork(home, id, {
        mode: network.mode,
        network: options.network,
        publish: network.publish,
        runAs,
      });
      ({ spec: network, nics: guestNics } = net);
      c.state = { ...c.state, network: net.record };
      await instances.write(c.state);
      step("network: address, TAP, published ports");
    }
    const spec = await bootSpec(store, {
      id,
      artifact: c.artifact,
      files: c.files,
      paths: instances.paths(id),
      machine: c.machine,
      network,
      guestNics,
      runAs,
      detach: options.detach ?? false,
      stdin: options.stdin,
      overrides: { cmd: options.cmd, entrypoint: options.entrypoint, env: options.env },
    });
    step("instance dir, config disk, cmdline");
    await adapter.prepare(spec, { signal: options.signal });
    step("prepare (overlay)");
    started = ctx.ramsnap
      ? await adapter.restore(spec, { ...ctx.ramsnap, signal: options.signal })
      : await adapter.start(spec, { signal: options.signal });
    step("spawn until QMP socket");
    const state = await recordRunning(instances, c.state, started.handle);
    return { state, vm: started, adapter };
  } catch (e) {
    if (started) await adapter.stop(started.handle, { force: true }).catch(() => {});
    // Nothing ran (or it was stopped at once): leave no instance behind.
    await releaseInstanceNetwork(home, id, { release: true }).catch(() => {});
    await instances.remove(id).catch(() => {});
    throw e;
  }
}

/** Waits for the guest's first sign of life; records and throws why there was none. */
async function watchBoot(c: Claimed, started: StartedInstance, options: StartOptions) {
  const { adapter, instances } = c;
  const paths = instances.paths(started.state.id);
  const timeoutMs = options.bootTimeoutMs ?? 60_000;
  const boot = await waitFirstOutput(paths.consoleLog, started.vm, adapter, {
    timeoutMs,
    signal: options.signal,
  });
  if (boot === "output") return;
  await adapter.stop(started.vm.handle, { force: true }).catch(() => {});
  await releaseInstanceNetwork(instances.home, started.state.id).catch(() => {});
  const tail = await tailLines(paths.consoleLog, 20);
  const vmmTail = adapter.logName ? await tailLines(join(paths.vmDir, adapter.logName), 10) : "";
  const reason = boot === "exited"
    ? "the VMM exited before the guest printed anything"
    : boot === "aborted"
    ? "interrupted during boot"
    : `the guest printed nothing on its console and did no disk I/O within ${
      Math.round(timeoutMs / 1000)
    } s`;
  await recordTransition(instances, started.state, {
    ...started.state,
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
      vmmTail ? `${adapter.name} said:\n${vmmTail}` : "",
    ].filter(Boolean).join("\n"),
  });
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
    await new Promise((r) => setTimeout(r, 10));
  }
}
