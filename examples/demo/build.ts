/**
 * @module
 * Builds the demo artifact into a local store and prints its ref: a
 * busybox-based ext4 root as a base qcow2 layer, a qcow2 diff layer on top
 * (adding /etc/ovms-demo/diff.txt, /srv/index.html and /demo.sh), ovm's
 * default kernel and initrd, an ivshmem device, and a bootstrap config that
 * runs /demo.sh.
 *
 *   deno run -A examples/demo/build.ts [--home DIR] [--tag demo/busybox:1.0]
 *
 * The runtime tests build their artifact with {@linkcode buildDemoArtifact} too.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pack } from "../../src/cli/pack.ts";
import { ContentStore, defaultHome } from "../../src/store/mod.ts";
import { ensureSystem, initCmdline } from "../../src/system/mod.ts";

export const DEMO_TAG = "demo/busybox:1.0";

/** The demo workload: shows both layers, the ivshmem region and the kernel. */
export const DEMO_SCRIPT = `#!/bin/sh
echo "hello from the OVMS demo guest ($(uname -r))"
echo "base layer says: $(cat /etc/ovms-demo/base.txt)"
echo "diff layer says: $(cat /etc/ovms-demo/diff.txt)"
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
    addr=$(sed -n 3p "$d/resource" | cut -d' ' -f1)
    echo 1 > "$d/enable"
    devmem "$addr" 32 0x534d564f
    echo "ivshmem region at $addr (PCI $(basename "$d") BAR2): wrote OVMS"
  fi
done
echo "demo done"
`;

async function sh(cmd: string, args: string[], cwd?: string): Promise<void> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A busybox root: every applet linked in /bin, /etc/passwd, and `files`. */
async function makeRoot(dir: string, files: Record<string, string>): Promise<void> {
  for (const d of ["bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "srv", "mnt"]) {
    await Deno.mkdir(join(dir, d), { recursive: true });
  }
  await Deno.copyFile("/bin/busybox", join(dir, "bin/busybox"));
  await Deno.chmod(join(dir, "bin/busybox"), 0o755);
  const list = await new Deno.Command("/bin/busybox", { args: ["--list"], stdout: "piped" })
    .output();
  for (const a of new TextDecoder().decode(list.stdout).split("\n")) {
    if (!a || a === "busybox" || a.includes("/")) continue;
    await Deno.symlink("busybox", join(dir, "bin", a)).catch(() => {});
  }
  await Deno.writeTextFile(join(dir, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  await Deno.writeTextFile(join(dir, "etc/group"), "root:x:0:\n");
  for (const [p, text] of Object.entries(files)) {
    const full = join(dir, p);
    await Deno.mkdir(join(full, ".."), { recursive: true });
    await Deno.writeTextFile(full, text);
    if (text.startsWith("#!")) await Deno.chmod(full, 0o755);
  }
}

/**
 * Writes base.qcow2 (busybox root) and diff.qcow2 (the files in `diffFiles`,
 * as a qcow2 diff naming no backing file) into `dir`.
 */
export async function buildDemoDisks(
  dir: string,
  options: { baseFiles?: Record<string, string>; diffFiles?: Record<string, string> } = {},
): Promise<{ base: string; diff: string }> {
  const root = join(dir, "rootfs");
  await makeRoot(root, {
    "etc/ovms-demo/base.txt": "I live in the base layer\n",
    ...(options.baseFiles ?? {}),
  });
  const baseRaw = join(dir, "base.raw");
  await sh("mkfs.ext4", ["-q", "-F", "-d", root, "-L", "root", baseRaw, "32M"]);
  const base = join(dir, "base.qcow2");
  await sh("qemu-img", ["convert", "-O", "qcow2", baseRaw, base]);
  // The diff: change a copy of the raw disk with debugfs, then keep only the
  // clusters that differ from the base, and drop the backing name.
  const diffFiles = {
    "etc/ovms-demo/diff.txt": "I live in the diff layer\n",
    "srv/index.html": "<h1>served by busybox httpd inside an OVMS VM</h1>\n",
    "demo.sh": DEMO_SCRIPT,
    ...(options.diffFiles ?? {}),
  };
  const modRaw = join(dir, "mod.raw");
  await Deno.copyFile(baseRaw, modRaw);
  const cmds: string[] = [];
  const made = new Set<string>();
  for (const [p, text] of Object.entries(diffFiles)) {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (!made.has(d)) cmds.push(`mkdir /${d}`);
      made.add(d);
    }
    const src = join(dir, `src-${cmds.length}`);
    await Deno.writeTextFile(src, text);
    await Deno.chmod(src, text.startsWith("#!") ? 0o755 : 0o644);
    cmds.push(`rm /${p}`, `write ${src} /${p}`);
  }
  await Deno.writeTextFile(join(dir, "debugfs.cmds"), cmds.join("\n") + "\n");
  // debugfs reports "mkdir: file exists" and "rm: not found" without failing.
  await sh("debugfs", ["-w", "-f", join(dir, "debugfs.cmds"), modRaw]);
  const diff = join(dir, "diff.qcow2");
  await sh("qemu-img", ["convert", "-O", "qcow2", "-B", base, "-F", "qcow2", modRaw, diff]);
  await sh("qemu-img", ["rebase", "-u", "-b", "", diff]);
  for (const f of [baseRaw, modRaw]) await Deno.remove(f);
  await Deno.remove(root, { recursive: true });
  return { base, diff };
}

export interface DemoArtifact {
  ref: string;
  digest: string;
  diskDigests: string[];
}

/** Builds the demo artifact into the store of `home`; the kernel comes from `ensureSystem`. */
export async function buildDemoArtifact(
  home: string,
  options: {
    tag?: string;
    cacheDir?: string;
    diffFiles?: Record<string, string>;
    /** Attach the ivshmem device (default true). */
    devices?: boolean;
    onProgress?: (m: string) => void;
  } = {},
): Promise<DemoArtifact> {
  const system = await ensureSystem(home, {
    cacheDir: options.cacheDir,
    onProgress: options.onProgress,
  });
  const work = await Deno.makeTempDir({ prefix: "ovm-demo-" });
  try {
    const disks = await buildDemoDisks(work, { diffFiles: options.diffFiles });
    const bootstrap = join(work, "bootstrap.json");
    await Deno.writeTextFile(
      bootstrap,
      JSON.stringify({ cmd: ["/demo.sh"], env: ["DEMO=1"], hostname: "ovms-demo" }),
    );
    const store = await ContentStore.open(home);
    const res = await pack(store, {
      kernel: system.kernel.path,
      initrd: system.initrd.path,
      disks: [{ path: disks.base, format: "qcow2" }, { path: disks.diff, format: "qcow2" }],
      args: initCmdline({ root: "/dev/vda", rootFs: "ext4", rootMode: "rw", mode: "exec" }),
      devices: options.devices === false
        ? []
        : [{ type: "ivshmem", name: "shm0", size: 1024 * 1024, mmio_addr: "0x10000000" }],
      bootstrap,
      tag: options.tag ?? DEMO_TAG,
      preferredRuntime: ["qemu"],
    });
    return {
      ref: res.ref,
      digest: res.descriptor.digest,
      diskDigests: res.manifest.diskLayers.map((l) => l.ref),
    };
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      home: { type: "string" },
      tag: { type: "string" },
      "no-devices": { type: "boolean" },
    },
  });
  const home = values.home ?? defaultHome();
  const a = await buildDemoArtifact(home, {
    tag: values.tag,
    devices: !values["no-devices"],
    onProgress: (m) => console.error(m),
  });
  console.log(a.ref);
}
