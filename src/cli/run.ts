/**
 * @module
 * `ovm run`: boots an artifact from the local store (or an `ovm export`
 * directory). In the foreground it streams the guest console and a Ctrl-C
 * stops the VM cleanly; `--detach` prints the instance id once the guest has
 * printed its first console output.
 */
import { ValidationError } from "../errors.ts";
import {
  assertInstanceId,
  followConsole,
  importExportDir,
  instancePaths,
  isExportDir,
  parseNetFlag,
  parsePublish,
  startInstance,
  stopInstance,
  waitInstance,
} from "../runtime/mod.ts";
import { parseAccel } from "../vmm/accel.ts";
import { formatBytes, parseSize } from "../util/size.ts";
import { bool, type Command, str, strs } from "./command.ts";
import { parseEntrypointFlag } from "../convert/bootstrap.ts";
import { enforcePolicy } from "../sign/mod.ts";
import { POLICY_OPTION } from "./policy.ts";
import { resolve } from "node:path";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { loadRuntimes, setRuntimePath } from "../vmm/mod.ts";
import { reportColdStart } from "./runtimes.ts";

function parseCpus(v: string | undefined): number {
  if (v === undefined) return 1;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new ValidationError(`Invalid --cpus "${v}"`, { hint: "use a whole number from 1 to 64" });
  }
  return n;
}

function parseSeconds(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    throw new ValidationError(`Invalid ${flag} "${v}"`, { hint: "use a number of seconds" });
  }
  return n * 1000;
}

export const runCommand: Command = {
  name: "run",
  summary: "Boot an OVMS artifact as a VM",
  usage: "run <ref|path> [CMD...] [--memory 512M] [--cpus 1] [--detach] [--name ID] [-p H:G]...",
  description:
    "Boots the artifact's kernel and initrd with its disk layers as a copy-free backing chain\n" +
    "under a per-instance writable overlay. CMD replaces the bootstrap config's cmd.\n" +
    "-p publishes a guest port on the host (default host address 127.0.0.1).",
  options: {
    // No declared defaults: a snapshot restores with its recorded values, so
    // only a value the user gave is checked against them.
    memory: { type: "string", short: "m", valueName: "SIZE", help: "Guest RAM (default 512M)" },
    cpus: { type: "string", valueName: "N", help: "Virtual CPUs (default 1)" },
    runtime: {
      type: "string",
      valueName: "NAME",
      help: "VMM adapter (default: the artifact's preferred runtime, else qemu)",
    },
    "runtime-path": {
      type: "string",
      valueName: "PATH",
      help: "The runtime's binary (default: its descriptor's, else PATH)",
    },
    accel: { type: "string", valueName: "MODE", help: "auto (default), kvm or tcg" },
    cold: {
      type: "boolean",
      help: "Boot an artifact that has a RAM snapshot instead of restoring it",
    },
    detach: { type: "boolean", short: "d", help: "Run in the background and print the id" },
    name: { type: "string", valueName: "ID", help: "Instance id ([a-z0-9-], up to 64)" },
    net: {
      type: "string",
      valueName: "MODE",
      help: "user (default: QEMU user-mode NAT), bridge[=NETWORK] (a TAP on an ovm bridge, " +
        "its own address; root) or none",
    },
    publish: {
      type: "string",
      short: "p",
      multiple: true,
      valueName: "[IP:]H:G[/udp]",
      help: "Publish guest port G on host port H",
    },
    "boot-timeout": {
      type: "string",
      valueName: "SEC",
      help: "Fail when the guest prints nothing for this long",
      default: "60",
    },
    // Container-style overrides of the bootstrap config (convert's applyOverrides rules).
    entrypoint: {
      type: "string",
      valueName: "PROG|JSON",
      help: "Replace the entrypoint (drops the image's cmd); a JSON array for several words",
    },
    env: {
      type: "string",
      short: "e",
      multiple: true,
      valueName: "NAME[=VALUE]",
      help: "Set (or with no =, unset) a workload environment variable",
    },
    "stop-timeout": {
      type: "string",
      valueName: "SEC",
      help: "On Ctrl-C, wait this long for the guest to power off",
      default: "10",
    },
    policy: POLICY_OPTION,
    socket: SOCKET_OPTION,
  },
  args: { min: 1, max: Infinity, names: "REF|PATH [CMD...]" },
  examples: [
    "ovm run demo/busybox:1.0",
    "ovm run -d --name web -p 8080:80 demo/busybox:1.0 httpd -f -p 80",
    "ovm run ./exported-dir",
  ],
  async run(ctx, input) {
    const [target, ...cmd] = input.args;
    const publish = strs(input, "publish").map(parsePublish);
    const { mode: net, network } = parseNetFlag(str(input, "net"), publish);
    const memoryBytes = parseSize(str(input, "memory") ?? "512M", "--memory");
    if (memoryBytes < 64 * 1024 * 1024) {
      throw new ValidationError(`--memory "${str(input, "memory")}" is below 64M`);
    }
    const cpus = parseCpus(str(input, "cpus"));
    const accel = parseAccel(str(input, "accel"));
    const bootTimeoutMs = parseSeconds(str(input, "boot-timeout"), "--boot-timeout", 60);
    const stopTimeoutMs = parseSeconds(str(input, "stop-timeout"), "--stop-timeout", 10);
    const detach = bool(input, "detach");
    const name = str(input, "name");
    if (name !== undefined) assertInstanceId(name);
    // Through a running `ovm serve` when the API can carry the request (spec 11).
    const viaServer = detach && !cmd.length && str(input, "entrypoint") === undefined &&
      !strs(input, "env").length && !publish.length && net === "user" &&
      str(input, "policy") === undefined;
    if (str(input, "socket") !== undefined && !viaServer) {
      throw new ValidationError(
        "--socket runs only take --detach, --memory, --cpus, --runtime, --accel and --name",
        {
          hint: "drop --socket to run directly",
        },
      );
    }
    using server = viaServer
      ? await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home })
      : undefined;
    if (server) {
      const started = await server.start(await isExportDir(target) ? resolve(target) : target, {
        overrides: { memory: memoryBytes, cpus, runtime: str(input, "runtime"), accel, name },
        wait: true,
      });
      ctx.out.result(started);
      ctx.out.line(started.instance_id);
      return;
    }
    const runtimePath = str(input, "runtime-path");
    if (runtimePath !== undefined && !str(input, "runtime")) {
      throw new ValidationError("--runtime-path needs --runtime", {
        hint: "name the runtime the binary is for, e.g. --runtime cherrybomb",
      });
    }
    const store = await ctx.store();
    const ref = await isExportDir(target)
      ? await importExportDir(store, target, { signal: ctx.signal })
      : target;
    // Admission policy (src/sign): checked against the local store; the
    // digest it checked is what boots.
    const admitted = await enforcePolicy(ref, {
      kind: "run",
      home: ctx.home,
      store,
      policyFile: str(input, "policy"),
      warn: (m) => ctx.out.warn(m),
    });
    // Runtimes (issue 10): descriptors in $OVM_HOME/runtimes, --runtime-path, cold-start target.
    await loadRuntimes(ctx.home);
    if (runtimePath !== undefined) setRuntimePath(str(input, "runtime")!, runtimePath);
    const startedAt = performance.now();
    const given = (k: string) => str(input, k) !== undefined;
    const started = await startInstance(store, admitted?.pinned ?? ref, {
      memoryBytes: given("memory") ? memoryBytes : undefined,
      cpus: given("cpus") ? cpus : undefined,
      runtime: str(input, "runtime"),
      accel: given("accel") ? accel : undefined,
      cold: bool(input, "cold"),
      detach,
      name,
      net: given("net") ? net : undefined,
      network,
      publish,
      cmd: cmd.length ? cmd : undefined,
      entrypoint: str(input, "entrypoint") === undefined
        ? undefined
        : parseEntrypointFlag(str(input, "entrypoint")!),
      env: strs(input, "env"),
      bootTimeoutMs,
      signal: ctx.signal,
      note: (m) => ctx.out.warn(m),
      trace: ctx.env.get("OVM_TRACE")
        ? (s, ms) => ctx.out.info(`trace: ${s}: ${ms.toFixed(1)} ms`)
        : undefined,
    });
    const id = started.state.id;
    await reportColdStart(store, started.state.manifestDigest, {
      ms: performance.now() - startedAt,
      note: (m) => ctx.out.info(m),
      warn: (m) => ctx.out.warn(m),
    }).catch(() => {});
    for (const d of started.state.devices) {
      // A region with a host file: say where it is on both sides (the backend
      // may place it itself, spec 7.5); else the backend's own words.
      ctx.out.info(
        d.hostPath
          ? `${d.type} ${d.name}: host ${d.hostPath} (${formatBytes(d.size)}); guest: ` +
            `${d.guestLocation ?? d.mmioAddr} (mmio_addr ${d.mmioAddr} is advisory)`
          : `${d.type} ${d.name} (${formatBytes(d.size)}): ${d.guestLocation ?? d.mmioAddr}`,
      );
    }
    for (const p of started.state.network.publish) {
      ctx.out.info(`published ${p.hostIp}:${p.hostPort} -> guest ${p.guestPort}/${p.protocol}`);
    }
    if (detach) {
      started.vm.release();
      ctx.out.result({ id, state: started.state });
      ctx.out.line(id);
      return;
    }
    ctx.out.info(`instance ${id} (Ctrl-C stops it)`);
    const sink = ctx.json ? ctx.out.stderr : ctx.out.stdout;
    let ended = false;
    const final = waitInstance(ctx.home, started).finally(() => (ended = true));
    // A closed stdout (`| head`) ends the streaming, not the run: the VM is
    // still waited for, so its state and leftovers are recorded and cleaned.
    let sinkOpen = true;
    const stream = followConsole(instancePaths(ctx.home, id).consoleLog, (b) => {
      if (!sinkOpen) return;
      try {
        let off = 0;
        while (off < b.byteLength) off += sink.writeSync(b.subarray(off));
      } catch {
        sinkOpen = false;
      }
    }, { until: () => ended }).catch(() => {});
    let interrupted = false;
    const onAbort = () => {
      interrupted = true;
      ctx.out.info(`\nstopping ${id}...`);
      stopInstance(ctx.home, id, { timeoutMs: stopTimeoutMs, reason: "stopped by Ctrl-C" })
        .catch((e) => ctx.out.warn(`stopping ${id} failed: ${(e as Error).message}`));
    };
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    if (ctx.signal.aborted) onAbort();
    const state = await final;
    await stream;
    ctx.signal.removeEventListener("abort", onAbort);
    ctx.out.result({ id, state });
    if (!ctx.json) {
      ctx.out.info(`instance ${id} ${state.state}${state.reason ? `: ${state.reason}` : ""}`);
    }
    // 130 like a shell: the run ended because of the interrupt.
    if (interrupted) return state.exitCode ?? 130;
    if (state.exitCode !== undefined) return state.exitCode;
    return state.state === "error" ? 1 : 0;
  },
};
