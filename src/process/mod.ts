/**
 * @module
 * The one module that spawns processes (`Deno.Command`). `run` waits for a
 * command and returns its output; `spawn` starts a long-lived process and
 * returns an `AsyncDisposable` handle that kills it, reaps it, and removes the
 * sockets and temp files registered with it — also when the caller fails.
 */
import { NotFoundError, OvmError } from "../errors.ts";
import { setInheritable } from "../../ffi/mod.ts";

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Clear the environment before applying `env`. */
  clearEnv?: boolean;
  stdin?: Uint8Array | string;
  signal?: AbortSignal;
  /** Return a non-zero exit instead of throwing. */
  allowFailure?: boolean;
  uid?: number;
  gid?: number;
}

export interface RunResult {
  code: number;
  success: boolean;
  stdout: string;
  stderr: string;
  stdoutBytes: Uint8Array;
}

/** A command failed; its stderr is in the message. */
export class CommandError extends OvmError {
  readonly command: string;
  readonly exitCode: number;
  readonly stderr: string;
  constructor(command: string, exitCode: number, stderr: string) {
    const tail = stderr.trim().split("\n").slice(-15).join("\n");
    super(`"${command}" failed with exit code ${exitCode}${tail ? `:\n${tail}` : ""}`);
    this.command = command;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

function notFound(cmd: string, cause: unknown): never {
  throw new NotFoundError(`Program "${cmd}" was not found`, {
    cause,
    hint: `install it (on Debian: apt-get install the package that provides ${cmd})`,
  });
}

/** Runs a command to completion. Throws {@linkcode CommandError} on non-zero exit. */
export async function run(
  cmd: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      cwd: options.cwd,
      env: options.env,
      clearEnv: options.clearEnv,
      stdin: options.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      signal: options.signal,
      uid: options.uid,
      gid: options.gid,
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) notFound(cmd, e);
    throw e;
  }
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(
      typeof options.stdin === "string" ? new TextEncoder().encode(options.stdin) : options.stdin,
    );
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  const res: RunResult = {
    code: out.code,
    success: out.success,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    stdoutBytes: out.stdout,
  };
  if (!out.success && !options.allowFailure) {
    throw new CommandError([cmd, ...args].join(" "), out.code, res.stderr || res.stdout);
  }
  return res;
}

/** Where `cmd` resolves on PATH (`options.path`, default the process's), or undefined. */
export async function which(
  cmd: string,
  options: { path?: string } = {},
): Promise<string | undefined> {
  if (cmd.includes("/")) {
    try {
      const st = await Deno.stat(cmd);
      return st.isFile && (st.mode ?? 0) & 0o111 ? cmd : undefined;
    } catch {
      return undefined;
    }
  }
  const path = options.path ?? Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin";
  for (const dir of path.split(":").filter(Boolean)) {
    const p = `${dir}/${cmd}`;
    try {
      const st = await Deno.stat(p);
      if (st.isFile && (st.mode ?? 0) & 0o111) return p;
    } catch { /* next */ }
  }
  return undefined;
}

export interface SpawnOptions extends Omit<RunOptions, "stdin" | "allowFailure"> {
  stdin?: "piped" | "null";
  stdout?: "piped" | "null" | "inherit";
  stderr?: "piped" | "null" | "inherit";
  /** Paths removed when the handle is disposed (sockets, temp files). */
  cleanup?: string[];
  /** Grace period between SIGTERM and SIGKILL on dispose. Default 3000 ms. */
  killTimeoutMs?: number;
  /**
   * Files opened by a wrapper (with ovm's rights) before the program starts;
   * the program sees the i-th one as {@linkcode passedFdPath}(i). This lets a
   * program that runs as another user use exactly these files without any
   * path access into ovm's directories.
   */
  passFiles?: PassedFile[];
  /** Start the program as this user (the wrapper opens `passFiles` first). */
  dropTo?: { uid: number; gid: number };
  /** Put the program in its own session so it outlives ovm and terminal signals. */
  newSession?: boolean;
  /** Append the program's stdout and stderr to this file (opened before `dropTo`). */
  outputFile?: string;
  /**
   * The program's stdin: this file opened for reading by the wrapper (a FIFO
   * whose writer the caller holds, so the open does not block). Wins over `stdin`.
   */
  stdinFile?: string;
  /**
   * Open descriptors (from `ffi/`, e.g. a TAP queue) the program inherits at
   * the same numbers. They are inheritable only during the (synchronous)
   * spawn, so no other child ever gets them.
   */
  inheritFds?: number[];
}

export interface PassedFile {
  path: string;
  mode: "read" | "readwrite" | "append";
}

/** The path under which a program started with `passFiles` opens the i-th file. */
export function passedFdPath(index: number): string {
  return `/proc/self/fd/${FIRST_PASSED_FD + index}`;
}

const FIRST_PASSED_FD = 3;

/**
 * Builds the bash wrapper that opens passed files, redirects output, drops
 * privileges and execs the program. bash (not dash) because fds above 9 are
 * needed. Paths travel as positional arguments, never inside the script.
 */
function wrapperArgv(cmd: string, args: string[], options: SpawnOptions): string[] {
  const params: string[] = [];
  const lines: string[] = [];
  const param = (v: string) => {
    params.push(v);
    return `"\${${params.length}}"`;
  };
  if (options.outputFile) lines.push(`exec >>${param(options.outputFile)} 2>&1 || exit 125`);
  if (options.stdinFile) lines.push(`exec <${param(options.stdinFile)} || exit 125`);
  const redirs = (options.passFiles ?? []).map((f, i) => {
    const op = f.mode === "read" ? "<" : f.mode === "readwrite" ? "<>" : ">>";
    return `${FIRST_PASSED_FD + i}${op}${param(f.path)}`;
  });
  // One `exec` per descriptor: bash 5.2 drops some descriptors above 9 when
  // one `exec` opens several of them (a VM with five disk layers and a
  // config disk lost its fd 12).
  for (const r of redirs) lines.push(`exec ${r} || exit 125`);
  lines.push(`shift ${params.length}`);
  const drop = options.dropTo
    ? [
      "setpriv",
      `--reuid=${options.dropTo.uid}`,
      `--regid=${options.dropTo.gid}`,
      "--clear-groups",
      "--",
    ]
    : [];
  lines.push(`exec "$@"`);
  const argv = ["bash", "-c", lines.join("\n"), "ovm-wrapper", ...params, ...drop, cmd, ...args];
  return options.newSession ? ["setsid", ...argv] : argv;
}

/** A running child process; `await using` it to guarantee kill + reap + cleanup. */
export class ProcessHandle implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly command: string;
  readonly #cleanup: string[];
  readonly #killTimeoutMs: number;
  #status?: Deno.CommandStatus;
  readonly status: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess, command: string, cleanup: string[], killTimeoutMs: number) {
    this.child = child;
    this.command = command;
    this.#cleanup = cleanup;
    this.#killTimeoutMs = killTimeoutMs;
    this.status = child.status.then((s) => (this.#status = s));
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The exit status if the process has ended. */
  get exited(): Deno.CommandStatus | undefined {
    return this.#status;
  }

  /** Registers another path to remove on dispose. */
  addCleanup(path: string): void {
    this.#cleanup.push(path);
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#status) return;
    try {
      this.child.kill(signal);
    } catch { /* already gone */ }
  }

  /** SIGTERM, then SIGKILL after the grace period; always reaps. */
  async stop(timeoutMs = this.#killTimeoutMs): Promise<Deno.CommandStatus> {
    if (!this.#status) {
      this.kill("SIGTERM");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<"timeout">((
        r,
      ) => (timer = setTimeout(() => r("timeout"), timeoutMs)));
      const r = await Promise.race([this.status, timeout]);
      clearTimeout(timer);
      if (r === "timeout") this.kill("SIGKILL");
    }
    return await this.status;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    for (const s of [this.child.stdout, this.child.stderr]) {
      try {
        await s?.cancel();
      } catch { /* not piped or already consumed */ }
    }
    for (const p of this.#cleanup) await Deno.remove(p, { recursive: true }).catch(() => {});
  }
}

/** Starts a long-lived process. */
export function spawn(cmd: string, args: string[], options: SpawnOptions = {}): ProcessHandle {
  let child: Deno.ChildProcess;
  const wrapped = options.passFiles?.length || options.dropTo || options.newSession ||
    options.outputFile || options.stdinFile;
  const argv = wrapped ? wrapperArgv(cmd, args, options) : [cmd, ...args];
  const inherit = options.inheritFds ?? [];
  try {
    for (const fd of inherit) setInheritable(fd, true);
    child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: options.cwd,
      env: options.env,
      clearEnv: options.clearEnv,
      stdin: options.stdin ?? "null",
      stdout: options.stdout ?? "null",
      stderr: options.stderr ?? "piped",
      signal: options.signal,
      uid: options.uid,
      gid: options.gid,
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) notFound(cmd, e);
    throw e;
  } finally {
    for (const fd of inherit) setInheritable(fd, false);
  }
  return new ProcessHandle(
    child,
    [cmd, ...args].join(" "),
    [...(options.cleanup ?? [])],
    options.killTimeoutMs ?? 3000,
  );
}

/** True while a process with this pid exists (zombies included). */
export function pidAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * The process's start time in clock ticks since boot (field 22 of
 * /proc/<pid>/stat), or undefined when it is gone. Together with the pid it
 * names one process, so a recycled pid is never mistaken for it.
 */
export async function processStartTime(pid: number): Promise<number | undefined> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // The command name (field 2) may hold spaces and parentheses: split after the last ")".
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (rest[0] === "Z" || rest[0] === "X") return undefined;
    return Number(rest[19]);
  } catch {
    return undefined;
  }
}

/** Sends a signal to a process that may not be ours; false when it is gone. */
export function signalPid(pid: number, signal: Deno.Signal): boolean {
  try {
    Deno.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
