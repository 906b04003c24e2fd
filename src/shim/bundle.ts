/**
 * @module
 * The OCI runtime bundle containerd hands the shim (`config.json` next to
 * `rootfs/`), read into what a VM needs: the workload (process args, env,
 * cwd, user), hostname, root read-only flag, memory and CPU limits, files
 * to copy into the root (file bind mounts such as CRI's /etc/hosts), and an
 * OVMS artifact named by the `io.ovms.artifact` annotation, and the network
 * named by `io.ovms.net` (or the node's default). A field a VM
 * cannot honour is refused with an error naming it (spec §13.4), never
 * silently dropped.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import type { BootstrapConfig } from "../manifest/mod.ts";
import { parseNetFlag } from "../runtime/mod.ts";
import type { NetMode } from "../vmm/adapter.ts";

/** Annotation naming an OVMS artifact to run instead of the image's root filesystem. */
export const ARTIFACT_ANNOTATION = "io.ovms.artifact";

/** Annotation choosing the task VM's network: `none`, `user`, `bridge[=NETWORK]` (`ovm run --net`). */
export const NET_ANNOTATION = "io.ovms.net";

/** The shim's environment variable holding the node's default network (`ovm shim install --net`). */
export const NET_ENV = "OVM_SHIM_NET";

/** Set by containerd's CRI plugin: `sandbox` (the Pod's pause container) or `container`. */
export const CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type";

/** Paths whose mounts the guest provides itself, whatever the spec binds there (CRI's Pod shm). */
const GUEST_PATHS = new Set(["/dev/shm", "/dev/mqueue", "/dev/pts"]);

/** Mount types the guest kernel provides itself; the spec's entries for them are satisfied. */
const GUEST_FS = new Set(["proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"]);

const MiB = 1024 * 1024;
/** The smallest memory a VM of ovm's kernel and initrd boots in. */
export const MIN_MEMORY = 64 * MiB;

export interface FileCopy {
  /** Host file (a bind mount's source). */
  source: string;
  /** Path inside the root filesystem. */
  destination: string;
}

export interface BundlePlan {
  bootstrap: BootstrapConfig;
  readonly: boolean;
  memoryBytes?: number;
  cpus?: number;
  copies: FileCopy[];
  artifact?: string;
  /** The `io.ovms.net` annotation, parsed; absent: the node's default. */
  net?: TaskNet;
  annotations: Record<string, string>;
}

export interface TaskNet {
  mode: NetMode;
  network?: string;
}

/**
 * Parses a task's network choice with `ovm run --net`'s parser (same forms,
 * same hint); `source` names where the value came from in the message.
 */
export function parseTaskNet(value: string, source: string): TaskNet {
  try {
    return parseNetFlag(value, []);
  } catch (e) {
    throw new ValidationError(`Invalid network "${value}" (${source})`, {
      cause: e,
      hint: e instanceof ValidationError && e.hint ? e.hint : "use none, user or bridge[=NETWORK]",
    });
  }
}

interface OciSpec {
  ociVersion?: string;
  process?: {
    terminal?: boolean;
    user?: { uid?: number; gid?: number; additionalGids?: number[] };
    args?: string[];
    commandLine?: string;
    env?: string[];
    cwd?: string;
  };
  root?: { path?: string; readonly?: boolean };
  hostname?: string;
  mounts?: { destination: string; type?: string; source?: string; options?: string[] }[];
  annotations?: Record<string, string>;
  linux?: {
    resources?: {
      memory?: { limit?: number };
      cpu?: { quota?: number; period?: number; cpus?: string };
      devices?: unknown[];
    };
    devices?: unknown[];
  };
  hooks?: Record<string, unknown[]>;
  windows?: unknown;
  vm?: unknown;
}

function unsupported(field: string, why: string): ValidationError {
  return new ValidationError(
    `The OCI spec field ${field} is not supported by the ovm shim: ${why}`,
    {
      hint: "remove it from the container spec (spec §13.4 lists what a VM honours)",
    },
  );
}

/** Counts the CPUs of a cpuset list such as "0-3,6". */
function countCpuset(s: string): number {
  let n = 0;
  for (const part of s.split(",")) {
    const m = /^\s*(\d+)(?:-(\d+))?\s*$/.exec(part);
    if (!m) throw new ValidationError(`Invalid linux.resources.cpu.cpus "${s}"`);
    n += m[2] ? Number(m[2]) - Number(m[1]) + 1 : 1;
  }
  return n;
}

/** Reads `bundle/config.json` into a plan; throws a ValidationError naming any field it cannot honour. */
export async function readBundle(bundle: string): Promise<BundlePlan> {
  const file = join(bundle, "config.json");
  let spec: OciSpec;
  try {
    spec = JSON.parse(await Deno.readTextFile(file));
  } catch (e) {
    throw new ValidationError(`Cannot read the OCI spec "${file}"`, { cause: e });
  }
  return planFromSpec(spec);
}

export function planFromSpec(spec: OciSpec): BundlePlan {
  const p = spec.process;
  if (!p?.args?.length) throw unsupported("process.args", "it is empty; a VM needs a command");
  if (p.terminal) {
    throw new ValidationError(
      "The OCI spec field process.terminal is not supported by the ovm shim: the workload " +
        "runs with its stdin, stdout and stderr as pipes, not under a TTY",
      {
        hint: "run the task without a terminal (ctr run without -t/--tty; no tty: true in the " +
          "Pod's container, kubectl run without -t); stdin stays connected",
      },
    );
  }
  if (spec.windows) throw unsupported("windows", "ovm runs Linux guests");
  if (spec.vm) throw unsupported("vm", "the shim supplies its own kernel and VMM");
  for (const [name, list] of Object.entries(spec.hooks ?? {})) {
    if (list?.length) throw unsupported(`hooks.${name}`, "hooks run in a container's namespaces");
  }
  if (spec.linux?.devices?.length) {
    throw unsupported("linux.devices", "host devices cannot be passed into the VM");
  }
  const copies: FileCopy[] = [];
  for (const m of spec.mounts ?? []) {
    const type = m.type ?? "";
    const bind = type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
    if (!bind && GUEST_FS.has(type)) continue;
    if (GUEST_PATHS.has(m.destination)) continue;
    if (bind && m.source) {
      let isFile = false;
      try {
        isFile = Deno.statSync(m.source).isFile;
      } catch { /* missing: reported below */ }
      if (isFile) {
        copies.push({ source: m.source, destination: m.destination });
        continue;
      }
      throw unsupported(
        `mounts["${m.destination}"]`,
        `bind mounts of host directories ("${m.source}") cannot be shared into the VM`,
      );
    }
    throw unsupported(`mounts["${m.destination}"]`, `mount type "${type}" has no VM equivalent`);
  }
  // A Pod on the host network gets no spec hostname; CRI's /etc/hostname bind still names it.
  let hostname = spec.hostname;
  const hostnameFile = copies.find((c) => c.destination === "/etc/hostname");
  if (!hostname && hostnameFile) {
    try {
      hostname = Deno.readTextFileSync(hostnameFile.source).trim();
    } catch { /* unreadable: the guest default */ }
  }
  const uid = p.user?.uid ?? 0;
  const gid = p.user?.gid ?? 0;
  const bootstrap: BootstrapConfig = {
    entrypoint: p.args,
    env: (p.env ?? []).filter((e) => /^[^=\0]+=[^\0]*$/.test(e)),
    workdir: p.cwd && p.cwd.startsWith("/") ? p.cwd : "/",
    user: `${uid}:${gid}`,
    exposedPorts: [],
    ...(hostname && /^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$/.test(hostname) ? { hostname } : {}),
  };
  const res = spec.linux?.resources;
  let memoryBytes: number | undefined;
  if (res?.memory?.limit !== undefined && res.memory.limit > 0) {
    memoryBytes = Math.ceil(res.memory.limit / MiB) * MiB;
    if (memoryBytes < MIN_MEMORY) {
      throw new ValidationError(
        `Memory limit ${res.memory.limit} bytes is below the ${MIN_MEMORY / MiB} MiB a VM needs`,
        { hint: "raise the container's memory limit" },
      );
    }
  }
  let cpus: number | undefined;
  if (res?.cpu?.quota && res.cpu.quota > 0) {
    cpus = Math.max(1, Math.ceil(res.cpu.quota / (res.cpu.period || 100_000)));
  } else if (res?.cpu?.cpus) {
    cpus = countCpuset(res.cpu.cpus);
  }
  const annotations = spec.annotations ?? {};
  return {
    bootstrap,
    readonly: spec.root?.readonly ?? false,
    memoryBytes,
    cpus,
    copies,
    artifact: annotations[ARTIFACT_ANNOTATION] || undefined,
    ...(annotations[NET_ANNOTATION] !== undefined
      ? { net: parseTaskNet(annotations[NET_ANNOTATION], `annotation ${NET_ANNOTATION}`) }
      : {}),
    annotations,
  };
}
