/**
 * @module
 * A real containerd 1.6 for the shim tests, with its own root, state, config
 * and sockets under a temp dir (never the host's containerd), the
 * `containerd-shim-ovm-v2` launcher on its PATH, and an ovm home with the
 * system kernel and initrd. Disposal stops containerd, kills what it left
 * (shims whose cwd is one of our bundles, QEMUs of our home — by pid),
 * unmounts what is mounted under the temp dir, and removes it. With
 * `netns`, containerd (and so every shim, QEMU, bridge, TAP and nftables
 * rule it makes) runs inside that network namespace; `ctr` reaches it
 * through its UNIX socket from outside.
 */
import { join } from "node:path";
import { installLauncher } from "../../src/shim/mod.ts";
import { ensureSystem } from "../../src/system/mod.ts";
import { buildTestImage, sh } from "./convert.ts";
import { killAll, waitFor } from "./runtime.ts";
import { TEST_CACHE } from "./vm.ts";

export const TEST_IMAGE = "docker.io/library/ovmtest:1.0";

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class TestContainerd implements AsyncDisposable {
  readonly dir: string;
  readonly home: string;
  readonly socket: string;
  readonly config: string;
  readonly bin: string;
  /** Where a test may run `ovm serve`; containerd (and so the shim) has it as $OVM_SOCKET. */
  readonly ovmSocket: string;
  /** The network namespace containerd runs in (`ip netns exec`); undefined: the host's. */
  readonly netns?: string;
  #proc?: Deno.ChildProcess;

  private constructor(dir: string, netns?: string) {
    this.netns = netns;
    this.dir = dir;
    this.home = join(dir, "home");
    this.socket = join(dir, "c.sock");
    this.config = join(dir, "config.toml");
    this.bin = join(dir, "bin");
    this.ovmSocket = join(dir, "ovm.sock");
  }

  /**
   * Starts containerd with the ovm shim installed and the test image imported.
   * `cri`: enable the CRI plugin with this TOML (`{dir}` is replaced by the temp dir).
   * `netns`: run containerd inside this network namespace. `shimNet`: the node's default task
   * network, written into the launcher as `ovm shim install --net` does.
   */
  static async start(
    options: { cri?: string; netns?: string; shimNet?: string } = {},
  ): Promise<TestContainerd> {
    // Short: shim sockets live at <state>/s/<32 hex> and must fit in sun_path.
    const dir = await Deno.makeTempDir({ prefix: "ovm-ctd-" });
    const c = new TestContainerd(dir, options.netns);
    try {
      await ensureSystem(c.home, { cacheDir: TEST_CACHE });
      await installLauncher(c.bin, { home: c.home, net: options.shimNet });
      const disabled = [
        ...(options.cri === undefined ? ["io.containerd.grpc.v1.cri"] : []),
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.internal.v1.tracing",
      ];
      await Deno.writeTextFile(
        c.config,
        [
          "version = 2",
          `root = "${dir}/root"`,
          `state = "${dir}/state"`,
          `disabled_plugins = ${JSON.stringify(disabled)}`,
          "[grpc]",
          `  address = "${c.socket}"`,
          "[ttrpc]",
          `  address = "${c.socket}.ttrpc"`,
          "[debug]",
          '  level = "debug"',
          "[metrics]",
          '  address = ""',
          '[plugins."io.containerd.internal.v1.opt"]',
          `  path = "${dir}/opt"`,
          (options.cri ?? "").replaceAll("{dir}", dir),
          "",
        ].join("\n"),
      );
      await c.startDaemon();
      const layout = join(dir, "image");
      await buildTestImage(layout);
      await sh("tar", ["-C", layout, "-cf", `${layout}.tar`, "."]);
      await c.ctrOk("image", "import", "--base-name", "docker.io/library/ovmtest", `${layout}.tar`);
      if (options.cri !== undefined) {
        // CRI's images live in the k8s.io namespace.
        await c.ctrOk(
          "-n",
          "k8s.io",
          "image",
          "import",
          "--base-name",
          "docker.io/library/ovmtest",
          `${layout}.tar`,
        );
      }
      return c;
    } catch (e) {
      await c[Symbol.asyncDispose]();
      throw e;
    }
  }

  async startDaemon(): Promise<void> {
    await Deno.mkdir(join(this.dir, "xdg"), { recursive: true, mode: 0o700 });
    const log = await Deno.open(join(this.dir, "containerd.log"), {
      append: true,
      create: true,
    });
    const argv = ["containerd", "--config", this.config];
    // `ip netns exec` execs containerd in place: the child's pid is containerd's.
    if (this.netns) argv.unshift("ip", "netns", "exec", this.netns);
    this.#proc = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env: {
        PATH: `${this.bin}:${Deno.env.get("PATH")}`,
        OVM_HOME: this.home,
        OVM_SOCKET: this.ovmSocket,
        // Where containerd unpacks a checkpoint to restore (and leaves it): our temp dir.
        XDG_RUNTIME_DIR: join(this.dir, "xdg"),
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    // containerd logs to stderr; keep it for failure messages.
    (async () => {
      for await (const chunk of this.#proc!.stderr) await log.write(chunk);
      log.close();
    })().catch(() => {});
    await waitFor(async () => (await this.ctr("version")).code === 0 ? true : undefined, {
      timeoutMs: 30_000,
      what: "containerd to answer",
    });
  }

  /** Stops containerd (SIGTERM); its shims keep running. */
  async stopDaemon(): Promise<void> {
    const p = this.#proc;
    if (!p) return;
    this.#proc = undefined;
    try {
      p.kill("SIGTERM");
    } catch { /* gone */ }
    const t = setTimeout(() => {
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
    }, 10_000);
    await p.status;
    clearTimeout(t);
  }

  /**
   * `ctr run -d` of {@linkcode TEST_IMAGE} under the ovm runtime (256 MiB)
   * running `sh -c script`, its output logged to `<dir>/<id>.log`, each of
   * `annotations` passed with `--annotation`; resolves with the log's path once
   * the workload printed "started".
   */
  async runDetached(
    id: string,
    script: string,
    options: { annotations?: string[] } = {},
  ): Promise<string> {
    const log = join(this.dir, `${id}.log`);
    await this.ctrOk(
      "run",
      "-d",
      "--log-uri",
      `file://${log}`,
      ...(options.annotations ?? []).flatMap((a) => ["--annotation", a]),
      "--runtime",
      "io.containerd.ovm.v2",
      "--memory-limit",
      String(256 << 20),
      TEST_IMAGE,
      id,
      "/bin/sh",
      "-c",
      script,
    );
    await waitFor(
      async () => (await Deno.readTextFile(log).catch(() => "")).includes("started") || undefined,
      { timeoutMs: 120_000, what: `${id} to print "started"` },
    );
    return log;
  }

  async ctr(...args: string[]): Promise<CtrResult> {
    return await this.ctrWithStdin(undefined, ...args);
  }

  /** Runs ctr with `input` on its stdin (then end of file); none: /dev/null. */
  async ctrWithStdin(input: string | undefined, ...args: string[]): Promise<CtrResult> {
    const child = new Deno.Command("ctr", {
      args: ["--address", this.socket, ...args],
      stdin: input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(240_000),
    }).spawn();
    if (input !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(input));
      await w.close();
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  }

  async ctrOk(...args: string[]): Promise<CtrResult> {
    const r = await this.ctr(...args);
    if (r.code !== 0) {
      throw new Error(
        `ctr ${args.join(" ")} failed (${r.code}): ${r.stderr}\n${await this.logTail()}`,
      );
    }
    return r;
  }

  /** The task's status column in `ctr task ls`, or undefined when it is not listed. */
  async taskStatus(id: string): Promise<string | undefined> {
    const r = await this.ctrOk("task", "ls");
    const row = r.stdout.split("\n").map((l) => l.trim().split(/\s+/)).find((c) => c[0] === id);
    return row?.[2];
  }

  /** Pids of shims serving tasks of this containerd (their cwd is a bundle under our state dir). */
  async shimPids(id?: string): Promise<number[]> {
    const bundles = join(this.dir, "state", "io.containerd.runtime.v2.task");
    const out: number[] = [];
    for await (const e of Deno.readDir("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const cwd = await Deno.readLink(`/proc/${e.name}/cwd`).catch(() => "");
      if (!cwd.startsWith(bundles + "/")) continue;
      if (id !== undefined && !cwd.endsWith(`/${id}`)) continue;
      const exe = await Deno.readLink(`/proc/${e.name}/exe`).catch(() => "");
      if (exe.endsWith("/deno") || exe.endsWith("/ovm")) out.push(Number(e.name));
    }
    return out;
  }

  async logTail(n = 25): Promise<string> {
    const text = await Deno.readTextFile(join(this.dir, "containerd.log")).catch(() => "");
    return text.trimEnd().split("\n").slice(-n).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopDaemon().catch(() => {});
    for (const pid of await this.shimPids().catch(() => [])) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await killAll(this.home);
    const mounts = (await Deno.readTextFile("/proc/self/mountinfo"))
      .split("\n").map((l) => l.split(" ")[4]).filter((m) => m?.startsWith(this.dir + "/"));
    for (const m of mounts.reverse()) {
      await new Deno.Command("umount", { args: ["-l", m] }).output().catch(() => {});
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
