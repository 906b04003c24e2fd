/**
 * @module
 * Test helpers that boot a kernel + initrd + virtio disks under QEMU TCG and
 * read the serial console, plus a tiny busybox root disk to boot into. Used
 * by the system tests and by the `ovm run` tests.
 */
import { join } from "node:path";
import { parseConsole } from "../../src/system/mod.ts";

/** The shared download cache for tests, so one suite run downloads the kernel once. */
export const TEST_CACHE = Deno.env.get("OVM_TEST_CACHE") ?? "/tmp/ovm-test-cache";

export interface VmDisk {
  path: string;
  format?: "raw" | "qcow2";
  readOnly?: boolean;
}

export interface BootOptions {
  kernel: string;
  initrd: string;
  /** Kernel command line (see `initCmdline`). */
  cmdline: string;
  /** Attached in order as virtio-blk: /dev/vda, /dev/vdb, ... */
  disks?: VmDisk[];
  memoryMiB?: number;
  /** QEMU user networking with a virtio-net NIC. */
  net?: boolean;
  /** Killed after this long; the error shows the last console lines. Default 120 s. */
  timeoutMs?: number;
  /** Extra QEMU arguments. */
  extraArgs?: string[];
  /**
   * Steps run while the guest is up: when the console matches `waitFor`,
   * `monitor` is sent to the QEMU human monitor (e.g. `sendkey ctrl-alt-delete`).
   */
  interact?: { waitFor: RegExp; monitor: string }[];
}

export interface BootResult {
  /** Everything the guest wrote on ttyS0. */
  console: string;
  /** The code in the guest's `OVMS-EXIT: <code>` line, if it printed one. */
  exitCode?: number;
  qemuCode: number;
}

/** The last `n` lines of console output, for failure messages. */
export function consoleTail(text: string, n = 30): string {
  return text.replaceAll("\r", "").trimEnd().split("\n").slice(-n).join("\n");
}

/** Parses `OVMS-EXIT: <code>` from console output (the last one wins). */
export function parseExitLine(text: string): number | undefined {
  return parseConsole(text).exitCode;
}

/** The QEMU arguments for a direct kernel boot under TCG; exported for other helpers. */
export function qemuArgs(options: BootOptions, serialFile: string): string[] {
  const args = [
    "-accel",
    "tcg",
    "-m",
    String(options.memoryMiB ?? 256),
    "-smp",
    "1",
    "-nodefaults",
    "-no-reboot",
    "-display",
    "none",
    "-serial",
    `file:${serialFile}`,
    "-kernel",
    options.kernel,
    "-initrd",
    options.initrd,
    "-append",
    options.cmdline,
  ];
  for (const [i, d] of (options.disks ?? []).entries()) {
    args.push(
      "-drive",
      `file=${d.path},if=none,id=d${i},format=${d.format ?? "raw"}${
        d.readOnly ? ",readonly=on" : ""
      }`,
      "-device",
      `virtio-blk-pci,drive=d${i}`,
    );
  }
  if (options.net) args.push("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0");
  args.push(...(options.extraArgs ?? []));
  return args;
}

/** Boots, waits for QEMU to exit (the guest powers off), returns the console. */
export async function bootVm(options: BootOptions): Promise<BootResult> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-vm-" });
  const serial = join(dir, "console.log");
  const monitor = join(dir, "monitor.sock");
  const extra = options.interact?.length ? ["-monitor", `unix:${monitor},server=on,wait=off`] : [];
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [...qemuArgs(options, serial), ...extra],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  try {
    timer = setTimeout(() => {
      timedOut = true;
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, options.timeoutMs ?? 120_000);
    const status = child.output();
    let exited = false;
    status.finally(() => (exited = true)).catch(() => {});
    for (const step of options.interact ?? []) {
      while (!exited && !step.waitFor.test(await Deno.readTextFile(serial).catch(() => ""))) {
        await new Promise((r) => setTimeout(r, 100));
      }
      if (exited) break;
      await sendMonitor(monitor, step.monitor);
    }
    const out = await status;
    const text = await Deno.readTextFile(serial).catch(() => "");
    if (timedOut) {
      throw new Error(
        `VM did not power off within ${options.timeoutMs ?? 120_000} ms; last console lines:\n` +
          consoleTail(text),
      );
    }
    if (!out.success) {
      const err = new TextDecoder().decode(out.stderr);
      throw new Error(
        `qemu exited with ${out.code}: ${err}\nlast console lines:\n${consoleTail(text)}`,
      );
    }
    return {
      console: text.replaceAll("\r", ""),
      exitCode: parseExitLine(text),
      qemuCode: out.code,
    };
  } finally {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Sends one command to a QEMU human monitor socket. */
export async function sendMonitor(socket: string, command: string): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    await conn.write(new TextEncoder().encode(command + "\n"));
    // Let QEMU read the line before the socket closes.
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    conn.close();
  }
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/**
 * A small ext4 root disk: static busybox with applet links in /bin, an
 * /etc/passwd with root and `app` (uid 1000), and any extra files given.
 */
export async function makeBusyboxRootDisk(
  path: string,
  options: { files?: Record<string, string>; sizeMiB?: number; fs?: "ext4" | "erofs" } = {},
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "ovm-rootfs-" });
  try {
    for (const d of ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app", "sbin"]) {
      await Deno.mkdir(join(root, d), { recursive: true });
    }
    await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
    await Deno.chmod(join(root, "bin/busybox"), 0o755);
    const applets = ["sh", "echo", "env", "pwd", "id", "cat", "ls", "sleep", "true", "false"];
    applets.push("ip", "hostname", "poweroff", "mount", "kill", "ps", "sync", "touch", "grep");
    for (const a of applets) {
      await Deno.symlink("busybox", join(root, "bin", a));
    }
    await Deno.writeTextFile(
      join(root, "etc/passwd"),
      "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    );
    await Deno.writeTextFile(join(root, "etc/group"), "root:x:0:\napp:x:1000:\nstaff:x:50:\n");
    for (const [p, text] of Object.entries(options.files ?? {})) {
      const full = join(root, p);
      await Deno.mkdir(join(full, ".."), { recursive: true });
      await Deno.writeTextFile(full, text);
      if (text.startsWith("#!")) await Deno.chmod(full, 0o755);
    }
    await Deno.remove(path).catch(() => {});
    if (options.fs === "erofs") {
      await sh("mkfs.erofs", ["--quiet", "--force-uid=0", "--force-gid=0", "-T0", path, root]);
      return;
    }
    await sh("mkfs.ext4", [
      "-q",
      "-F",
      "-d",
      root,
      "-E",
      "root_owner=0:0",
      "-L",
      "root",
      path,
      `${options.sizeMiB ?? 16}M`,
    ]);
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
}
