/**
 * @module
 * Names the shim derives from what containerd passes: the ttrpc socket
 * (under containerd's state directory, like containerd's own shims), the ovm
 * instance that runs the task's VM, and the local ref of the artifact built
 * for it. All are pure functions of (namespace, container id, bundle), so
 * `start`, the serving shim and a later `delete` agree without shared state.
 */
import { basename, dirname, join } from "node:path";
import { sha256Hex } from "../manifest/mod.ts";

/** The directory containerd keeps task bundles in, under its state directory. */
export const TASK_DIR = "io.containerd.runtime.v2.task";

/**
 * containerd's state directory, from a bundle at
 * `<state>/io.containerd.runtime.v2.task/<namespace>/<id>`; `/run/containerd`
 * (containerd's default) for a bundle elsewhere.
 */
export function stateDirOf(bundle: string): string {
  const nsDir = dirname(bundle);
  const taskDir = dirname(nsDir);
  return basename(taskDir) === TASK_DIR ? dirname(taskDir) : "/run/containerd";
}

/** Unique per containerd (its state dir), namespace and id: ids repeat across containerds. */
function key(bundle: string, namespace: string, id: string): string {
  return sha256Hex(`${stateDirOf(bundle)}\0${namespace}/${id}`);
}

/** The shim's ttrpc socket: `<state>/s/<hash>` (short enough for sun_path). */
export function shimSocketPath(bundle: string, namespace: string, id: string): string {
  return join(stateDirOf(bundle), "s", key(bundle, namespace, id).slice(0, 32));
}

/**
 * The ovm instance (and VM) of a task. Guest RAM files in /dev/shm are named
 * by instance id on the whole host, so the id folds in which containerd it is.
 */
export function taskInstanceId(bundle: string, namespace: string, id: string): string {
  return `ctd-${key(bundle, namespace, id).slice(0, 20)}`;
}

/** The local ref of the artifact the shim builds from a task's root filesystem. */
export function taskArtifactRef(bundle: string, namespace: string, id: string): string {
  return `ovm-shim/${taskInstanceId(bundle, namespace, id)}:task`;
}
