/**
 * @module
 * Builds the initrd: static busybox, the kernel's guest modules (from the
 * kernel directory, in load order) and `ovms-init` as `/init`, packed as a
 * reproducible newc cpio and gzip-compressed. Equal inputs give an equal
 * digest: entries are sorted, mtimes 0, owners 0:0, and gzip writes no
 * name or time.
 */
import { join } from "node:path";
import { NotFoundError, OvmError } from "../errors.ts";
import { digestFile, digestOf } from "../manifest/mod.ts";
import { run } from "../process/mod.ts";
import { exists, uniqueTempName, writeJsonAtomic } from "../util/fs.ts";
import { type CpioEntry, writeCpio } from "./cpio.ts";
import { fetchDebianPackage, installDir } from "./kernel.ts";
import {
  assertVersion,
  imageDir,
  type InitrdMeta,
  InitrdMetaSchema,
  type KernelMeta,
  metaPath,
  readInitrdMeta,
  requireKernelMeta,
  systemDir,
} from "./layout.ts";
import { DEFAULT_BUSYBOX, initrdVersionFor, OVMS_INIT_VERSION, SYSTEM_ARCH } from "./versions.ts";

export interface BuildInitrdOptions {
  /** Defaults to {@linkcode initrdVersionFor}(kernelVersion). */
  version?: string;
  /** A static busybox binary; default `/bin/busybox`, else Debian's busybox-static is fetched. */
  busybox?: string;
  cacheDir?: string;
  force?: boolean;
  signal?: AbortSignal;
  onProgress?: (msg: string) => void;
}

const INIT_SOURCES = {
  init: new URL("../../initrd/ovms-init.sh", import.meta.url),
  udhcpc: new URL("../../initrd/udhcpc.sh", import.meta.url),
};

/** The ovms-init script shipped with this ovm (read from `initrd/` next to the sources). */
export async function readInitSources(): Promise<{ init: Uint8Array; udhcpc: Uint8Array }> {
  try {
    return {
      init: await Deno.readFile(INIT_SOURCES.init),
      udhcpc: await Deno.readFile(INIT_SOURCES.udhcpc),
    };
  } catch (e) {
    throw new OvmError(`The ovms-init sources were not found at "${INIT_SOURCES.init}"`, {
      cause: e,
      hint: "a compiled ovm must be built with 'deno compile --include initrd/'",
    });
  }
}

async function resolveBusybox(
  home: string,
  options: BuildInitrdOptions,
): Promise<{ path: string; data: Uint8Array; package?: string }> {
  if (options.busybox) {
    if (!(await exists(options.busybox))) {
      throw new NotFoundError(`Busybox binary "${options.busybox}" does not exist`, {
        hint: "give the path of a static busybox (Debian: busybox-static)",
      });
    }
    return { path: options.busybox, data: await Deno.readFile(options.busybox) };
  }
  if (await exists(DEFAULT_BUSYBOX)) {
    return { path: DEFAULT_BUSYBOX, data: await Deno.readFile(DEFAULT_BUSYBOX) };
  }
  const deb = await fetchDebianPackage(home, "busybox-static", options);
  const x = join(systemDir(home), uniqueTempName(".tmp-busybox"));
  try {
    await run("dpkg-deb", ["-x", deb.path, x], { signal: options.signal });
    return {
      path: deb.path,
      data: await Deno.readFile(join(x, "bin", "busybox")),
      package: `busybox-static ${deb.packageVersion ?? ""}`.trim(),
    };
  } finally {
    await Deno.remove(x, { recursive: true }).catch(() => {});
  }
}

/** The archive entries; exported for tests that inspect the layout. */
export async function initrdEntries(
  kernelDir: string,
  kernel: KernelMeta,
  busybox: Uint8Array,
  sources: { init: Uint8Array; udhcpc: Uint8Array },
): Promise<CpioEntry[]> {
  const enc = new TextEncoder();
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDir = (p: string) => {
    const parts = p.split("/");
    for (let i = 1; i <= parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
  };
  for (
    const d of [
      "bin",
      "sbin",
      "usr/bin",
      "usr/sbin",
      "dev",
      "etc/ovms",
      "proc",
      "sys",
      "run",
      "tmp",
      "newroot",
      "mnt",
    ]
  ) addDir(d);
  const modBase = `lib/modules/${kernel.version}`;
  addDir(modBase);
  const dep: string[] = [];
  for (const m of kernel.modules) {
    const rel = `${modBase}/${m.path}`;
    addDir(rel.slice(0, rel.lastIndexOf("/")));
    entries.push({
      type: "file",
      path: rel,
      data: await Deno.readFile(join(kernelDir, "modules", m.path)),
    });
    const depPaths = m.depends.map((d) => kernel.modules.find((x) => x.name === d)?.path)
      .filter((p): p is string => p !== undefined);
    dep.push(`${m.path}: ${depPaths.join(" ")}`.trimEnd());
  }
  for (const d of dirs) entries.push({ type: "dir", path: d, mode: d === "tmp" ? 0o1777 : 0o755 });
  entries.push(
    { type: "file", path: "init", data: sources.init, mode: 0o755 },
    { type: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
    { type: "symlink", path: "bin/sh", target: "busybox" },
    { type: "char", path: "dev/console", major: 5, minor: 1, mode: 0o600 },
    { type: "char", path: "dev/null", major: 1, minor: 3, mode: 0o666 },
    {
      type: "file",
      path: `${modBase}/modules.dep`,
      data: enc.encode(dep.map((l) => l + "\n").join("")),
    },
    {
      type: "file",
      path: "etc/ovms/modules",
      data: enc.encode(kernel.modules.map((m) => `${m.path}\n`).join("")),
    },
    { type: "file", path: "etc/ovms/kernel-version", data: enc.encode(kernel.version + "\n") },
    { type: "file", path: "etc/ovms/init-version", data: enc.encode(OVMS_INIT_VERSION + "\n") },
    { type: "file", path: "etc/ovms/udhcpc.sh", data: sources.udhcpc, mode: 0o755 },
  );
  return entries;
}

/** gzip with no file name and mtime 0 (what `gzip -n` writes), so the bytes are stable. */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("gzip"));
  const out = new Uint8Array(await new Response(stream).arrayBuffer());
  // RFC 1952: bytes 4..7 are MTIME, byte 9 is OS; pin both whatever the encoder wrote.
  out.fill(0, 4, 8);
  out[9] = 3;
  return out;
}

/** Builds (or rebuilds with `force`) the initrd for an installed kernel. */
export async function buildInitrd(
  home: string,
  kernelVersion: string,
  options: BuildInitrdOptions = {},
): Promise<InitrdMeta> {
  const kernel = await requireKernelMeta(home, kernelVersion);
  const version = assertVersion(
    options.version ?? initrdVersionFor(kernel.version),
    "initrd version",
  );
  const kernelDir = imageDir(home, "kernel", kernel.version);
  const busybox = await resolveBusybox(home, options);
  const sources = await readInitSources();
  options.onProgress?.(`building initrd ${version}`);
  const cpio = writeCpio(await initrdEntries(kernelDir, kernel, busybox.data, sources));
  const gz = await gzip(cpio);
  const root = systemDir(home);
  const stage = join(root, uniqueTempName(".tmp-initrd"));
  await Deno.mkdir(stage, { recursive: true });
  try {
    await Deno.writeFile(join(stage, "initrd"), gz);
    const { digest, size } = await digestFile(join(stage, "initrd"));
    const meta: InitrdMeta = InitrdMetaSchema.parse({
      kind: "initrd",
      version,
      arch: SYSTEM_ARCH,
      file: "initrd",
      digest,
      size,
      kernelVersion: kernel.version,
      inputs: {
        initVersion: OVMS_INIT_VERSION,
        kernelDigest: kernel.digest,
        ovmsInit: digestOf(sources.init),
        busybox: { path: busybox.path, digest: digestOf(busybox.data), package: busybox.package },
        modules: kernel.modules.map((m) => ({ name: m.name, digest: m.digest })),
      },
      created: new Date().toISOString(),
    });
    await writeJsonAtomic(metaPath(stage, "initrd"), meta);
    await installDir(stage, imageDir(home, "initrd", version), {
      force: options.force,
      what: `Initrd version "${version}"`,
      isComplete: async () => (await readInitrdMeta(home, version)) !== undefined,
    });
    return meta;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}
