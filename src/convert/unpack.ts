/**
 * @module
 * The safe layer unpacker: applies container image layers, in order, into a
 * private build directory (spec §10.3). Every path is resolved component by
 * component under the root with `lstat`; a symlink met on the way is
 * followed *inside* the root only (its target re-rooted, `..` clamped at
 * the root), so nothing is ever written outside the build directory. The
 * last component is never followed: an existing entry there is replaced.
 */
import { join } from "node:path";
import { lchown, lutimes } from "node:fs/promises";
import { DigestMismatchError, OvmError, ValidationError } from "../errors.ts";
import { type Digest, Digester } from "../manifest/mod.ts";
import { run, spawn, which } from "../process/mod.ts";
import { formatBytes } from "../util/size.ts";
import { readTar, type TarEntry, type TarHeader } from "./tar_reader.ts";

/** One layer to apply: its compressed bytes come from `open()`. */
export interface LayerSource {
  digest: Digest;
  mediaType: string;
  size: number;
  open(): Promise<ReadableStream<Uint8Array>>;
}

export interface UnpackProgress {
  /** 0-based index of the layer being applied. */
  layer: number;
  layers: number;
  digest: Digest;
  /** Compressed bytes read of this layer, and its size. */
  bytes: number;
  size: number;
  /** Uncompressed tar bytes read so far, all layers. */
  unpacked: number;
}

export interface UnpackOptions {
  /** Create character and block device nodes; otherwise they are skipped with a warning. */
  allowDevices?: boolean;
  /** Cap on uncompressed tar bytes over all layers (gzip bombs). Default 16 GiB. */
  maxBytes?: number;
  signal?: AbortSignal;
  onProgress?: (p: UnpackProgress) => void;
  warn?: (msg: string) => void;
}

export interface UnpackStats {
  layers: number;
  entries: number;
  /** Uncompressed tar bytes read. */
  unpackedBytes: number;
  skippedDevices: number;
  skippedXattrs: number;
}

export const DEFAULT_MAX_UNPACKED = 16 * 1024 ** 3;

export const LAYER_MEDIA_TYPES = {
  tar: [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
  ],
  gzip: [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  ],
  zstd: [
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  ],
} as const;

export function layerCompression(mediaType: string): "tar" | "gzip" | "zstd" | undefined {
  for (const [k, list] of Object.entries(LAYER_MEDIA_TYPES)) {
    if ((list as readonly string[]).includes(mediaType)) return k as "tar" | "gzip" | "zstd";
  }
  return undefined;
}

/** Refuses a layer whose media type ovm cannot unpack, before anything is fetched or written. */
export function assertLayerMediaType(mediaType: string, digest: string): void {
  if (!layerCompression(mediaType)) {
    throw new ValidationError(`Unsupported layer media type "${mediaType}" (layer ${digest})`, {
      hint: "ovm unpacks tar, tar+gzip and tar+zstd layers",
    });
  }
}

/** Splits an entry name into clean components; a name that climbs out of the root is refused. */
export function cleanPath(name: string, what = "path"): string[] {
  if (name.includes("\0")) throw new ValidationError(`Layer ${what} "${name}" contains NUL`);
  // A leading "/" is confined (read relative to the root), as Docker and containerd do.
  const out: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") {
      if (!out.length) {
        throw new ValidationError(`Layer ${what} "${name}" escapes the root filesystem`, {
          hint: "the image is malformed or hostile; ovm refuses '..' that climbs above /",
        });
      }
      out.pop();
      continue;
    }
    out.push(c);
  }
  return out;
}

const MAX_LINKS = 40;

class Unpacker {
  readonly root: string;
  readonly #opts: UnpackOptions;
  /** Lexical directory path → its real path (no symlink in it), cleared on any removal. */
  #dirCache = new Map<string, string[]>();
  /** Real paths written by the current layer, and their ancestors (opaque dirs keep them). */
  #layerPaths = new Set<string>();
  #layerDirs = new Set<string>();
  /** Real path → mtime from the last layer that wrote it; applied once at the end. */
  mtimes = new Map<string, number>();
  #setfattr: string | undefined | null = null;
  stats: UnpackStats = {
    layers: 0,
    entries: 0,
    unpackedBytes: 0,
    skippedDevices: 0,
    skippedXattrs: 0,
  };

  constructor(root: string, opts: UnpackOptions) {
    this.root = root;
    this.#opts = opts;
  }

  #abs(rel: string[]): string {
    return join(this.root, ...rel);
  }

  #record(rel: string[]): void {
    this.#layerPaths.add(rel.join("/"));
    for (let i = 1; i < rel.length; i++) this.#layerDirs.add(rel.slice(0, i).join("/"));
  }

  /**
   * The real path of directory `comps` under the root: symlinks followed
   * inside the root only. Missing directories are created when `create`
   * (implicit parents), else the result is undefined.
   */
  async resolveDir(comps: string[], create: boolean, name: string): Promise<string[] | undefined> {
    const key = comps.join("/");
    const hit = this.#dirCache.get(key);
    if (hit) return hit;
    const cur: string[] = [];
    const queue = [...comps];
    let links = 0;
    while (queue.length) {
      const c = queue.shift()!;
      if (c === "" || c === ".") continue;
      if (c === "..") {
        cur.pop(); // clamped at the root: "/.." is "/"
        continue;
      }
      const p = this.#abs([...cur, c]);
      let st: Deno.FileInfo | undefined;
      try {
        st = await Deno.lstat(p);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (!st) {
        if (!create) return undefined;
        await Deno.mkdir(p, { mode: 0o755 });
        await Deno.chmod(p, 0o755);
        cur.push(c);
        this.#record(cur);
        // An implicit directory has no time of its own in the image: pin it.
        if (!this.mtimes.has(cur.join("/"))) this.mtimes.set(cur.join("/"), 0);
        continue;
      }
      if (st.isSymlink) {
        if (++links > MAX_LINKS) {
          throw new ValidationError(`Layer path "${name}": too many levels of symbolic links`);
        }
        const target = await Deno.readLink(p);
        if (target.startsWith("/")) cur.length = 0;
        queue.unshift(...target.split("/"));
        continue;
      }
      if (!st.isDirectory) {
        throw new ValidationError(
          `Layer path "${name}": "/${[...cur, c].join("/")}" is not a directory`,
        );
      }
      cur.push(c);
    }
    this.#dirCache.set(key, cur);
    return cur;
  }

  async #removeExisting(p: string): Promise<void> {
    await Deno.remove(p, { recursive: true });
    this.#dirCache.clear();
  }

  async applyLayer(stream: ReadableStream<Uint8Array>): Promise<void> {
    this.#layerPaths.clear();
    this.#layerDirs.clear();
    for await (const entry of readTar(stream)) {
      this.#opts.signal?.throwIfAborted();
      this.stats.entries++;
      try {
        await this.#entry(entry);
      } catch (e) {
        // Only filesystem errors get the entry's name; stream and ovm errors speak for themselves.
        if (!Object.values(Deno.errors).some((c) => e instanceof c)) throw e;
        throw new OvmError(`Cannot unpack "${entry.header.name}": ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
  }

  async #entry(entry: TarEntry): Promise<void> {
    const h = entry.header;
    const comps = cleanPath(h.name);
    if (!comps.length) {
      // The root itself ("./"): only its metadata applies.
      if (h.type === "directory") await this.#meta([], h);
      return;
    }
    const base = comps[comps.length - 1];
    if (base.startsWith(".wh.")) {
      await this.#whiteout(comps.slice(0, -1), base, h.name);
      return;
    }
    const parent = (await this.resolveDir(comps.slice(0, -1), true, h.name))!;
    const rel = [...parent, base];
    const p = this.#abs(rel);
    let existing: Deno.FileInfo | undefined;
    try {
      existing = await Deno.lstat(p);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (existing && !(existing.isDirectory && h.type === "directory")) {
      if (
        h.type === "hardlink" &&
        cleanPath(h.linkname, "hardlink target").join("/") === rel.join("/")
      ) {
        return; // a link to itself
      }
      await this.#removeExisting(p);
    }
    switch (h.type) {
      case "directory":
        if (!existing?.isDirectory) await Deno.mkdir(p, { mode: 0o700 });
        break;
      case "file": {
        const f = await Deno.open(p, { write: true, createNew: true, mode: 0o600 });
        try {
          for await (const chunk of entry.body()) {
            let off = 0;
            while (off < chunk.byteLength) off += await f.write(chunk.subarray(off));
          }
        } finally {
          f.close();
        }
        break;
      }
      case "symlink":
        if (h.linkname.includes("\0")) {
          throw new ValidationError(`Symlink "${h.name}" has a target containing NUL`);
        }
        await Deno.symlink(h.linkname, p);
        break;
      case "hardlink": {
        const t = cleanPath(h.linkname, "hardlink target");
        const tparent = await this.resolveDir(t.slice(0, -1), false, h.linkname);
        const target = tparent && t.length ? this.#abs([...tparent, t[t.length - 1]]) : undefined;
        const tst = target ? await Deno.lstat(target).catch(() => undefined) : undefined;
        if (!target || !tst) {
          throw new ValidationError(
            `Hardlink "${h.name}" points to "${h.linkname}", which is not in the root filesystem yet`,
            { hint: "a hardlink's target must be extracted earlier in the same image" },
          );
        }
        if (tst.isDirectory) {
          throw new ValidationError(`Hardlink "${h.name}" points to a directory "${h.linkname}"`);
        }
        await Deno.link(target, p);
        this.#record(rel);
        return; // the inode's metadata is the target's
      }
      case "chardev":
      case "blockdev":
        if (!this.#opts.allowDevices) {
          this.stats.skippedDevices++;
          this.#opts.warn?.(
            `skipped device node "${h.name}" (${h.type} ${h.devmajor}:${h.devminor}); ` +
              "pass --allow-devices to create it",
          );
          return;
        }
        await run("mknod", [
          p,
          h.type === "chardev" ? "c" : "b",
          String(h.devmajor),
          String(h.devminor),
        ]);
        break;
      case "fifo":
        await run("mkfifo", [p]);
        break;
    }
    this.#record(rel);
    await this.#meta(rel, h);
  }

  async #meta(rel: string[], h: TarHeader): Promise<void> {
    const p = this.#abs(rel);
    await lchown(p, h.uid, h.gid);
    // chown clears set-id bits, so the mode comes after it.
    if (h.type !== "symlink") await Deno.chmod(p, h.mode);
    for (const [name, value] of h.xattrs) await this.#xattr(p, name, value);
    this.mtimes.set(rel.join("/"), h.mtime);
  }

  async #xattr(p: string, name: string, value: Uint8Array): Promise<void> {
    if (this.#setfattr === null) this.#setfattr = await which("setfattr");
    const skip = (why: string) => {
      this.stats.skippedXattrs++;
      this.#opts.warn?.(`skipped xattr "${name}" on "${p.slice(this.root.length)}": ${why}`);
    };
    if (!this.#setfattr) return skip("setfattr (package attr) is not installed");
    const hex = "0x" + Array.from(value, (b) => b.toString(16).padStart(2, "0")).join("");
    const r = await run(this.#setfattr, ["-h", "-n", name, "-v", hex, "--", p], {
      allowFailure: true,
    });
    if (!r.success) skip(r.stderr.trim() || `exit ${r.code}`);
  }

  async #whiteout(dirComps: string[], base: string, name: string): Promise<void> {
    const dir = await this.resolveDir(dirComps, false, name);
    if (!dir) return; // nothing below to hide
    if (base === ".wh..wh..opq") {
      await this.#opaque(dir);
      return;
    }
    if (base.startsWith(".wh..wh.")) return; // aufs metadata, not a whiteout
    const victim = base.slice(4);
    if (!victim || victim === "." || victim === "..") {
      throw new ValidationError(`Whiteout "${name}" names no entry`);
    }
    const p = this.#abs([...dir, victim]);
    if (await Deno.lstat(p).then(() => true, () => false)) await this.#removeExisting(p);
  }

  /** Hides everything in `dir` that lower layers put there; this layer's entries stay. */
  async #opaque(dir: string[]): Promise<void> {
    for await (const e of Deno.readDir(this.#abs(dir))) {
      const rel = [...dir, e.name];
      const key = rel.join("/");
      if (this.#layerDirs.has(key)) {
        if (e.isDirectory && !e.isSymlink) await this.#opaque(rel);
      } else if (!this.#layerPaths.has(key)) {
        await this.#removeExisting(this.#abs(rel));
      } else if (e.isDirectory && !e.isSymlink) {
        await this.#opaque(rel);
      }
    }
  }
}

/**
 * Writes one file at `path` inside an unpacked root, resolving its parents
 * the same confined way as the unpacker (for files ovm adds, such as the
 * cloud-init seed directory).
 */
export async function writeFileInRoot(
  root: string,
  path: string,
  options: { data: string | Uint8Array; mode?: number; mtime?: number },
): Promise<void> {
  const data = options.data;
  const comps = cleanPath(path);
  if (!comps.length) throw new ValidationError(`Cannot write the root itself ("${path}")`);
  const u = new Unpacker(root, {});
  const parent = (await u.resolveDir(comps.slice(0, -1), true, path))!;
  const p = join(root, ...parent, comps[comps.length - 1]);
  await Deno.remove(p, { recursive: true }).catch(() => {});
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  await Deno.writeFile(p, bytes, { createNew: true, mode: options.mode ?? 0o644 });
  await Deno.chmod(p, options.mode ?? 0o644);
  // Creating entries touched the parents: pin them all for a reproducible disk.
  const t = options.mtime ?? 0;
  for (let i = parent.length; i >= 0; i--) await lutimes(join(root, ...parent.slice(0, i)), t, t);
  await lutimes(p, t, t);
}

/** Decompresses a layer stream per its media type. */
function decompress(
  stream: ReadableStream<Uint8Array>,
  kind: "tar" | "gzip" | "zstd",
): { stream: ReadableStream<Uint8Array>; done: (failed?: boolean) => Promise<void> } {
  if (kind === "tar") return { stream, done: async () => {} };
  if (kind === "gzip") {
    return {
      stream: stream.pipeThrough(
        new DecompressionStream("gzip") as unknown as TransformStream<Uint8Array, Uint8Array>,
      ),
      done: async () => {},
    };
  }
  const child = spawn("zstd", ["-d", "-c", "-q"], { stdin: "piped", stdout: "piped" });
  const feeding = stream.pipeTo(child.child.stdin).catch(() => {});
  return {
    stream: child.child.stdout,
    done: async (failed) => {
      // On failure nobody reads zstd's output any more: kill it before waiting on its input.
      if (failed) child.kill("SIGKILL");
      await feeding;
      const st = await child.status;
      await child[Symbol.asyncDispose]();
      if (!st.success) throw new ValidationError("zstd could not decompress the layer");
    },
  };
}

/**
 * Applies `layers` in order into `root` (an empty directory the caller owns).
 * Each layer's compressed bytes are checked against its digest as they are
 * read; the uncompressed total is capped by `maxBytes`.
 */
export async function unpackLayers(
  root: string,
  layers: LayerSource[],
  options: UnpackOptions = {},
): Promise<UnpackStats> {
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_UNPACKED;
  for (const l of layers) assertLayerMediaType(l.mediaType, l.digest);
  if (layers.some((l) => layerCompression(l.mediaType) === "zstd") && !(await which("zstd"))) {
    throw new ValidationError("This image has zstd layers and the zstd program is not installed", {
      hint: "install zstd (Debian: apt-get install zstd)",
    });
  }
  const u = new Unpacker(root, options);
  await Deno.chmod(root, 0o755);
  for (const [i, layer] of layers.entries()) {
    options.signal?.throwIfAborted();
    const digester = new Digester();
    let bytes = 0;
    const report = () =>
      options.onProgress?.({
        layer: i,
        layers: layers.length,
        digest: layer.digest,
        bytes,
        size: layer.size,
        unpacked: u.stats.unpackedBytes,
      });
    const hashing = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        digester.update(chunk);
        bytes += chunk.byteLength;
        ctl.enqueue(chunk);
      },
    });
    let lastReport = 0;
    const capping = new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, ctl) {
        u.stats.unpackedBytes += chunk.byteLength;
        if (u.stats.unpackedBytes > maxBytes) {
          ctl.error(
            new ValidationError(
              `Layer ${layer.digest} unpacks past the limit of ${formatBytes(maxBytes)}`,
              {
                hint:
                  "a decompression bomb, or a very large image: raise --max-unpacked if you trust it",
              },
            ),
          );
          return;
        }
        ctl.enqueue(chunk);
        const now = Date.now();
        if (now - lastReport > 200) {
          lastReport = now;
          report();
        }
      },
    });
    const src = (await layer.open()).pipeThrough(hashing);
    const d = decompress(src, layerCompression(layer.mediaType)!);
    try {
      await u.applyLayer(d.stream.pipeThrough(capping));
    } catch (e) {
      await d.done(true).catch(() => {});
      if (e instanceof TypeError && /gzip|decompress|corrupt|invalid/i.test(e.message)) {
        throw new ValidationError(`Layer ${layer.digest} is not valid gzip: ${e.message}`, {
          cause: e,
        });
      }
      throw e;
    }
    await d.done();
    const actual = digester.digest();
    if (bytes !== layer.size || actual !== layer.digest) {
      throw new DigestMismatchError(
        `layer ${layer.digest} (${bytes} of ${layer.size} bytes)`,
        layer.digest,
        actual,
      );
    }
    report();
    u.stats.layers++;
  }
  if (!u.mtimes.has("")) u.mtimes.set("", 0);
  await applyTimes(u);
  return u.stats;
}

/** Sets every recorded mtime (directories last touched by later children too). */
async function applyTimes(u: Unpacker): Promise<void> {
  for (const [rel, mtime] of u.mtimes) {
    const p = rel ? join(u.root, rel) : u.root;
    await lutimes(p, mtime, mtime).catch(() => {}); // removed by a later whiteout
  }
}
