/**
 * @module
 * `ovm pack`: builds an OVMS artifact in the local store from plain files.
 */
import { basename } from "node:path";
import { ValidationError } from "../errors.ts";
import { assertSelfContained, diskTarStream, isQcow2Magic, readQcow2Header } from "../disk/mod.ts";
import {
  BootstrapConfigSchema,
  canonicalJson,
  type Device,
  digestOf,
  type DiskFormat,
  type Manifest,
  manifestFromValue,
  MediaTypes,
  parseBootstrapConfig,
  validate,
} from "../manifest/mod.ts";
import { type ContentStore, parseLocalRef, writeArtifact } from "../store/mod.ts";
import { readFileBounded } from "../util/fs.ts";
import { formatBytes, parseSize } from "../util/size.ts";
import { type Command, str, strs } from "./command.ts";

export interface DiskSpec {
  path: string;
  format: DiskFormat;
}

/** Parses `FILE[:qcow2|raw]`; without a suffix the format is read from the file. */
export async function parseDiskSpec(spec: string): Promise<DiskSpec> {
  const m = /^(.*):(qcow2|raw)$/.exec(spec);
  const path = m ? m[1] : spec;
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(path);
  } catch {
    throw new ValidationError(`--disk "${spec}": no such file "${path}"`);
  }
  if (!st.isFile) throw new ValidationError(`--disk "${spec}": "${path}" is not a regular file`);
  if (m) return { path, format: m[2] as DiskFormat };
  using f = await Deno.open(path, { read: true });
  const head = new Uint8Array(4);
  const n = await f.read(head);
  return { path, format: n === 4 && isQcow2Magic(head) ? "qcow2" : "raw" };
}

/** Parses `ivshmem:name=mmio0,size=64M,addr=0x10000000`. */
export function parseDeviceSpec(spec: string): Device {
  const colon = spec.indexOf(":");
  const type = colon < 0 ? spec : spec.slice(0, colon);
  if (type !== "ivshmem") {
    throw new ValidationError(`--device "${spec}": unknown device type "${type}"`, {
      hint: "supported device types: ivshmem (e.g. ivshmem:name=mmio0,size=64M,addr=0x10000000)",
    });
  }
  const kv = new Map<string, string>();
  for (const part of spec.slice(colon + 1).split(",")) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new ValidationError(`--device "${spec}": expected key=value, got "${part}"`);
    kv.set(part.slice(0, eq), part.slice(eq + 1));
  }
  for (const k of kv.keys()) {
    if (!["name", "size", "addr"].includes(k)) {
      throw new ValidationError(`--device "${spec}": unknown key "${k}" (known: name, size, addr)`);
    }
  }
  const name = kv.get("name");
  const size = kv.get("size");
  if (!name || !size) throw new ValidationError(`--device "${spec}": name= and size= are required`);
  return {
    type: "ivshmem",
    name,
    size: parseSize(size, `--device size`),
    mmio_addr: kv.get("addr") ?? "0x0",
  };
}

export interface PackInput {
  kernel: string;
  initrd?: string;
  disks: DiskSpec[];
  args?: string;
  devices: Device[];
  bootstrap?: string;
  tag: string;
  name?: string;
  version?: string;
  author?: string;
  preferredRuntime?: string[];
}

/** Builds the artifact: blobs first, then config and OCI manifest, then the ref. */
export async function pack(
  store: ContentStore,
  input: PackInput,
  options: { signal?: AbortSignal; onStep?: (s: string) => void } = {},
) {
  const ref = parseLocalRef(input.tag);
  if (ref.digest) throw new ValidationError(`-t "${input.tag}": a tag cannot be a digest`);
  for (const d of input.disks) {
    if (d.format === "qcow2") {
      assertSelfContained(await readQcow2Header(d.path), `--disk "${d.path}"`);
    }
  }
  input.disks.slice(1).forEach((d) => {
    if (d.format !== "qcow2") {
      throw new ValidationError(`--disk "${d.path}": only the base (first) disk may be raw`);
    }
  });
  let bootstrapBytes: Uint8Array | undefined;
  if (input.bootstrap) {
    const cfg = parseBootstrapConfig(
      await readFileBounded(input.bootstrap, 4 << 20),
      input.bootstrap,
    );
    bootstrapBytes = canonicalJson(validate(BootstrapConfigSchema, cfg, input.bootstrap));
  }
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH");
  const created = new Date(epoch ? Number(epoch) * 1000 : Date.now()).toISOString();
  const buildManifest = (refs: {
    kernel: string;
    initrd?: string;
    diskLayers: Manifest["diskLayers"];
    bootstrap?: string;
  }): Manifest =>
    manifestFromValue({
      schemaVersion: 1,
      mediaType: MediaTypes.manifest,
      name: input.name ?? ref.repository,
      version: input.version ?? ref.tag ?? "latest",
      kernel: { ref: refs.kernel, args: input.args ?? "console=ttyS0" },
      ...(refs.initrd ? { initrd: { ref: refs.initrd } } : {}),
      diskLayers: refs.diskLayers,
      devices: input.devices,
      metadata: {
        ...(input.author ? { author: input.author } : {}),
        created,
        platform: { arch: "x86_64", uefi: false },
      },
      ...(input.preferredRuntime?.length
        ? { runtimeHints: { preferredRuntime: input.preferredRuntime } }
        : {}),
      ...(refs.bootstrap ? { bootstrap: { ref: refs.bootstrap } } : {}),
    }, "packed manifest");
  // Validate everything with placeholder digests first: bad input writes nothing.
  const placeholder = (s: string) => digestOf(`placeholder:${s}`);
  buildManifest({
    kernel: placeholder("kernel"),
    initrd: input.initrd ? placeholder("initrd") : undefined,
    diskLayers: input.disks.map((d, i) => ({
      ref: placeholder(`disk${i}`),
      format: d.format,
      size: 1,
    })),
    bootstrap: bootstrapBytes ? placeholder("bootstrap") : undefined,
  });
  return await store.lease(async () => {
    options.onStep?.(`kernel ${basename(input.kernel)}`);
    const kernel = await store.importFile(input.kernel, { signal: options.signal });
    const initrd = input.initrd
      ? (options.onStep?.(`initrd ${basename(input.initrd)}`),
        await store.importFile(input.initrd, { signal: options.signal }))
      : undefined;
    const diskLayers: Manifest["diskLayers"] = [];
    for (const d of input.disks) {
      const virtualSize = d.format === "qcow2"
        ? (await readQcow2Header(d.path)).virtualSize
        : (await Deno.stat(d.path)).size;
      options.onStep?.(`disk ${basename(d.path)} (${d.format}, ${formatBytes(virtualSize)})`);
      const { stream, size } = await diskTarStream(d.path, `disk.${d.format}`);
      const blob = await store.ingest(stream, { expectedSize: size, signal: options.signal });
      diskLayers.push({ ref: blob.digest, format: d.format, size: virtualSize });
    }
    const bootstrap = bootstrapBytes ? await store.writeBlob(bootstrapBytes) : undefined;
    const manifest = buildManifest({
      kernel: kernel.digest,
      initrd: initrd?.digest,
      diskLayers,
      bootstrap: bootstrap?.digest,
    });
    const descriptor = await writeArtifact(store, manifest);
    await store.tag(ref.name, descriptor);
    return { ref: ref.name, descriptor, manifest };
  });
}

export const packCommand: Command = {
  name: "pack",
  summary: "Build an OVMS artifact in the local store from a kernel, an initrd and disk files",
  usage: "pack --kernel FILE [--initrd FILE] [--disk FILE[:qcow2|raw]]... [options] -t NAME:TAG",
  description:
    "Disks are given base first; each later disk is a qcow2 diff on the one before and must not\n" +
    "name a backing file itself (strip one with: qemu-img rebase -u -b '' FILE).",
  options: {
    kernel: { type: "string", valueName: "FILE", help: "Guest kernel (bzImage/vmlinuz)" },
    initrd: { type: "string", valueName: "FILE", help: "Initial ramdisk" },
    disk: {
      type: "string",
      multiple: true,
      valueName: "FILE[:FMT]",
      help: "Disk layer, base first",
    },
    args: {
      type: "string",
      valueName: "CMDLINE",
      help: 'Kernel command line (default "console=ttyS0")',
    },
    device: {
      type: "string",
      multiple: true,
      valueName: "SPEC",
      help: "Device, e.g. ivshmem:name=mmio0,size=64M,addr=0x10000000",
    },
    bootstrap: { type: "string", valueName: "FILE", help: "Bootstrap config JSON (env, cmd, ...)" },
    tag: { type: "string", short: "t", valueName: "NAME:TAG", help: "Local reference to create" },
    name: { type: "string", valueName: "NAME", help: "Manifest name (default: the tag's name)" },
    version: { type: "string", valueName: "VER", help: "Manifest version (default: the tag)" },
    author: { type: "string", valueName: "WHO", help: "metadata.author" },
    runtime: {
      type: "string",
      multiple: true,
      valueName: "NAME",
      help: "runtimeHints.preferredRuntime",
    },
  },
  examples: [
    "ovm pack --kernel vmlinuz --initrd initrd --disk base.qcow2 --disk diff.qcow2 -t demo/vm:1.0",
  ],
  async run(ctx, input) {
    const kernel = str(input, "kernel");
    const tag = str(input, "tag");
    if (!kernel) {
      throw new ValidationError("--kernel is required", { hint: "usage: ovm " + this.usage });
    }
    if (!tag) {
      throw new ValidationError("-t/--tag is required", { hint: "usage: ovm " + this.usage });
    }
    for (
      const [flag, f] of [["--kernel", kernel], ["--initrd", str(input, "initrd")], [
        "--bootstrap",
        str(input, "bootstrap"),
      ]]
    ) {
      if (f === undefined) continue;
      const st = await Deno.stat(f).catch(() => null);
      if (!st?.isFile) throw new ValidationError(`${flag} "${f}": no such file`);
    }
    const disks = [];
    for (const d of strs(input, "disk")) disks.push(await parseDiskSpec(d));
    const store = await ctx.store();
    const res = await pack(store, {
      kernel,
      initrd: str(input, "initrd"),
      disks,
      args: str(input, "args"),
      devices: strs(input, "device").map(parseDeviceSpec),
      bootstrap: str(input, "bootstrap"),
      tag,
      name: str(input, "name"),
      version: str(input, "version"),
      author: str(input, "author"),
      preferredRuntime: strs(input, "runtime"),
    }, { signal: ctx.signal, onStep: (s) => ctx.out.info(`adding ${s}`) });
    ctx.out.result({ ref: res.ref, digest: res.descriptor.digest, size: res.descriptor.size });
    ctx.out.line(`${res.ref} ${res.descriptor.digest}`);
  },
};
