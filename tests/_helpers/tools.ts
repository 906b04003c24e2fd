/**
 * @module
 * The field's own OCI clients for the interop tests: cosign, oras and crane
 * (pinned .debs from Debian unstable, unpacked by `scripts/tools.sh` into the
 * test cache), skopeo and umoci (Debian 12 packages from `scripts/setup.sh`).
 * `tools()` fetches once per process; a tool that truly cannot be had makes
 * its tests skip with the reason printed. Runs are offline by construction:
 * HOME and DOCKER_CONFIG are temp dirs and any proxied (non-loopback) request
 * goes to a closed port.
 */
import { join } from "node:path";

const root = new URL("../../", import.meta.url).pathname;

export interface Tools {
  bin: string;
  /** Tool name → absolute path, for the tools found. */
  paths: Record<string, string>;
  /** Why a tool is missing, for the skip message. */
  missing: Record<string, string>;
}

let cached: Promise<Tools> | undefined;

async function which(name: string): Promise<string | undefined> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    const p = join(dir || ".", name);
    if (await Deno.stat(p).then((s) => s.isFile, () => false)) return p;
  }
  return undefined;
}

async function load(): Promise<Tools> {
  const out = await new Deno.Command("bash", {
    args: [join(root, "scripts/tools.sh")],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const bin = new TextDecoder().decode(
    (await new Deno.Command("bash", {
      args: [join(root, "scripts/tools.sh"), "--print-dir"],
      stdout: "piped",
    }).output()).stdout,
  ).trim();
  const why = out.success
    ? ""
    : `scripts/tools.sh failed: ${new TextDecoder().decode(out.stderr).trim()}`;
  const paths: Record<string, string> = {};
  const missing: Record<string, string> = {};
  for (const name of ["cosign", "oras", "crane"]) {
    const p = join(bin, name);
    if (await Deno.stat(p).then((s) => s.isFile, () => false)) paths[name] = p;
    else missing[name] = why || `${p} not found after scripts/tools.sh`;
  }
  for (const name of ["skopeo", "umoci"]) {
    const p = await which(name);
    if (p) paths[name] = p;
    else missing[name] = `${name} is not installed (scripts/setup.sh installs it)`;
  }
  return { bin, paths, missing };
}

/** The tools, fetched on first use. */
export function tools(): Promise<Tools> {
  return cached ??= load();
}

/** `Deno.test` options that skip, saying why, when `names` are not all available. */
export async function needs(...names: string[]): Promise<{ ignore: boolean }> {
  const t = await tools();
  const gone = names.filter((n) => !t.paths[n]);
  for (const n of gone) console.warn(`skipping: ${n} unavailable: ${t.missing[n]}`);
  return { ignore: gone.length > 0 };
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A temp HOME/DOCKER_CONFIG for tool runs, removed on dispose. */
export async function toolEnv(
  extra: Record<string, string> = {},
): Promise<{ env: Record<string, string> } & AsyncDisposable> {
  const home = await Deno.makeTempDir({ prefix: "ovm-tool-home-" });
  const env = {
    HOME: home,
    DOCKER_CONFIG: join(home, ".docker"),
    XDG_CONFIG_HOME: join(home, ".config"),
    XDG_CACHE_HOME: join(home, ".cache"),
    TUF_ROOT: join(home, ".sigstore"),
    // Offline: anything not on loopback fails fast instead of reaching out.
    HTTPS_PROXY: "http://127.0.0.1:9",
    HTTP_PROXY: "http://127.0.0.1:9",
    NO_PROXY: "127.0.0.1,localhost",
    ...extra,
  };
  return {
    env,
    async [Symbol.asyncDispose]() {
      await Deno.remove(home, { recursive: true }).catch(() => {});
    },
  };
}

/** Runs a tool with `env`; bounded by `timeoutMs` (default 120 s). */
export async function run(
  name: string,
  args: string[],
  options: { env: Record<string, string>; cwd?: string; timeoutMs?: number },
): Promise<ToolResult> {
  const t = await tools();
  const path = t.paths[name];
  if (!path) throw new Error(`${name} unavailable: ${t.missing[name]}`);
  const out = await new Deno.Command(path, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 120_000),
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Like {@linkcode run}, throwing with the tool's stderr unless it exits 0. */
export async function runOk(
  name: string,
  args: string[],
  options: { env: Record<string, string>; cwd?: string; timeoutMs?: number },
): Promise<string> {
  const r = await run(name, args, options);
  if (r.code !== 0) {
    throw new Error(`${name} ${args.join(" ")} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  }
  return r.stdout;
}
