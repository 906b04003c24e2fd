/**
 * @module
 * Adds guest kernels to `$OVM_HOME/system/kernel/`: from a Debian kernel
 * package (fetched with `apt-get download`, or a local `.deb`), from a URL
 * with a pinned sha256, or from a local file. For packages, the modules the
 * guest needs are resolved with their dependencies and kept, decompressed,
 * next to `vmlinuz` for the initrd build. Nothing is left behind on failure.
 */
import { basename, dirname, join, relative } from "node:path";
import {
  AlreadyExistsError,
  DigestMismatchError,
  NotFoundError,
  OvmError,
  ValidationError,
} from "../errors.ts";
import { type Digest, Digester, digestFile, digestOf } from "../manifest/mod.ts";
import { CommandError, run } from "../process/mod.ts";
import { homePaths } from "../store/mod.ts";
import { exists, fsyncDir, uniqueTempName, writeJsonAtomic } from "../util/fs.ts";
import {
  assertVersion,
  imageDir,
  type KernelMeta,
  KernelMetaSchema,
  type KernelSource,
  metaPath,
  type ModuleEntry,
  readKernelMeta,
  systemDir,
} from "./layout.ts";
import { moduleNameOfPath, normalizeModuleName, readModinfo } from "./modinfo.ts";
import { DEFAULT_KERNEL, OPTIONAL_MODULES, REQUIRED_MODULES, SYSTEM_ARCH } from "./versions.ts";

export interface AddKernelOptions {
  /** Required for a bare kernel file or URL; checked against the package for a `.deb`. */
  version?: string;
  /** Pinned sha256 (hex) of the download or file; required for URLs. */
  sha256?: string;
  /** Where `.deb` files and downloads are cached (default `$OVM_HOME/cache`). */
  cacheDir?: string;
  /** Replace an installed kernel of the same version. */
  force?: boolean;
  signal?: AbortSignal;
  onProgress?: (msg: string) => void;
}

type ParsedSource =
  | { type: "debian"; package: string }
  | { type: "deb-file"; path: string }
  | { type: "url"; url: string }
  | { type: "file"; path: string };

const DEBIAN_PACKAGE_RE = /^linux-image-[a-z0-9][a-z0-9.+-]*$/;

/** Reads a `kernel add` source: `debian:<pkg>` or `linux-image-*`, a `.deb`, an http(s) URL, a file. */
export function parseKernelSource(source: string): ParsedSource {
  if (/^https?:\/\//.test(source)) return { type: "url", url: source };
  const pkg = source.startsWith("debian:") ? source.slice(7) : source;
  if (DEBIAN_PACKAGE_RE.test(pkg) && !pkg.endsWith(".deb")) return { type: "debian", package: pkg };
  if (source.startsWith("debian:")) {
    throw new ValidationError(`Invalid Debian kernel package "${pkg}"`, {
      hint:
        "kernel packages are named linux-image-<ver>-<flavour>, e.g. linux-image-6.1.0-56-cloud-amd64",
    });
  }
  if (source.includes("/") || source.includes(".")) {
    return source.endsWith(".deb")
      ? { type: "deb-file", path: source }
      : { type: "file", path: source };
  }
  throw new ValidationError(`Unknown kernel source "${source}"`, {
    hint: "give a Debian package (linux-image-<ver>-cloud-amd64), a .deb file, " +
      "an https URL with --sha256, or a kernel file with --version (./vmlinux for one here)",
  });
}

function hexOf(d: Digest): string {
  return d.slice(7);
}

/** Accepts `<hex>` or `sha256:<hex>`; returns the digest form. */
function validSha256(value: string): Digest {
  const want = value.startsWith("sha256:") ? value : `sha256:${value}`;
  if (!/^sha256:[a-f0-9]{64}$/.test(want)) {
    throw new ValidationError(`Invalid sha256 "${value}"`, {
      hint: "give 64 lowercase hex digits",
    });
  }
  return want as Digest;
}

function checkPinned(what: string, expectedHex: string | undefined, actual: Digest): void {
  if (expectedHex === undefined) return;
  const want = validSha256(expectedHex);
  if (want !== actual) {
    throw new DigestMismatchError(what, want, actual, {
      hint: "the file is corrupt or not the one pinned; nothing was installed",
    });
  }
}

function cacheRoot(home: string, options: { cacheDir?: string }): string {
  return options.cacheDir ?? homePaths(home).cache;
}

/** Fetches a Debian package into the cache with `apt-get download` (once). */
export async function fetchDebianPackage(
  home: string,
  pkg: string,
  options: {
    cacheDir?: string;
    sha256?: string;
    signal?: AbortSignal;
    onProgress?: (m: string) => void;
  } = {},
): Promise<{ path: string; digest: Digest; packageVersion?: string }> {
  const dir = join(cacheRoot(home, options), "debs");
  await Deno.mkdir(dir, { recursive: true });
  const findCached = async () => {
    const hits: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && e.name.startsWith(`${pkg}_`) && e.name.endsWith(".deb")) hits.push(e.name);
    }
    return hits.sort().at(-1);
  };
  let name = await findCached();
  if (!name) {
    options.onProgress?.(`downloading Debian package ${pkg}`);
    const tmp = join(dir, uniqueTempName(".apt"));
    await Deno.mkdir(tmp);
    try {
      try {
        await run("apt-get", ["download", "-q", pkg], { cwd: tmp, signal: options.signal });
      } catch (e) {
        if (
          e instanceof CommandError &&
          /Unable to locate|No packages found|has no installation candidate/i.test(e.stderr)
        ) {
          throw new NotFoundError(`Debian package "${pkg}" was not found`, {
            cause: e,
            hint:
              "list kernels with 'apt-cache search linux-image.*cloud-amd64' (after 'apt-get update')",
          });
        }
        throw e;
      }
      const got = [...Deno.readDirSync(tmp)].filter((e) => e.name.endsWith(".deb"));
      if (got.length !== 1) {
        throw new OvmError(`apt-get download ${pkg} produced ${got.length} .deb files, expected 1`);
      }
      name = got[0].name;
      await Deno.rename(join(tmp, name), join(dir, name));
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  }
  const path = join(dir, name);
  const { digest } = await digestFile(path);
  try {
    checkPinned(`Debian package "${pkg}"`, options.sha256, digest);
  } catch (e) {
    // A cached file that does not match is useless: drop it so the next try downloads again.
    await Deno.remove(path).catch(() => {});
    throw e;
  }
  const m = name.match(/^[^_]+_([^_]+)_[^_]+\.deb$/);
  return { path, digest, packageVersion: m ? decodeURIComponent(m[1]) : undefined };
}

/** Downloads a URL into the cache, verifying the pinned sha256 before it is kept. */
async function fetchUrl(
  home: string,
  url: string,
  sha256: string,
  options: { cacheDir?: string; signal?: AbortSignal; onProgress?: (m: string) => void },
): Promise<{ path: string; digest: Digest }> {
  const hex = hexOf(validSha256(sha256));
  const dir = join(cacheRoot(home, options), "downloads");
  await Deno.mkdir(dir, { recursive: true });
  const final = join(dir, `sha256-${hex}`);
  if (await exists(final)) return { path: final, digest: `sha256:${hex}` };
  options.onProgress?.(`downloading ${url}`);
  let res: Response;
  try {
    res = await fetch(url, { signal: options.signal });
  } catch (e) {
    throw new OvmError(`Download of "${url}" failed`, {
      cause: e,
      hint: "check the URL and the network",
    });
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    throw new NotFoundError(`Download of "${url}" failed with HTTP ${res.status}`, {
      hint: "check the URL",
    });
  }
  const tmp = join(dir, uniqueTempName(".dl"));
  try {
    const d = new Digester();
    {
      using f = await Deno.open(tmp, { write: true, createNew: true });
      for await (const chunk of res.body) {
        d.update(chunk);
        let off = 0;
        while (off < chunk.byteLength) off += await f.write(chunk.subarray(off));
      }
      await f.sync();
    }
    checkPinned(`"${url}"`, hex, d.digest());
    await Deno.rename(tmp, final);
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  return { path: final, digest: `sha256:${hex}` };
}

async function readModule(path: string, signal?: AbortSignal): Promise<Uint8Array> {
  if (path.endsWith(".ko")) return await Deno.readFile(path);
  // busybox insmod in the guest reads plain ELF only, so decompress here.
  if (path.endsWith(".ko.xz")) return (await run("xz", ["-dc", path], { signal })).stdoutBytes;
  if (path.endsWith(".ko.zst")) return (await run("zstd", ["-dcq", path], { signal })).stdoutBytes;
  if (path.endsWith(".ko.gz")) {
    const f = await Deno.open(path);
    const out = await new Response(f.readable.pipeThrough(new DecompressionStream("gzip")))
      .arrayBuffer();
    return new Uint8Array(out);
  }
  throw new ValidationError(`Unsupported kernel module file "${path}"`);
}

async function walkModules(dir: string, base = dir, out = new Map<string, string>()) {
  for await (const e of Deno.readDir(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) await walkModules(p, base, out);
    else if (/\.ko(\.xz|\.zst|\.gz)?$/.test(e.name)) {
      out.set(moduleNameOfPath(e.name), relative(base, p));
    }
  }
  return out;
}

/**
 * Resolves the guest's modules in an extracted module tree (`lib/modules/<ver>`)
 * and copies them, decompressed, below `destDir`. Returns them in load order.
 */
export async function collectModules(
  treeDir: string,
  destDir: string,
  options: { what: string; signal?: AbortSignal },
): Promise<{ modules: ModuleEntry[]; builtin: string[] }> {
  const files = (await exists(join(treeDir, "kernel")))
    ? await walkModules(join(treeDir, "kernel"), treeDir)
    : new Map<string, string>();
  const builtin = new Set<string>();
  try {
    for (const line of (await Deno.readTextFile(join(treeDir, "modules.builtin"))).split("\n")) {
      if (line.trim()) builtin.add(moduleNameOfPath(line.trim()));
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const order: ModuleEntry[] = [];
  const builtinUsed: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const missing: string[] = [];
  const visit = async (raw: string, required: boolean, chain: string[]) => {
    const name = normalizeModuleName(raw);
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      throw new ValidationError(
        `Kernel module dependency cycle in ${options.what}: ${[...chain, name].join(" -> ")}`,
      );
    }
    if (builtin.has(name) && !files.has(name)) {
      state.set(name, "done");
      builtinUsed.push(name);
      return;
    }
    const rel = files.get(name);
    if (!rel) {
      state.set(name, "done");
      if (required) missing.push(chain.length ? `${name} (needed by ${chain.at(-1)})` : name);
      return;
    }
    state.set(name, "visiting");
    const data = await readModule(join(treeDir, rel), options.signal);
    const info = readModinfo(data, rel);
    const depends = (info.get("depends") ?? []).flatMap((d) => d.split(",")).map((d) => d.trim())
      .filter(Boolean).map(normalizeModuleName);
    for (const dep of depends) await visit(dep, true, [...chain, name]);
    const outRel = rel.replace(/\.ko\.(xz|zst|gz)$/, ".ko");
    await Deno.mkdir(dirname(join(destDir, outRel)), { recursive: true });
    await Deno.writeFile(join(destDir, outRel), data);
    order.push({ name, path: outRel, digest: digestOf(data), depends });
    state.set(name, "done");
  };
  for (const m of REQUIRED_MODULES) await visit(m, true, []);
  for (const m of OPTIONAL_MODULES) await visit(m, false, []);
  if (missing.length) {
    throw new ValidationError(
      `Kernel package ${options.what} lacks modules the guest needs: ${missing.join(", ")}`,
      {
        hint: `the guest needs ${REQUIRED_MODULES.join(", ")} as modules or built in; ` +
          "use a Debian cloud kernel (linux-image-<ver>-cloud-amd64)",
      },
    );
  }
  return { modules: order, builtin: builtinUsed.sort() };
}

async function findOne(dir: string, pattern: RegExp): Promise<string[]> {
  if (!(await exists(dir))) return [];
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) if (pattern.test(e.name)) out.push(e.name);
  return out.sort();
}

/** Unpacks a kernel `.deb` into `stage` (vmlinuz + modules/); returns the version and modules. */
async function stageDeb(
  deb: string,
  stage: string,
  options: { version?: string; what: string; signal?: AbortSignal },
): Promise<{ version: string; modules: ModuleEntry[]; builtin: string[] }> {
  const x = join(stage, ".x");
  await Deno.mkdir(x);
  try {
    try {
      await run("dpkg-deb", ["-x", deb, x], { signal: options.signal });
    } catch (e) {
      throw new ValidationError(`"${deb}" is not a readable Debian package`, { cause: e });
    }
    let modRoot = join(x, "lib", "modules");
    if (!(await exists(modRoot))) modRoot = join(x, "usr", "lib", "modules");
    const versions = await findOne(modRoot, /./);
    const kernels = await findOne(join(x, "boot"), /^vmlinuz-/);
    if (kernels.length !== 1) {
      throw new ValidationError(
        `Kernel package ${options.what} has ${kernels.length} boot/vmlinuz-* files, expected 1`,
        {
          hint: "a meta-package (linux-image-cloud-amd64) holds no kernel: " +
            "name the versioned package 'apt-cache depends <meta-package>' shows",
        },
      );
    }
    const version = kernels[0].slice("vmlinuz-".length);
    if (options.version !== undefined && options.version !== version) {
      throw new ValidationError(
        `Kernel package ${options.what} holds version "${version}", not "${options.version}"`,
        { hint: "drop --version or give the package's own version" },
      );
    }
    assertVersion(version, "kernel version");
    if (!versions.includes(version)) {
      throw new ValidationError(
        `Kernel package ${options.what} lacks modules the guest needs: it has no lib/modules/${version}`,
      );
    }
    await Deno.rename(join(x, "boot", kernels[0]), join(stage, "vmlinuz"));
    const r = await collectModules(join(modRoot, version), join(stage, "modules"), {
      what: options.what,
      signal: options.signal,
    });
    return { version, ...r };
  } finally {
    await Deno.remove(x, { recursive: true }).catch(() => {});
  }
}

/** Adds a kernel; returns its metadata. See {@linkcode parseKernelSource} for `source`. */
export async function addKernel(
  home: string,
  source: string,
  options: AddKernelOptions = {},
): Promise<KernelMeta> {
  const parsed = parseKernelSource(source);
  if (options.version !== undefined) assertVersion(options.version, "kernel version");
  if (options.sha256 !== undefined) validSha256(options.sha256);
  const root = systemDir(home);
  await Deno.mkdir(root, { recursive: true });
  const stage = join(root, uniqueTempName(".tmp-kernel"));
  await Deno.mkdir(stage);
  try {
    let version: string;
    let modules: ModuleEntry[] = [];
    let builtin: string[] = [];
    let assumeBuiltin = false;
    let src: KernelSource;
    const what = `"${source}"`;
    if (
      parsed.type === "debian" || parsed.type === "deb-file" ||
      (parsed.type === "url" && parsed.url.endsWith(".deb"))
    ) {
      let deb: string;
      if (parsed.type === "debian") {
        const pinned =
          parsed.package === DEFAULT_KERNEL.debianPackage && options.sha256 === undefined
            ? DEFAULT_KERNEL.sha256
            : options.sha256;
        const f = await fetchDebianPackage(home, parsed.package, { ...options, sha256: pinned });
        deb = f.path;
        src = {
          type: "debian",
          package: parsed.package,
          packageVersion: f.packageVersion,
          sha256: hexOf(f.digest),
        };
      } else if (parsed.type === "url") {
        if (!options.sha256) throw sha256Required(parsed.url);
        const f = await fetchUrl(home, parsed.url, options.sha256, options);
        deb = f.path;
        src = { type: "url", url: parsed.url, sha256: hexOf(f.digest) };
      } else {
        if (!(await exists(parsed.path))) throw fileNotFound(parsed.path);
        const { digest } = await digestFile(parsed.path);
        checkPinned(`"${parsed.path}"`, options.sha256, digest);
        deb = parsed.path;
        src = { type: "deb-file", path: parsed.path, sha256: hexOf(digest) };
      }
      options.onProgress?.(`unpacking ${basename(deb)}`);
      ({ version, modules, builtin } = await stageDeb(deb, stage, {
        version: options.version,
        what,
        signal: options.signal,
      }));
    } else {
      if (!options.version) {
        throw new ValidationError(`A kernel file needs --version: ${what}`, {
          hint: "give the kernel's release (uname -r), e.g. --version 6.2-ch",
        });
      }
      version = options.version;
      assumeBuiltin = true;
      let file: string;
      if (parsed.type === "url") {
        if (!options.sha256) throw sha256Required(parsed.url);
        file = (await fetchUrl(home, parsed.url, options.sha256, options)).path;
        src = { type: "url", url: parsed.url, sha256: options.sha256.replace(/^sha256:/, "") };
      } else {
        if (!(await exists(parsed.path))) throw fileNotFound(parsed.path);
        const { digest } = await digestFile(parsed.path);
        checkPinned(`"${parsed.path}"`, options.sha256, digest);
        file = parsed.path;
        src = { type: "file", path: parsed.path, sha256: hexOf(digest) };
      }
      await Deno.copyFile(file, join(stage, "vmlinuz"));
    }
    const { digest, size } = await digestFile(join(stage, "vmlinuz"));
    if (size < 4096) {
      throw new ValidationError(`Kernel ${what} is only ${size} bytes: not a kernel`);
    }
    const meta: KernelMeta = KernelMetaSchema.parse({
      kind: "kernel",
      version,
      arch: SYSTEM_ARCH,
      file: "vmlinuz",
      digest,
      size,
      source: src,
      modules,
      builtin,
      assumeBuiltin,
      created: new Date().toISOString(),
    });
    await writeJsonAtomic(metaPath(stage, "kernel"), meta);
    await installDir(stage, imageDir(home, "kernel", version), {
      force: options.force,
      what: `Kernel version "${version}"`,
      isComplete: async () => (await readKernelMeta(home, version)) !== undefined,
    });
    return meta;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}

function sha256Required(url: string): ValidationError {
  return new ValidationError(`A download needs a pinned digest: "${url}"`, {
    hint: "give --sha256 <64 hex digits> of the file",
  });
}

function fileNotFound(path: string): NotFoundError {
  return new NotFoundError(`Kernel source "${path}" does not exist`, {
    hint: "give an existing file, a Debian package name, or an https URL",
  });
}

/** Renames a staged directory into place; a complete one already there wins unless `force`. */
export async function installDir(
  stage: string,
  final: string,
  options: { force?: boolean; what: string; isComplete: () => Promise<boolean> },
): Promise<void> {
  await Deno.mkdir(dirname(final), { recursive: true });
  if (await exists(final)) {
    if (await options.isComplete()) {
      if (!options.force) {
        throw new AlreadyExistsError(`${options.what} is already installed`, {
          hint: "use --force to replace it, or 'ovm system rm' first",
        });
      }
    }
    // Incomplete leftovers or a forced replace: move aside, then delete.
    const old = join(dirname(stage), uniqueTempName(".tmp-old"));
    await Deno.rename(final, old);
    await Deno.remove(old, { recursive: true }).catch(() => {});
  }
  await Deno.rename(stage, final);
  await fsyncDir(dirname(final));
}
