/**
 * @module
 * Helpers for the runtime-adapter tests: a VM spec over a real two-layer
 * disk chain (qcow2 images inside tar-like blobs at offset 512, written with
 * known bytes), and a temp bin directory holding fake VMM executables.
 */
import { join } from "node:path";
import assert from "node:assert/strict";
import type { VmSpec } from "../../src/vmm/adapter.ts";
import { assembleChain } from "../../src/runtime/mod.ts";
import { imageDir, listSystem } from "../../src/system/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { ovmIn } from "./runtime.ts";

const FAKE_MAIN = new URL("./fake_vmm_main.ts", import.meta.url).pathname;

async function sh(cmd: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** Wraps an image the way an OVMS disk-layer blob does: data at offset 512. */
async function blobOf(image: string, blob: string): Promise<number> {
  const data = await Deno.readFile(image);
  const out = new Uint8Array(512 + data.byteLength);
  out.set(new TextEncoder().encode("not-a-real-tar-header"), 0);
  out.set(data, 512);
  await Deno.writeFile(blob, out);
  return data.byteLength;
}

export const BASE_BYTE = 0xab;
export const TOP_BYTE = 0xcd;
/** Offset of the 4 KiB the top layer writes (the base writes at 0). */
export const TOP_OFFSET = 64 * 1024;

/**
 * A spec in `dir`: a dummy kernel and initrd (not bootable: the fakes never
 * run them), a base qcow2 layer holding 0xab at 0 and a top layer holding
 * 0xcd at 64 KiB, a raw config disk, memory 64 MiB.
 */
export async function makeSpec(dir: string, id = "t1"): Promise<VmSpec> {
  const work = join(dir, "work");
  await Deno.mkdir(work, { recursive: true });
  const kernel = join(dir, "vmlinux");
  const initrd = join(dir, "initrd.img");
  await Deno.writeTextFile(kernel, "\x7fELF fake kernel");
  await Deno.writeTextFile(initrd, "fake initrd");
  const base = join(work, "base.qcow2");
  const top = join(work, "top.qcow2");
  await sh("qemu-img", "create", "-q", "-f", "qcow2", base, "1M");
  await sh("qemu-io", "-f", "qcow2", "-c", `write -P ${BASE_BYTE} 0 4k`, base);
  await sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top);
  await sh("qemu-io", "-f", "qcow2", "-c", `write -P ${TOP_BYTE} ${TOP_OFFSET} 4k`, top);
  await sh("qemu-img", "rebase", "-u", "-b", "", top);
  const baseBlob = join(dir, "base.blob");
  const topBlob = join(dir, "top.blob");
  const baseLen = await blobOf(base, baseBlob);
  const topLen = await blobOf(top, topBlob);
  const config = join(dir, "config.tar");
  await Deno.writeFile(config, new Uint8Array(10240));
  const vmDir = join(dir, "vm");
  return {
    id,
    kernel,
    initrd,
    cmdline: "console=ttyS0 ovms.net=none",
    memoryBytes: 64 << 20,
    cpus: 1,
    accel: "tcg",
    rootDisk: {
      layers: [
        { path: baseBlob, offset: 512, length: baseLen, format: "qcow2", virtualSize: 1 << 20 },
        { path: topBlob, offset: 512, length: topLen, format: "qcow2", virtualSize: 1 << 20 },
      ],
      overlay: join(vmDir, "overlay.qcow2"),
    },
    extraDisks: [{ path: config, readOnly: true }],
    devices: [],
    network: { mode: "none", publish: [] },
    vmDir,
    consoleLog: join(vmDir, "console.log"),
    detach: false,
  };
}

/** The first bytes at `offset` of a disk image as qemu sees it (any format, any chain). */
export async function readDiskBytes(image: string, offset: number, n = 16): Promise<number[]> {
  const raw = `${image}.check.raw`;
  await sh("qemu-img", "convert", "-O", "raw", image, raw);
  try {
    using f = await Deno.open(raw);
    await f.seek(offset, Deno.SeekMode.Start);
    const buf = new Uint8Array(n);
    await f.read(buf);
    return [...buf];
  } finally {
    await Deno.remove(raw);
  }
}

/** How the fakes behave; baked into their wrapper scripts (no process-wide env changes). */
export interface FakeOptions {
  /** JSON-lines file every API call is appended to. */
  log?: string;
  /** `METHOD /path STATUS message`: an injected error reply. */
  fail?: string;
  /** Print this on stderr and exit 1 at once. */
  exitAtOnce?: string;
}

/** A temp directory with fake `cloud-hypervisor` and `firecracker` executables. */
export async function fakeBin(
  options: FakeOptions = {},
): Promise<{ dir: string; ch: string; fc: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-fake-vmm-" });
  const q = (v: string) => `'${v.replaceAll("'", "'\\''")}'`;
  const env = [
    options.log ? `export OVM_FAKE_VMM_LOG=${q(options.log)}` : "",
    options.fail ? `export OVM_FAKE_VMM_FAIL=${q(options.fail)}` : "",
    options.exitAtOnce ? `export OVM_FAKE_VMM_EXIT_AT_ONCE=${q(options.exitAtOnce)}` : "",
  ].filter(Boolean).join("\n");
  for (const [name, kind] of [["cloud-hypervisor", "ch"], ["firecracker", "fc"]]) {
    const p = join(dir, name);
    await Deno.writeTextFile(
      p,
      `#!/bin/sh\n${env}\nexec "${Deno.execPath()}" run -A --quiet "${FAKE_MAIN}" ${kind} "$@"\n`,
    );
    await Deno.chmod(p, 0o755);
  }
  return {
    dir,
    ch: join(dir, "cloud-hypervisor"),
    fc: join(dir, "firecracker"),
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

export interface LoggedCall {
  method: string;
  path: string;
  body?: Record<string, unknown>;
  status: number;
  violations: { where: string; message: string }[];
}

export async function readCallLog(path: string): Promise<LoggedCall[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Packs the files of {@linkcode makeSpec} (base + top qcow2) as `fake/vm:1`, preferring `runtime`. */
export async function packFakeArtifact(home: string, runtime: string): Promise<string> {
  const files = await makeSpec(join(home, "src"));
  const pack = await ovmIn(
    home,
    "pack",
    "--kernel",
    files.kernel,
    "--initrd",
    files.initrd!,
    "--disk",
    join(home, "src", "work", "base.qcow2"),
    "--disk",
    join(home, "src", "work", "top.qcow2"),
    "--runtime",
    runtime,
    "-t",
    "fake/vm:1",
  );
  assert.equal(pack.code, 0, pack.stderr);
  return "fake/vm:1";
}

/**
 * A spec that boots the demo artifact of `home` (its system kernel and
 * initrd, its disk chain, no devices, no network) in `vmDir`.
 */
export async function demoSpec(
  home: string,
  ref: string,
  options: { vmDir: string; id?: string; kernel?: string; accel?: "kvm" | "tcg" },
): Promise<VmSpec> {
  const { vmDir } = options;
  const store = await ContentStore.open(home);
  const m = (await loadArtifact(store, ref)).manifest;
  const set = await listSystem(home);
  const k = set.kernels[0];
  const i = set.initrds[0];
  return {
    id: options.id ?? "real",
    kernel: options.kernel ?? join(imageDir(home, "kernel", k.version, k.arch), k.file),
    initrd: join(imageDir(home, "initrd", i.version, i.arch), i.file),
    cmdline: `${m.kernel.args} ovms.net=none`,
    memoryBytes: 256 << 20,
    cpus: 1,
    accel: options.accel ?? "kvm",
    rootDisk: {
      layers: await assembleChain(store, m.diskLayers),
      overlay: join(vmDir, "overlay.qcow2"),
    },
    extraDisks: [],
    devices: [],
    network: { mode: "none", publish: [] },
    vmDir,
    consoleLog: join(vmDir, "console.log"),
    detach: false,
  };
}

/**
 * The cherrybomb fixture, copied where the VMM's unprivileged uid can run it:
 * a checkout may sit in a directory only root can enter (a 0700 temp dir,
 * /root), and ovm runs a descriptor runtime as the VMM's user. The copy is
 * named by its content, written once and renamed into place.
 */
export async function cherrybombFixture(): Promise<string> {
  const { TEST_CACHE } = await import("./vm.ts");
  const bytes = await Deno.readFile(new URL("../fixtures/cherrybomb", import.meta.url));
  const hex = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)))
    .map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 16);
  const dir = join(TEST_CACHE, "fixtures");
  const path = join(dir, `cherrybomb-${hex}`);
  if (await Deno.stat(path).then((s) => s.isFile, () => false)) return path;
  await Deno.mkdir(dir, { recursive: true, mode: 0o755 });
  for (const d of [TEST_CACHE, dir]) await Deno.chmod(d, 0o755).catch(() => {});
  const tmp = `${path}.${crypto.randomUUID()}`;
  await Deno.writeFile(tmp, bytes, { mode: 0o755 });
  await Deno.chmod(tmp, 0o755);
  await Deno.rename(tmp, path);
  return path;
}
