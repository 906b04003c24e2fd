/**
 * @module
 * podman and buildah (Debian 12 packages from `scripts/setup.sh`) for the
 * interop tests, confined to a temp directory: their image storage (overlay
 * driver, so a layer that recreates a directory carries an opaque whiteout as
 * on any podman host), run root, events log, network config, auth file and
 * HOME all live there, and it is unmounted and removed on dispose, also when
 * the test fails. Each command runs in a private mount namespace whose
 * /var/lib is an empty tmpfs, so the host's container storage, blob-info
 * cache and CNI state are never read or written.
 * Containers run under runc with cgroupfs, no network (pass `--network none`
 * to `podman build` too: its RUN steps otherwise get a CNI bridge) and ulimits the
 * sandbox allows, so `RUN` steps and `podman run` work inside a container
 * host too. Offline: any non-loopback request goes to a closed port.
 */
import { join } from "node:path";
import type { ToolResult } from "./tools.ts";

/** `Deno.test` options that skip, saying why, when podman or buildah cannot run here. */
export async function needsPodman(): Promise<{ ignore: boolean }> {
  for (const name of ["podman", "buildah"]) {
    const why = await new Deno.Command(name, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output()
      .then((o) => (o.success ? "" : `${name} --version exited ${o.code}`))
      .catch((e) => `${name} is not installed (scripts/setup.sh installs it): ${e.message}`);
    if (why) {
      console.warn(`skipping: ${why}`);
      return { ignore: true };
    }
  }
  return { ignore: false };
}

export interface Podman extends AsyncDisposable {
  /** The temp directory holding storage, run root and config. */
  dir: string;
  env: Record<string, string>;
  /** Runs podman; throws with its stderr unless it exits 0 (or `allowFailure`). */
  podman(args: string[], options?: RunOptions): Promise<ToolResult>;
  buildah(args: string[], options?: RunOptions): Promise<ToolResult>;
}

export interface RunOptions {
  cwd?: string;
  allowFailure?: boolean;
  timeoutMs?: number;
}

/** Mount points at or below `dir`, deepest first. */
async function mountsBelow(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const unescape = (s: string) =>
    s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
  return text.split("\n").map((l) => unescape(l.split(" ")[4] ?? ""))
    .filter((m) => m === dir || m.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
}

/** A podman and buildah whose every file lives under a fresh temp directory. */
export async function startPodman(): Promise<Podman> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-podman-" });
  const p = (...s: string[]) => join(dir, ...s);
  for (const d of ["storage", "run", "tmp", "home", "networks"]) await Deno.mkdir(p(d));
  // buildah refuses an auth file that does not exist.
  await Deno.writeTextFile(p("home", "auth.json"), '{"auths":{}}\n');
  await Deno.writeTextFile(
    p("storage.conf"),
    `[storage]
driver = "overlay"
graphroot = "${p("storage")}"
runroot = "${p("run")}"
`,
  );
  await Deno.writeTextFile(
    p("containers.conf"),
    `[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "${p("run", "events.log")}"
tmp_dir = "${p("tmp")}"

[network]
network_config_dir = "${p("networks")}"
`,
  );
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: p("home"),
    XDG_CONFIG_HOME: p("home", ".config"),
    XDG_DATA_HOME: p("home", ".local", "share"),
    TMPDIR: p("tmp"),
    CONTAINERS_STORAGE_CONF: p("storage.conf"),
    CONTAINERS_CONF: p("containers.conf"),
    REGISTRY_AUTH_FILE: p("home", "auth.json"),
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_PROXY: "127.0.0.1,localhost",
  };
  const tool = (name: string) => async (args: string[], options: RunOptions = {}) => {
    // A private mount namespace whose /var/lib is an empty tmpfs: podman and
    // buildah run as root keep their blob-info cache in /var/lib/containers
    // (no flag moves it) and CNI state in /var/lib/cni; none of it reaches the host.
    const out = await new Deno.Command("unshare", {
      args: [
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        'mount -t tmpfs -o mode=0755 ovm-podman-var-lib /var/lib && exec "$@"',
        "sh",
        name,
        ...args,
      ],
      cwd: options.cwd,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(options.timeoutMs ?? 300_000),
    }).output();
    const dec = new TextDecoder();
    const r = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
    if (r.code !== 0 && !options.allowFailure) {
      throw new Error(`${name} ${args.join(" ")} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
    }
    return r;
  };
  return {
    dir,
    env,
    podman: tool("podman"),
    buildah: tool("buildah"),
    async [Symbol.asyncDispose]() {
      // overlay keeps its graph root bind-mounted (private); containers may leave mounts too.
      for (const m of await mountsBelow(dir)) {
        await new Deno.Command("umount", { args: ["-l", m], stdout: "null", stderr: "null" })
          .output().catch(() => {});
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
