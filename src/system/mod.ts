/**
 * @module
 * The system manager: versioned guest kernels and initrds under
 * `$OVM_HOME/system/`, the kernel command line ovms-init reads, and the
 * config disk it takes the bootstrap config from. `ensureSystem` is what
 * `ovm run` calls: it returns the default kernel and initrd, fetching and
 * building them the first time.
 */
import { join } from "node:path";
import { ConflictError, NotFoundError } from "../errors.ts";
import { homePaths } from "../store/mod.ts";
import { exists } from "../util/fs.ts";
import { addKernel } from "./kernel.ts";
import { buildInitrd, readInitSources } from "./initrd.ts";
import { digestOf } from "../manifest/mod.ts";
import {
  assertVersion,
  imageDir,
  type InitrdMeta,
  type KernelMeta,
  listSystem,
  readInitrdMeta,
  readKernelMeta,
  sweepStaging,
  systemDir,
  type SystemImage,
  type SystemSet,
} from "./layout.ts";
import { DEFAULT_KERNEL, initrdVersionFor, SYSTEM_ARCH } from "./versions.ts";

export { initCmdline, type InitCmdlineOptions } from "./cmdline.ts";
export { EXIT_LINE_RE, InitExitCodes, type InitOutcome, parseConsole } from "./console.ts";
export { buildConfigDisk, DEFAULT_PATH, renderConfigFiles, shellQuote } from "./config_disk.ts";
export { addKernel, type AddKernelOptions, parseKernelSource } from "./kernel.ts";
export { buildInitrd, type BuildInitrdOptions } from "./initrd.ts";
export { type GuestIdentity, type GuestNicIdentity, identityDocument } from "./identity.ts";
export {
  imageDir,
  type InitrdMeta,
  type KernelMeta,
  listSystem,
  readInitrdMeta,
  readKernelMeta,
  requireKernelMeta,
  type SystemImage,
  type SystemSet,
} from "./layout.ts";
export { type CpioEntry, writeCpio } from "./cpio.ts";
export {
  assertSnapshotSystem,
  snapshotUsing,
  SystemAnnotations,
  systemAnnotations,
  type SystemRecord,
  systemRecord,
} from "./snapshot.ts";
export {
  DEFAULT_KERNEL,
  initrdVersionFor,
  OVMS_INIT_VERSION,
  REQUIRED_MODULES,
  SYSTEM_ARCH,
} from "./versions.ts";

export interface EnsureSystemOptions {
  signal?: AbortSignal;
  onProgress?: (msg: string) => void;
  /** Where downloads are cached (default `$OVM_HOME/cache`). */
  cacheDir?: string;
  /** A kernel version other than the default; it must be installed already. */
  kernelVersion?: string;
}

function kernelImage(home: string, m: KernelMeta): SystemImage {
  return {
    version: m.version,
    arch: m.arch,
    path: join(imageDir(home, "kernel", m.version, m.arch), m.file),
    digest: m.digest as `sha256:${string}`,
    size: m.size,
  };
}

function initrdImage(home: string, m: InitrdMeta): SystemImage & { kernelVersion: string } {
  return {
    version: m.version,
    arch: m.arch,
    path: join(imageDir(home, "initrd", m.version, m.arch), m.file),
    digest: m.digest as `sha256:${string}`,
    size: m.size,
    kernelVersion: m.kernelVersion,
  };
}

/**
 * Returns the default kernel and initrd, fetching the kernel and building the
 * initrd when missing. When both are present it only reads their metadata.
 */
export async function ensureSystem(
  home: string,
  options: EnsureSystemOptions = {},
): Promise<SystemSet> {
  const kv = options.kernelVersion ?? DEFAULT_KERNEL.version;
  let kernel = await readKernelMeta(home, assertVersion(kv, "kernel version"));
  if (!kernel) {
    await sweepStaging(home);
    if (options.kernelVersion !== undefined && kv !== DEFAULT_KERNEL.version) {
      throw new NotFoundError(`Kernel version "${kv}" is not installed`, {
        hint: "add it with 'ovm system kernel add <source>'",
      });
    }
    try {
      kernel = await addKernel(home, `debian:${DEFAULT_KERNEL.debianPackage}`, options);
    } catch (e) {
      // Another ensure may have won the race; its result is as good as ours.
      kernel = await readKernelMeta(home, kv);
      if (!kernel) throw e;
    }
  }
  const iv = initrdVersionFor(kernel.version);
  let initrd = await readInitrdMeta(home, iv);
  if (initrd && options.onProgress) {
    // Same version, different script: someone edited ovms-init without bumping OVMS_INIT_VERSION.
    const current = digestOf((await readInitSources()).init);
    if (current !== initrd.inputs.ovmsInit) {
      options.onProgress(
        `warning: initrd ${iv} was built from another ovms-init; ` +
          `rebuild it with 'ovm system initrd build --force'`,
      );
    }
  }
  if (!initrd) {
    try {
      initrd = await buildInitrd(home, kernel.version, options);
    } catch (e) {
      initrd = await readInitrdMeta(home, iv);
      if (!initrd) throw e;
    }
  }
  return { kernel: kernelImage(home, kernel), initrd: initrdImage(home, initrd) };
}

/** The system image set of installed versions, for `ovm run` with explicit versions. */
export async function loadSystem(
  home: string,
  versions: { kernel: string; initrd: string },
): Promise<SystemSet> {
  const k = await readKernelMeta(home, assertVersion(versions.kernel, "kernel version"));
  const i = await readInitrdMeta(home, assertVersion(versions.initrd, "initrd version"));
  if (!k || !i) {
    throw new NotFoundError(
      `System version "${!k ? versions.kernel : versions.initrd}" is not installed`,
      { hint: "list versions with 'ovm system ls'" },
    );
  }
  return { kernel: kernelImage(home, k), initrd: initrdImage(home, i) };
}

/** An instance that booted with a system version (from `instances/<id>/state.json`). */
export interface SystemUser {
  instance: string;
  field: "kernelVersion" | "initrdVersion";
}

/** Instances whose `state.json` names `version` as their kernel or initrd version. */
export async function instancesUsing(home: string, version: string): Promise<SystemUser[]> {
  const dir = homePaths(home).instances;
  const users: SystemUser[] = [];
  if (!(await exists(dir))) return users;
  for await (const e of Deno.readDir(dir)) {
    if (!e.isDirectory) continue;
    let state: Record<string, unknown>;
    try {
      state = JSON.parse(await Deno.readTextFile(join(dir, e.name, "state.json")));
    } catch {
      continue; // Being created or removed: no state yet, nothing booted.
    }
    for (const field of ["kernelVersion", "initrdVersion"] as const) {
      if (state[field] === version) users.push({ instance: e.name, field });
    }
  }
  return users.sort((a, b) => a.instance.localeCompare(b.instance));
}

/**
 * Removes a kernel and/or initrd version. Refused while an instance uses it;
 * removing a kernel is also refused while an installed initrd was built from it.
 * `isUsedByArtifact` lets the caller add the stored-snapshot check (spec §6.6).
 */
export async function removeSystemVersion(
  home: string,
  version: string,
  options: { isUsedByArtifact?: (version: string) => Promise<string | undefined> } = {},
): Promise<{ removed: { kind: "kernel" | "initrd"; version: string }[] }> {
  assertVersion(version);
  const { kernels, initrds } = await listSystem(home);
  const hasKernel = kernels.some((k) => k.version === version);
  const hasInitrd = initrds.some((i) => i.version === version);
  const kernelDirExists = await exists(join(systemDir(home), "kernel", version));
  const initrdDirExists = await exists(join(systemDir(home), "initrd", version));
  if (!hasKernel && !hasInitrd && !kernelDirExists && !initrdDirExists) {
    throw new NotFoundError(`System version "${version}" is not installed`, {
      hint: "list versions with 'ovm system ls'",
    });
  }
  const users = await instancesUsing(home, version);
  if (users.length) {
    throw new ConflictError(
      `System version "${version}" is in use by instance${users.length > 1 ? "s" : ""} ${
        users.map((u) => `"${u.instance}"`).join(", ")
      }`,
      { hint: "remove those instances first ('ovm rm <instance>')" },
    );
  }
  const artifact = await options.isUsedByArtifact?.(version);
  if (artifact) {
    throw new ConflictError(
      `System version "${version}" is needed to restore the stored snapshot "${artifact}"`,
      { hint: "remove that artifact first, or keep this version" },
    );
  }
  if (hasKernel) {
    const built = initrds.filter((i) => i.kernelVersion === version && i.version !== version);
    if (built.length) {
      throw new ConflictError(
        `Kernel version "${version}" is used by initrd ${
          built.map((i) => `"${i.version}"`).join(", ")
        }`,
        { hint: `remove the initrd first: 'ovm system rm ${built[0].version}'` },
      );
    }
  }
  const removed: { kind: "kernel" | "initrd"; version: string }[] = [];
  for (const kind of ["initrd", "kernel"] as const) {
    const dir = join(systemDir(home), kind, version);
    if (!(await exists(dir))) continue;
    // Rename first so a reader never sees a half-deleted version.
    const tmp = join(systemDir(home), `.tmp-rm-${kind}-${version}-${Date.now()}`);
    await Deno.rename(dir, tmp);
    await Deno.remove(tmp, { recursive: true });
    removed.push({ kind, version });
  }
  return { removed };
}

export const DEFAULT_ARCH = SYSTEM_ARCH;
