/**
 * @module
 * VMM processes, the same for every backend: launch (through
 * `src/process/`, the one module that spawns) in its own session with its
 * output appended to a log, wait until it is ready (its control socket
 * exists, or answers, or it survived a grace period), tell whether the very
 * process of a handle still runs (pid plus start time, never a recycled
 * pid), wait for it to go, and end it: a signal, then SIGKILL.
 */
import { VmmError } from "../errors.ts";
import {
  type PassedFile,
  type ProcessHandle,
  processStartTime,
  run,
  signalPid,
  spawn,
} from "../process/mod.ts";
import { exists, tailLines } from "../util/fs.ts";
import type { DeviceStatus, StartedVm, VmHandle } from "./adapter.ts";

/** How a launch knows the VMM is up. */
export type Readiness =
  /** The control socket file exists (QEMU creates QMP's during startup). */
  | { socket: string; connect?: false; timeoutMs?: number }
  /** The control socket accepts a connection (REST API VMMs). */
  | { socket: string; connect: true; timeoutMs?: number }
  /** No control channel: the binary did not exit within `graceMs` (CLI runtimes). */
  | { graceMs: number };

export interface LaunchOptions {
  args: string[];
  cwd: string;
  /** Where the VMM's stdout and stderr are appended (its log; a CLI runtime's console). */
  outputFile: string;
  ready: Readiness;
  /** Files the wrapper opens for the VMM (see `SpawnOptions.passFiles`). */
  passFiles?: PassedFile[];
  /** Run the VMM as this user. */
  runAs?: { uid: number; gid: number };
  /** Recorded in the handle: removed once the VM is gone. */
  runtimeFiles?: string[];
  devices?: DeviceStatus[];
  /** Descriptors the VMM inherits at the same numbers (a TAP queue; `SpawnOptions.inheritFds`). */
  inheritFds?: number[];
  /** The VMM's stdin (`SpawnOptions.stdinFile`): the guest's stdin port reads it. */
  stdinFile?: string;
  /** Called once the process ended (after `exited` settles for the launcher). */
  onExit?: () => void;
  signal?: AbortSignal;
}

/** A launched VMM: the {@linkcode StartedVm} plus the process (for backends that need it). */
export interface LaunchedVmm extends StartedVm {
  proc: ProcessHandle;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Starts `bin args` in its own session (so it outlives ovm and terminal
 * signals) and waits until it is ready. A VMM that exits first, or is not
 * ready in time, is a VmmError carrying the tail of its output; its runtime
 * files are removed.
 */
export async function launchVmm(
  adapter: string,
  bin: string,
  options: LaunchOptions,
): Promise<LaunchedVmm> {
  const ready = options.ready;
  if ("socket" in ready) await Deno.remove(ready.socket).catch(() => {});
  const proc = spawn(bin, options.args, {
    cwd: options.cwd,
    passFiles: options.passFiles,
    dropTo: options.runAs,
    newSession: true,
    outputFile: options.outputFile,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    inheritFds: options.inheritFds,
    stdinFile: options.stdinFile,
  });
  const handle: VmHandle = {
    adapter,
    pid: proc.pid,
    pidStartTime: await processStartTime(proc.pid),
    controlSocket: "socket" in ready ? ready.socket : "",
    runtimeFiles: options.runtimeFiles ?? [],
    devices: options.devices ?? [],
    argv: [bin, ...options.args],
  };
  const exited = proc.status.then((s) => {
    options.onExit?.();
    return { code: s.code, ...(s.signal ? { signal: s.signal } : {}) };
  });
  const fail = async (message: string, stop: boolean) => {
    if (stop) await proc.stop(1000);
    await removeRuntimeFiles(handle);
    const tail = await tailLines(options.outputFile, 20);
    return new VmmError(adapter, "start", message, {
      hint: tail ? `it said:\n${tail}` : "it printed nothing",
    });
  };
  const timeoutMs = "socket" in ready ? ready.timeoutMs ?? 15_000 : ready.graceMs;
  const deadline = Date.now() + timeoutMs;
  while (true) {
    if (proc.exited) {
      throw await fail(`${bin} exited at once with code ${proc.exited.code}`, false);
    }
    if (options.signal?.aborted) {
      await fail("aborted", true);
      throw options.signal.reason;
    }
    if ("socket" in ready) {
      if (await socketReady(ready.socket, ready.connect === true)) break;
      if (Date.now() > deadline) {
        throw await fail(
          `${bin} did not open its control socket within ${timeoutMs / 1000} s`,
          true,
        );
      }
      await sleep(5);
    } else {
      if (Date.now() > deadline) break;
      await sleep(10);
    }
  }
  return { handle, exited, proc, release: () => proc.child.unref() };
}

async function socketReady(path: string, connect: boolean): Promise<boolean> {
  if (!connect) return await exists(path);
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** True while the handle's process (the same one, not a recycled pid) runs. */
export async function vmmAlive(handle: VmHandle): Promise<boolean> {
  const st = await processStartTime(handle.pid);
  if (st === undefined) return false;
  return handle.pidStartTime === undefined || st === handle.pidStartTime;
}

/** Waits up to `ms` for the handle's process to end; true once it has. */
export async function waitGone(handle: VmHandle, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await vmmAlive(handle))) return true;
    await sleep(50);
  }
  return !(await vmmAlive(handle));
}

/**
 * Ends the handle's process: `signal` (default SIGTERM), then SIGKILL after
 * `graceMs` (default 2 s). Says which one ended it; throws when even
 * SIGKILL did not within 5 s.
 */
export async function terminate(
  adapter: string,
  handle: VmHandle,
  options: { signal?: Deno.Signal; graceMs?: number } = {},
): Promise<"signal" | "killed"> {
  signalPid(handle.pid, options.signal ?? "SIGTERM");
  if (await waitGone(handle, options.graceMs ?? 2000)) return "signal";
  signalPid(handle.pid, "SIGKILL");
  if (!(await waitGone(handle, 5000))) {
    throw new VmmError(adapter, "stop", `process ${handle.pid} survived SIGKILL`);
  }
  return "killed";
}

/** Removes the files that exist only while the VM runs (shm files). */
export async function removeRuntimeFiles(handle: VmHandle): Promise<void> {
  for (const f of handle.runtimeFiles) await Deno.remove(f).catch(() => {});
}

/** `<bin> --version` → "53.0" from "cloud-hypervisor v53.0" or "Firecracker v1.17.0"; "unknown" otherwise. */
export async function probeVersion(bin: string, args = ["--version"]): Promise<string> {
  const r = await run(bin, args, { allowFailure: true }).catch(() => undefined);
  const m = r ? /\bv?(\d+\.\d+(?:\.\d+)?(?:-[\w.]+)?)/.exec(r.stdout + r.stderr) : null;
  return m?.[1] ?? "unknown";
}
