/**
 * @module
 * `ovm system`: the guest kernels and initrds under `$OVM_HOME/system/`
 * (ensure, ls, kernel add, initrd build, rm).
 */
import {
  addKernel,
  buildInitrd,
  DEFAULT_KERNEL,
  ensureSystem,
  type InitrdMeta,
  type KernelMeta,
  listSystem,
  removeSystemVersion,
  snapshotUsing,
} from "../system/mod.ts";
import { homePaths } from "../store/mod.ts";
import { exists } from "../util/fs.ts";
import { formatBytes } from "../util/size.ts";
import { bool, type Command, str } from "./command.ts";

const ensureCommand: Command = {
  name: "ensure",
  summary: "Fetch and build the default kernel and initrd if missing",
  usage: "system ensure [--json]",
  description: `The default kernel is ${DEFAULT_KERNEL.debianPackage} (Debian). ` +
    "When both images are present this only reads their metadata.",
  async run(ctx) {
    const set = await ensureSystem(ctx.home, {
      signal: ctx.signal,
      onProgress: (m) => ctx.out.info(m),
    });
    ctx.out.result(set);
    ctx.out.line(`kernel  ${set.kernel.version}  ${set.kernel.path}`);
    ctx.out.line(`initrd  ${set.initrd.version}  ${set.initrd.path}`);
  },
};

function kernelRow(k: KernelMeta) {
  return {
    kind: "kernel" as const,
    version: k.version,
    arch: k.arch,
    digest: k.digest,
    size: k.size,
    source: k.source,
    modules: k.modules.length,
    created: k.created,
  };
}

function initrdRow(i: InitrdMeta) {
  return {
    kind: "initrd" as const,
    version: i.version,
    arch: i.arch,
    digest: i.digest,
    size: i.size,
    kernelVersion: i.kernelVersion,
    created: i.created,
  };
}

const lsCommand: Command = {
  name: "ls",
  summary: "List the installed kernels and initrds",
  usage: "system ls [--json]",
  async run(ctx) {
    const { kernels, initrds } = await listSystem(ctx.home);
    const rows = [...kernels.map(kernelRow), ...initrds.map(initrdRow)];
    ctx.out.result(rows);
    ctx.out.table(
      ["KIND", "VERSION", "ARCH", "DIGEST", "SIZE", "FROM"],
      rows.map((r) => [
        r.kind,
        r.version,
        r.arch,
        r.digest.slice(7, 19),
        formatBytes(r.size),
        r.kind === "kernel"
          ? ("package" in r.source
            ? r.source.package
            : "url" in r.source
            ? r.source.url
            : r.source.path)
          : `kernel ${r.kernelVersion}`,
      ]),
    );
  },
};

const kernelAddCommand: Command = {
  name: "add",
  summary: "Add a guest kernel from a Debian package, a .deb, a URL or a file",
  usage: "system kernel add <source> [--version V] [--sha256 HEX] [--force]",
  description:
    "SOURCE is a Debian package name (linux-image-<ver>-cloud-amd64, or debian:<pkg>), " +
    "a local .deb, an http(s) URL (needs --sha256), or a kernel file (needs --version). " +
    "Kernels without a module tree must have the virtio, ext4, erofs, overlay and vsock drivers built in.",
  examples: [
    "ovm system kernel add linux-image-6.1.0-56-cloud-amd64",
    "ovm system kernel add https://example.org/vmlinux --sha256 <hex> --version 6.2-ch",
  ],
  args: { min: 1, max: 1, names: "SOURCE" },
  options: {
    version: {
      type: "string",
      valueName: "V",
      help: "Kernel release (uname -r) for a bare kernel",
    },
    sha256: { type: "string", valueName: "HEX", help: "Pinned sha256 of the download or file" },
    force: { type: "boolean", help: "Replace an installed kernel of the same version" },
  },
  async run(ctx, input) {
    const meta = await addKernel(ctx.home, input.args[0], {
      version: str(input, "version"),
      sha256: str(input, "sha256"),
      force: bool(input, "force"),
      signal: ctx.signal,
      onProgress: (m) => ctx.out.info(m),
    });
    ctx.out.result(kernelRow(meta));
    ctx.out.line(`kernel ${meta.version} added (${meta.modules.length} modules, ${meta.digest})`);
  },
};

const kernelCommand: Command = {
  name: "kernel",
  summary: "Manage guest kernels",
  usage: "system kernel <command>",
  subcommands: [kernelAddCommand],
};

const initrdBuildCommand: Command = {
  name: "build",
  summary: "Build the initrd (busybox + modules + ovms-init) for a kernel",
  usage: "system initrd build [--kernel V] [--busybox FILE] [--force]",
  options: {
    kernel: {
      type: "string",
      valueName: "V",
      help: `Kernel version (default ${DEFAULT_KERNEL.version})`,
    },
    busybox: { type: "string", valueName: "FILE", help: "Static busybox binary to use" },
    force: { type: "boolean", help: "Rebuild an existing initrd of the same version" },
  },
  async run(ctx, input) {
    const meta = await buildInitrd(ctx.home, str(input, "kernel") ?? DEFAULT_KERNEL.version, {
      busybox: str(input, "busybox"),
      force: bool(input, "force"),
      signal: ctx.signal,
      onProgress: (m) => ctx.out.info(m),
    });
    ctx.out.result(initrdRow(meta));
    ctx.out.line(`initrd ${meta.version} built (${formatBytes(meta.size)}, ${meta.digest})`);
  },
};

const initrdCommand: Command = {
  name: "initrd",
  summary: "Manage initrds",
  usage: "system initrd <command>",
  subcommands: [initrdBuildCommand],
};

const rmCommand: Command = {
  name: "rm",
  summary: "Remove a kernel or initrd version (refused while in use)",
  usage: "system rm <version>",
  args: { min: 1, max: 1, names: "VERSION" },
  async run(ctx, input) {
    const r = await removeSystemVersion(ctx.home, input.args[0], {
      isUsedByArtifact: async (v) => {
        // Only look in a store that exists: rm must not create one.
        if (!(await exists(homePaths(ctx.home).store))) return undefined;
        return await snapshotUsing(await ctx.store(), v);
      },
    });
    ctx.out.result(r);
    for (const x of r.removed) ctx.out.line(`removed ${x.kind} ${x.version}`);
  },
};

export const systemCommand: Command = {
  name: "system",
  summary: "Manage guest kernels and initrds",
  usage: "system <command>",
  description: "Kernels and initrds live side by side by version under $OVM_HOME/system/.",
  subcommands: [ensureCommand, lsCommand, kernelCommand, initrdCommand, rmCommand],
};
