/**
 * @module
 * Network namespaces for the networking tests: every bridge, TAP, veth and
 * nftables rule a test makes lives in a namespace the test creates and
 * removes (with the processes still in it), so the host's own interfaces,
 * routes and firewall are never touched. ovm runs inside as
 * `ip netns exec NS deno run -A main.ts ...`.
 */
import { fileURLToPath as fromFileUrl } from "node:url";
import { run, type RunResult } from "../../src/process/mod.ts";

const MAIN = fromFileUrl(new URL("../../main.ts", import.meta.url));
const ATTACH_MAIN = fromFileUrl(new URL("./net_attach_main.ts", import.meta.url));

export interface Netns extends AsyncDisposable {
  name: string;
  /** Runs a command inside the namespace; never throws on a non-zero exit. */
  exec(
    cmd: string,
    args: string[],
    options?: { env?: Record<string, string>; stdin?: string },
  ): Promise<RunResult>;
  /** Runs `ovm ARGS --home HOME` inside the namespace. */
  ovm(home: string, args: string[], env?: Record<string, string>): Promise<RunResult>;
  /** Runs `net_attach_main.ts` (attachInstance/detachInstance/pruneNetworks) inside the namespace. */
  net(
    home: string,
    request: Record<string, unknown>,
    env?: Record<string, string>,
  ): Promise<RunResult>;
  /** `ip -j ARGS` inside the namespace, parsed. */
  ipJson<T = Record<string, unknown>>(args: string[]): Promise<T[]>;
  /** The namespace's nftables tables (`family name`). */
  nftTables(): Promise<string[]>;
}

export async function netns(prefix = "ovmt"): Promise<Netns> {
  const rand = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  const name = `${prefix}-${Deno.pid}-${rand}`;
  await run("ip", ["netns", "add", name]);
  const exec: Netns["exec"] = (cmd, args, options = {}) =>
    run("ip", ["netns", "exec", name, cmd, ...args], {
      allowFailure: true,
      env: options.env,
      stdin: options.stdin,
    });
  try {
    await run("ip", ["-n", name, "link", "set", "lo", "up"]);
  } catch (e) {
    await run("ip", ["netns", "del", name]).catch(() => {});
    throw e;
  }
  return {
    name,
    exec,
    ovm: (home, args, env) =>
      exec(Deno.execPath(), ["run", "-A", MAIN, ...args, "--home", home], { env }),
    net: (home, request, env) =>
      exec(Deno.execPath(), ["run", "-A", ATTACH_MAIN, home, JSON.stringify(request)], { env }),
    async ipJson<T>(args: string[]) {
      const r = await run("ip", ["-n", name, "-j", ...args]);
      return (r.stdout.trim() ? JSON.parse(r.stdout) : []) as T[];
    },
    async nftTables() {
      const r = await exec("nft", ["list", "tables"]);
      return r.stdout.split("\n").map((l) => l.replace(/^table /, "").trim()).filter(Boolean);
    },
    async [Symbol.asyncDispose]() {
      // Processes still inside (a VM, a server) would keep the namespace's devices alive.
      const pids = await run("ip", ["netns", "pids", name], { allowFailure: true });
      for (const p of pids.stdout.split("\n").filter(Boolean)) {
        try {
          Deno.kill(Number(p), "SIGKILL");
        } catch { /* gone */ }
      }
      await run("ip", ["netns", "del", name], { allowFailure: true });
    },
  };
}

/** Waits until `fn` returns true, polling; fails with `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  fn: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The stdout of a command that must succeed; else an error with its exit code and output. */
export function ok(r: { code: number; stdout: string; stderr: string }): string {
  if (r.code !== 0) throw new Error(`exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return r.stdout;
}

/** The namespace's interface names but lo, sorted. */
export async function linkNames(ns: Netns): Promise<string[]> {
  return (await ns.ipJson<{ ifname: string }>(["link", "show"])).map((l) => l.ifname)
    .filter((n) => n !== "lo").sort();
}
