/**
 * @module
 * `containerd-shim-ovm-v2` as containerd 1.6 runs it (runtime-v2.md, spec
 * §13.1): Go-style flags, then `start`, `delete`, or ovm's own `serve`.
 *
 * - `start` (cwd = bundle): spawns the serving shim in its own session (its
 *   output into `<bundle>/shim.log`, never containerd's pipe), waits until it
 *   accepts connections on `<state>/s/<hash>`, writes `<bundle>/address`, and
 *   prints `unix://<socket>`. One shim per task.
 * - `serve`: the ttrpc Task service for that task, until Shutdown.
 * - `delete`: containerd lost the shim; kill the task's VM, remove its
 *   instance, ref and rootfs mount, and print a DeleteResponse (protobuf).
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { ValidationError } from "../errors.ts";
import { spawn } from "../process/mod.ts";
import { ContentStore } from "../store/mod.ts";
import { VERSION } from "../version.ts";
import { EventPublisher } from "./events.ts";
import { NET_ENV, parseTaskNet } from "./bundle.ts";
import { encodeMessage, timestamp } from "./proto/mod.ts";
import { taskService } from "./service.ts";
import { cleanupTask } from "./task.ts";
import { shimSocketPath } from "./paths.ts";
import { serveTtrpc } from "./ttrpc.ts";

export interface ShimArgs {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  debug: boolean;
  version: boolean;
  action?: string;
}

const STRING_FLAGS = new Set(["namespace", "address", "publish-binary", "id", "bundle", "socket"]);
const BOOL_FLAGS = new Set(["debug", "v", "info"]);

/** Parses argv the way Go's `flag` package does (`-name value`, `-name=value`, `--name`). */
export function parseShimArgs(argv: string[], cwd: string): ShimArgs {
  const v: Record<string, string> = {};
  const bools = new Set<string>();
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-") || a === "-") break;
    const body = a.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq < 0 ? body : body.slice(0, eq);
    if (BOOL_FLAGS.has(name)) {
      if (eq < 0 || body.slice(eq + 1) !== "false") bools.add(name);
      continue;
    }
    if (!STRING_FLAGS.has(name)) {
      throw new ValidationError(`Unknown shim flag "${a}"`, {
        hint: "containerd passes -namespace -address -publish-binary -id [-bundle] [-debug]",
      });
    }
    if (eq >= 0) v[name] = body.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw new ValidationError(`Shim flag "${a}" needs a value`);
      v[name] = argv[++i];
    }
  }
  const action = argv[i];
  return {
    namespace: v.namespace ?? Deno.env.get("NAMESPACE") ?? "default",
    address: v.address ?? "",
    publishBinary: v["publish-binary"] ?? "",
    id: v.id ?? "",
    bundle: v.bundle ?? cwd,
    debug: bools.has("debug"),
    version: bools.has("v"),
    action,
  };
}

/** The argv that runs ovm's shim mode again: the compiled binary, or deno with main.ts. */
export function shimSelfArgv(): string[] {
  const exe = Deno.execPath();
  const compiled = !/(^|\/)deno$/.test(exe);
  if (compiled) return [exe, "shim", "v2", "--"];
  const main = fileURLToPath(new URL("../../main.ts", import.meta.url));
  const config = fileURLToPath(new URL("../../deno.json", import.meta.url));
  return [exe, "run", "-A", "--quiet", "--config", config, main, "shim", "v2", "--"];
}

function forwardedFlags(a: ShimArgs): string[] {
  return [
    "-namespace",
    a.namespace,
    "-address",
    a.address,
    "-publish-binary",
    a.publishBinary,
    "-id",
    a.id,
    ...(a.debug ? ["-debug"] : []),
  ];
}

async function waitForSocket(path: string, timeoutMs: number, alive: () => boolean) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const c = await Deno.connect({ transport: "unix", path });
      c.close();
      return;
    } catch { /* not yet */ }
    if (!alive()) throw new Error(`the serving shim exited before listening on "${path}"`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`the serving shim did not listen on "${path}" within ${timeoutMs} ms`);
}

/** `start`: launches the serving shim and returns the address to print. */
export async function shimStart(a: ShimArgs, home: string): Promise<string> {
  if (!a.id) throw new ValidationError("The shim needs -id");
  const socket = shimSocketPath(a.bundle, a.namespace, a.id);
  await Deno.mkdir(join(socket, ".."), { recursive: true, mode: 0o711 });
  const [cmd, ...args] = shimSelfArgv();
  const handle = spawn(cmd, [...args, ...forwardedFlags(a), "serve"], {
    cwd: a.bundle,
    env: { OVM_HOME: home },
    newSession: true,
    outputFile: join(a.bundle, "shim.log"),
    stdout: "null",
    stderr: "null",
  });
  // The serving shim outlives this process: containerd only waits for our output.
  handle.child.unref();
  await waitForSocket(socket, 60_000, () => handle.exited === undefined);
  const address = `unix://${socket}`;
  await Deno.writeTextFile(join(a.bundle, "address"), address);
  return address;
}

/** `serve`: the Task service on the task's socket until Shutdown (or `signal`). */
export async function shimServe(
  a: ShimArgs,
  home: string,
  options: { signal?: AbortSignal; cacheDir?: string } = {},
): Promise<void> {
  const log = (msg: string) =>
    console.error(`${new Date().toISOString()} ovm-shim[${a.id}]: ${msg}`);
  const socket = shimSocketPath(a.bundle, a.namespace, a.id);
  await Deno.remove(socket).catch(() => {});
  const store = await ContentStore.open(home);
  const publisher = new EventPublisher({
    namespace: a.namespace,
    ttrpcAddress: Deno.env.get("TTRPC_ADDRESS"),
    address: a.address,
    publishBinary: a.publishBinary,
    log,
  });
  const stop = new AbortController();
  options.signal?.addEventListener("abort", () => stop.abort(), { once: true });
  const handlers = taskService(store, {
    namespace: a.namespace,
    publisher,
    onShutdown: () => setTimeout(() => stop.abort(), 10),
    log,
    cacheDir: options.cacheDir,
    net: Deno.env.get(NET_ENV) || undefined,
    trace: a.debug ? (s, ms) => log(`${s}: ${ms.toFixed(0)} ms`) : undefined,
  });
  const listener = Deno.listen({ transport: "unix", path: socket });
  log(`serving on ${socket} (ovm ${VERSION}, home ${home})`);
  try {
    await serveTtrpc(listener, handlers, { signal: stop.signal, onError: (e) => log(String(e)) });
  } finally {
    await publisher.close();
    await Deno.remove(socket).catch(() => {});
    log("shut down");
  }
}

/** `delete`: cleans up after a shim containerd lost; returns the DeleteResponse bytes. */
export async function shimDelete(a: ShimArgs, home: string): Promise<Uint8Array> {
  if (!a.id) throw new ValidationError("The shim needs -id");
  const store = await ContentStore.open(home);
  const { exitCode } = await cleanupTask(store, a.namespace, a.id, a.bundle);
  await Deno.remove(shimSocketPath(a.bundle, a.namespace, a.id)).catch(() => {});
  return encodeMessage("containerd.task.v2.DeleteResponse", {
    pid: 0,
    // The VM was killed under it unless it had already reported an exit code.
    exit_status: exitCode ?? 137,
    exited_at: timestamp(new Date()),
  });
}

export interface LauncherOptions {
  /** `OVM_HOME` unless containerd's environment sets one. */
  home?: string;
  /** The node's default task network (`OVM_SHIM_NET`) unless containerd's environment sets one. */
  net?: string;
}

/** The launcher script `ovm shim install` writes. */
export function launcherScript(options: LauncherOptions = {}): string {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const argv = shimSelfArgv();
  return [
    "#!/bin/sh",
    "# containerd-shim-ovm-v2: written by 'ovm shim install'. containerd runs it for the",
    "# runtime io.containerd.ovm.v2; it runs ovm's shim mode (spec section 13).",
    ...(options.home ? [`[ -n "$OVM_HOME" ] || export OVM_HOME=${q(options.home)}`] : []),
    ...(options.net ? [`[ -n "$${NET_ENV}" ] || export ${NET_ENV}=${q(options.net)}`] : []),
    `exec ${argv.map(q).join(" ")} "$@"`,
    "",
  ].join("\n");
}

/** Writes the launcher as `<dir>/containerd-shim-ovm-v2` (atomically, mode 0755). */
export async function installLauncher(
  dir: string,
  options: LauncherOptions = {},
): Promise<string> {
  if (options.net) parseTaskNet(options.net, "ovm shim install --net");
  const path = join(dir, "containerd-shim-ovm-v2");
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, launcherScript(options), { mode: 0o755 });
  await Deno.chmod(tmp, 0o755);
  await Deno.rename(tmp, path);
  return path;
}
