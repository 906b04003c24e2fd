/**
 * @module
 * Instances from any ovm process: read (brought up to date by asking the VM,
 * never writing), list, stop, remove, wait for, and the writes every start
 * shares (claim the id, record the VM running). Each write is a transition
 * of the state machine (`state_machine.ts`); an end that a read observed (the
 * VM died, the guest powered off) is recorded by the next write.
 */
import { join } from "node:path";
import { OvmError } from "../errors.ts";
import type { Digest } from "../manifest/mod.ts";
import type { Artifact } from "../store/mod.ts";
import { pidAlive } from "../process/mod.ts";
import { tailLines } from "../util/fs.ts";
import { getAdapter, type NetworkSpec, type VmHandle, type VmState } from "../vmm/mod.ts";
import { consoleExitCode, guestPoweredOff } from "./console.ts";
import { assertInstanceId, type InstanceState, InstanceStore, isActive } from "./instance.ts";
import { assertAllowed, canTransition } from "./state_machine.ts";
import type { MachineSpec } from "./vm_spec.ts";
import { releaseInstanceNetwork } from "./net.ts";

/** Writes `next` over `prev`, refusing a transition the state machine does not have. */
export async function recordTransition(
  instances: InstanceStore,
  prev: InstanceState,
  next: InstanceState,
): Promise<InstanceState> {
  if (!canTransition(prev.state, next.state)) {
    throw new OvmError(
      `Instance "${prev.id}" cannot go from ${prev.state} to ${next.state} (an ovm bug)`,
    );
  }
  await instances.write(next);
  return next;
}

/** The `state.json` of an instance whose VM is about to start. */
export function startingState(options: {
  id: string;
  ref: string;
  artifact: Artifact;
  adapter: string;
  kernelVersion?: string;
  initrdVersion?: string;
  machine: MachineSpec;
  network: NetworkSpec;
  detach?: boolean;
}): InstanceState {
  const m = options.artifact.manifest;
  return {
    schemaVersion: 1,
    id: options.id,
    ref: options.ref,
    manifestDigest: options.artifact.descriptor.digest as Digest,
    name: m.name,
    version: m.version,
    adapter: options.adapter,
    state: "starting",
    kernelDigest: m.kernel.ref as Digest,
    kernelVersion: options.kernelVersion,
    ...(m.initrd
      ? { initrdDigest: m.initrd.ref as Digest, initrdVersion: options.initrdVersion }
      : {}),
    accel: options.machine.accel,
    memoryBytes: options.machine.memoryBytes,
    cpus: options.machine.cpus,
    network: { mode: options.network.mode, publish: options.network.publish },
    devices: [],
    detached: options.detach ?? false,
    createdAt: new Date().toISOString(),
    ownerPid: Deno.pid,
  };
}

/**
 * Claims the instance's id (exclusively) and writes its starting state; with
 * `claimed`, the caller claimed the id already (`InstanceStore.claim`), and
 * the state replaces the claim.
 */
export async function claimInstance(
  instances: InstanceStore,
  state: InstanceState,
  options: { claimed?: boolean } = {},
): Promise<void> {
  if (!options.claimed) await instances.create(state.id);
  try {
    await instances.write(state);
    if (options.claimed) await Deno.remove(instances.paths(state.id).claim).catch(() => {});
  } catch (e) {
    await instances.remove(state.id).catch(() => {});
    throw e;
  }
}

/** Records the instance's VM running (starting → running), with the start's duration. */
export async function recordRunning(
  instances: InstanceStore,
  state: InstanceState,
  handle: VmHandle,
  timing: { bootMs?: number; restored?: boolean } = {},
): Promise<InstanceState> {
  return await recordTransition(instances, state, {
    ...state,
    state: "running",
    pid: handle.pid,
    qmpSocket: handle.controlSocket,
    devices: handle.devices,
    startedAt: new Date().toISOString(),
    vm: handle,
    ...timing,
  });
}

/** When an ended instance stopped, as far as a read can tell: its console's last write. */
async function endTime(home: string, state: InstanceState): Promise<string> {
  const st = await Deno.stat(new InstanceStore(home).paths(state.id).consoleLog).catch(() => null);
  return (st?.mtime ?? new Date()).toISOString();
}

/** How an instance whose VM process is gone ended (derived from its console; writes nothing). */
async function endedState(
  home: string,
  current: InstanceState,
  exit?: { code: number; signal?: string },
): Promise<InstanceState> {
  const paths = new InstanceStore(home).paths(current.id);
  const exitCode = await consoleExitCode(paths.consoleLog);
  const poweredOff = await guestPoweredOff(paths.consoleLog);
  let next: InstanceState;
  if (current.state === "stopping") {
    const how = poweredOff ? "the guest powered off" : "the VMM ended";
    next = {
      ...current,
      state: "stopped",
      reason: `${current.reason ?? "stopped by ovm"} (${how})`,
    };
  } else if (poweredOff && !exit?.signal) {
    next = { ...current, state: "stopped", reason: "the guest powered off" };
  } else {
    const how = exit?.signal
      ? `was killed by ${exit.signal}`
      : exit
      ? `exited with code ${exit.code}`
      : "ended without the guest powering off (killed?)";
    const log = getAdapter(current.adapter).logName;
    const vmmTail = log ? await tailLines(join(paths.vmDir, log), 3) : "";
    next = {
      ...current,
      state: "error",
      reason: `the ${current.adapter} process (pid ${current.pid}) ${how}` +
        (vmmTail ? `: ${vmmTail.replaceAll("\n", " | ")}` : ""),
    };
  }
  return {
    ...next,
    stoppedAt: exit ? new Date().toISOString() : await endTime(home, current),
    ...(exitCode !== undefined ? { exitCode } : {}),
  };
}

/**
 * The instance as it is now: the recorded state, brought up to date by
 * asking its VM. Writes no state: a VM that died is reported stopped or
 * error (with why) until a write records it. The host files of a VM that is
 * verified gone (shm files, sockets) are released.
 */
export async function observeInstance(home: string, state: InstanceState): Promise<InstanceState> {
  if (!isActive(state)) return state;
  if (!state.vm) {
    // Still starting: fine while the ovm that starts it lives.
    if (state.ownerPid && !pidAlive(state.ownerPid)) {
      return {
        ...state,
        state: "error",
        reason: `ovm (pid ${state.ownerPid}) exited while starting the VM`,
        stoppedAt: await endTime(home, state),
      };
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
    return live === state.state ? state : { ...state, state: live };
  }
  await adapter.stop(state.vm).catch(() => {});
  // The VM is gone: so are its TAPs and published ports (its address stays until rm).
  await releaseInstanceNetwork(home, state.id).catch(() => {});
  return await endedState(home, state);
}

/** Records what {@linkcode observeInstance} sees, when it is an end (the writers call it first). */
async function settle(home: string, id: string): Promise<InstanceState> {
  const instances = new InstanceStore(home);
  const recorded = await instances.read(assertInstanceId(id));
  const now = await observeInstance(home, recorded);
  if (isActive(now) || !isActive(recorded)) return now;
  return await recordTransition(instances, recorded, now);
}

export async function getInstance(home: string, id: string): Promise<InstanceState> {
  return await observeInstance(home, await new InstanceStore(home).read(assertInstanceId(id)));
}

export async function listInstances(home: string): Promise<InstanceState[]> {
  const out: InstanceState[] = [];
  for (const s of await new InstanceStore(home).list()) out.push(await observeInstance(home, s));
  return out;
}

/** Waits for a VM this process started and records how it ended. */
export async function waitInstance(
  home: string,
  started: { state: InstanceState; vm: { exited: Promise<{ code: number; signal?: string }> } },
): Promise<InstanceState> {
  const exit = await started.vm.exited;
  const instances = new InstanceStore(home);
  // Re-read: another ovm (a `stop`) may have recorded why it ended.
  const current = await instances.read(started.state.id).catch(() => started.state);
  if (!isActive(current)) return current;
  if (current.vm) await getAdapter(current.adapter).stop(current.vm).catch(() => {});
  await releaseInstanceNetwork(home, current.id).catch(() => {});
  return await recordTransition(instances, current, await endedState(home, current, exit));
}

/** Stops a VM: guest power-off within `timeoutMs`, then forced. An ended instance is returned as is. */
export async function stopInstance(
  home: string,
  id: string,
  options: { timeoutMs?: number; force?: boolean; reason?: string } = {},
): Promise<InstanceState> {
  const instances = new InstanceStore(home);
  let state = await settle(home, id);
  if (!isActive(state) || !state.vm) return state;
  const adapter = getAdapter(state.adapter);
  state = await recordTransition(instances, state, {
    ...state,
    state: "stopping",
    reason: options.reason ?? "stopped by 'ovm stop'",
  });
  const res = await adapter.stop(state.vm!, {
    timeoutMs: options.timeoutMs,
    force: options.force,
  });
  await releaseInstanceNetwork(home, id).catch(() => {});
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
  return await recordTransition(instances, cur, {
    ...cur,
    state: "stopped",
    reason: `${cur.reason ?? "stopped"} (${how})`,
    stoppedAt: new Date().toISOString(),
    ...(exitCode !== undefined ? { exitCode } : {}),
  });
}

/** Removes an ended instance (with `force`, stops it first). */
export async function removeInstance(
  home: string,
  id: string,
  options: { force?: boolean } = {},
): Promise<void> {
  const state = await settle(home, id);
  if (isActive(state)) {
    if (!options.force) assertAllowed(id, state.state, "remove");
    await stopInstance(home, id, { timeoutMs: 3000, reason: "removed by 'ovm rm -f'" });
  }
  await releaseInstanceNetwork(home, id, { release: true });
  await new InstanceStore(home).remove(id);
}
