/**
 * @module
 * Helpers for the `ovm run` tests: the demo artifact built once per test
 * file into a shared home, ovm invocations in-process or as a separate
 * process (a real "ovm restart"), and process/file probes.
 */
import { join } from "node:path";
import { runCli } from "../../src/cli/app.ts";
import { buildDemoArtifact, type DemoArtifact } from "../../examples/demo/build.ts";
import { TEST_CACHE } from "./vm.ts";

export interface OvmResult {
  code: number;
  stdout: string;
  stderr: string;
}

class Capture {
  text = "";
  readonly #onWrite?: (all: string) => void;
  constructor(onWrite?: (all: string) => void) {
    this.#onWrite = onWrite;
  }
  writeSync(p: Uint8Array): number {
    this.text += new TextDecoder().decode(p);
    this.#onWrite?.(this.text);
    return p.byteLength;
  }
  isTerminal(): boolean {
    return false;
  }
}

/** `ovm <verb> --home HOME <rest...>` in-process (`--home` goes before any `--`). */
export async function ovmIn(home: string, verb: string, ...rest: string[]): Promise<OvmResult> {
  return await ovmWith({ home }, verb, ...rest);
}

/**
 * Like {@linkcode ovmIn}, with an abort signal (a Ctrl-C) and a view of the
 * output while it runs.
 */
export async function ovmWith(
  options: { home: string; signal?: AbortSignal; onStdout?: (all: string) => void },
  verb: string,
  ...rest: string[]
): Promise<OvmResult> {
  const stdout = new Capture(options.onStdout);
  const stderr = new Capture();
  const code = await runCli([verb, "--home", options.home, ...rest], {
    stdout,
    stderr,
    signal: options.signal,
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** `ovm` as its own process, which exits when the verb is done. */
export async function ovmProc(home: string, verb: string, ...rest: string[]): Promise<OvmResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, verb, "--home", home, ...rest],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A temp ovm home holding the demo artifact; `dispose` stops every VM and removes it. */
export interface DemoHome extends AsyncDisposable {
  home: string;
  artifact: DemoArtifact;
}

export async function demoHome(): Promise<DemoHome> {
  const home = await Deno.makeTempDir({ prefix: "ovm-run-test-" });
  try {
    const artifact = await buildDemoArtifact(home, { cacheDir: TEST_CACHE });
    return {
      home,
      artifact,
      async [Symbol.asyncDispose]() {
        await killAll(home);
        await Deno.remove(home, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await Deno.remove(home, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Kills every VM process recorded under `home` and removes its shm files (test cleanup). */
export async function killAll(home: string): Promise<void> {
  const dir = join(home, "instances");
  try {
    for await (const e of Deno.readDir(dir)) {
      try {
        const s = JSON.parse(await Deno.readTextFile(join(dir, e.name, "state.json")));
        if (s.pid && await isVmProcess(s.pid)) {
          try {
            Deno.kill(s.pid, "SIGKILL");
          } catch { /* gone */ }
        }
        for (const f of s.vm?.runtimeFiles ?? []) await Deno.remove(f).catch(() => {});
      } catch { /* no state */ }
    }
  } catch { /* no instances */ }
}

/** True when `pid` is a live (non-zombie) qemu process. */
export async function isVmProcess(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const st = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    const exe = await Deno.readLink(`/proc/${pid}/exe`).catch(() => "");
    return st !== "Z" && exe.includes("qemu");
  } catch {
    return false;
  }
}

/** Polls `fn` until it returns a value or the time runs out. */
export async function waitFor<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs?: number; what?: string } = {},
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  while (true) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${options.what ?? "it"}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function readState(home: string, id: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(join(home, "instances", id, "state.json")));
}
