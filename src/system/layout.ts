/**
 * @module
 * Where system images live under `$OVM_HOME/system/` and the metadata file
 * next to each. A version directory appears only complete: it is assembled
 * in `system/.tmp-*` and renamed into place, metadata written last.
 */
import { join } from "node:path";
import { z } from "zod";
import { NotFoundError, ValidationError } from "../errors.ts";
import { homePaths } from "../store/mod.ts";
import { exists } from "../util/fs.ts";
import { SYSTEM_ARCH } from "./versions.ts";

/** One installed kernel or initrd image. */
export interface SystemImage {
  version: string;
  arch: string;
  path: string;
  digest: `sha256:${string}`;
  size: number;
}

/** The kernel and initrd a VM boots with. */
export interface SystemSet {
  kernel: SystemImage;
  initrd: SystemImage & { kernelVersion: string };
}

export const VERSION_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

const Sha256Hex = z.string().regex(/^[a-f0-9]{64}$/);
const Digest = z.string().regex(/^sha256:[a-f0-9]{64}$/);

export const KernelSourceSchema = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("debian"),
    package: z.string(),
    packageVersion: z.string().optional(),
    sha256: Sha256Hex,
  }),
  z.object({ type: z.literal("deb-file"), path: z.string(), sha256: Sha256Hex }),
  z.object({ type: z.literal("url"), url: z.string(), sha256: Sha256Hex }),
  z.object({ type: z.literal("file"), path: z.string(), sha256: Sha256Hex }),
]);
export type KernelSource = z.infer<typeof KernelSourceSchema>;

export const ModuleEntrySchema = z.object({
  name: z.string(),
  /** Path under the kernel's `modules/` directory (and under `/lib/modules/<version>/` in the initrd). */
  path: z.string(),
  digest: Digest,
  depends: z.array(z.string()),
});
export type ModuleEntry = z.infer<typeof ModuleEntrySchema>;

export const KernelMetaSchema = z.object({
  kind: z.literal("kernel"),
  version: z.string().regex(VERSION_RE),
  arch: z.string(),
  file: z.literal("vmlinuz"),
  digest: Digest,
  size: z.number().int().nonnegative(),
  source: KernelSourceSchema,
  /** In load order (dependencies first). Empty for a kernel with everything built in. */
  modules: z.array(ModuleEntrySchema),
  /** Needed modules the kernel has built in. */
  builtin: z.array(z.string()),
  /** True for kernels added without a module tree: the guest drivers must be built in. */
  assumeBuiltin: z.boolean().default(false),
  created: z.string(),
});
export type KernelMeta = z.infer<typeof KernelMetaSchema>;

export const InitrdMetaSchema = z.object({
  kind: z.literal("initrd"),
  version: z.string().regex(VERSION_RE),
  arch: z.string(),
  file: z.literal("initrd"),
  digest: Digest,
  size: z.number().int().nonnegative(),
  kernelVersion: z.string(),
  /** Everything that went into the archive; equal inputs give an equal digest. */
  inputs: z.object({
    initVersion: z.string(),
    kernelDigest: Digest,
    ovmsInit: Digest,
    busybox: z.object({ path: z.string(), digest: Digest, package: z.string().optional() }),
    modules: z.array(z.object({ name: z.string(), digest: Digest })),
  }),
  created: z.string(),
});
export type InitrdMeta = z.infer<typeof InitrdMetaSchema>;

export type SystemKind = "kernel" | "initrd";

export function systemDir(home: string): string {
  return homePaths(home).system;
}

/** `system/<kind>/<version>/<arch>`. */
export function imageDir(home: string, kind: SystemKind, version: string, arch = SYSTEM_ARCH) {
  return join(systemDir(home), kind, version, arch);
}

export function metaPath(dir: string, kind: SystemKind): string {
  return join(dir, `${kind}.json`);
}

export function assertVersion(version: string, what = "version"): string {
  if (!VERSION_RE.test(version)) {
    throw new ValidationError(`Invalid ${what} "${version}"`, {
      hint: "use letters, digits, '.', '_', '+' and '-' (for a kernel: its `uname -r`)",
    });
  }
  return version;
}

async function readMeta<T>(path: string, schema: z.ZodType<T>): Promise<T | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  const r = schema.safeParse(JSON.parse(text));
  if (!r.success) {
    throw new ValidationError(`System metadata "${path}" is not valid`, {
      cause: r.error,
      hint: "remove that version with 'ovm system rm' and add it again",
    });
  }
  return r.data;
}

export function readKernelMeta(home: string, version: string, arch = SYSTEM_ARCH) {
  return readMeta(metaPath(imageDir(home, "kernel", version, arch), "kernel"), KernelMetaSchema);
}

export function readInitrdMeta(home: string, version: string, arch = SYSTEM_ARCH) {
  return readMeta(metaPath(imageDir(home, "initrd", version, arch), "initrd"), InitrdMetaSchema);
}

export async function requireKernelMeta(
  home: string,
  version: string,
  arch = SYSTEM_ARCH,
): Promise<KernelMeta> {
  const m = await readKernelMeta(home, assertVersion(version, "kernel version"), arch);
  if (!m) {
    throw new NotFoundError(`Kernel version "${version}" (${arch}) is not installed`, {
      hint: "list kernels with 'ovm system ls'; add one with 'ovm system kernel add <source>'",
    });
  }
  return m;
}

/** Every installed kernel and initrd (complete ones: metadata present). */
export async function listSystem(
  home: string,
): Promise<{ kernels: KernelMeta[]; initrds: InitrdMeta[] }> {
  const kernels: KernelMeta[] = [];
  const initrds: InitrdMeta[] = [];
  for (const kind of ["kernel", "initrd"] as const) {
    const base = join(systemDir(home), kind);
    if (!(await exists(base))) continue;
    const versions: string[] = [];
    for await (const e of Deno.readDir(base)) if (e.isDirectory) versions.push(e.name);
    for (const v of versions.sort()) {
      for await (const a of Deno.readDir(join(base, v))) {
        if (!a.isDirectory) continue;
        if (kind === "kernel") {
          const m = await readKernelMeta(home, v, a.name);
          if (m) kernels.push(m);
        } else {
          const m = await readInitrdMeta(home, v, a.name);
          if (m) initrds.push(m);
        }
      }
    }
  }
  return { kernels, initrds };
}

/**
 * Removes staging directories (`system/.tmp-*`) a crashed build left behind.
 * Only old ones: a concurrent build may be using a fresh one.
 */
export async function sweepStaging(home: string, maxAgeMs = 60 * 60 * 1000): Promise<void> {
  const dir = systemDir(home);
  if (!(await exists(dir))) return;
  const now = Date.now();
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.startsWith(".tmp-")) continue;
    const p = join(dir, e.name);
    try {
      const st = await Deno.lstat(p);
      if (now - (st.mtime?.getTime() ?? now) > maxAgeMs) await Deno.remove(p, { recursive: true });
    } catch { /* raced with its owner */ }
  }
}
