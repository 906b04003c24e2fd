/**
 * @module
 * A small JSON client for VMM REST APIs served on a UNIX socket (Cloud
 * Hypervisor's `--api-socket`, Firecracker's `--api-sock`). Deno's `fetch`
 * speaks HTTP/1.1 over a UNIX socket through `Deno.createHttpClient`, so no
 * hand-written HTTP is needed. Every failure becomes a {@linkcode VmmError}
 * naming the adapter and the step, with the VMM's own message.
 */
import { VmmError } from "../errors.ts";
import { type ProcessHandle, processStartTime, run, signalPid, spawn } from "../process/mod.ts";
import type { VmHandle } from "./adapter.ts";
import { tailLines } from "../util/fs.ts";

export interface HttpUnixOptions {
  /** The adapter name used in errors. */
  adapter: string;
  /** Prefix of every path (`/api/v1` for Cloud Hypervisor). */
  basePath?: string;
  /** Per-request timeout. Default 30 s (snapshots of big guests take a while). */
  timeoutMs?: number;
}

export interface HttpUnixResponse {
  status: number;
  /** Parsed JSON body, or undefined for an empty body. */
  body: unknown;
}

/** One connection pool to one VMM socket; `close()` (or `using`) releases it. */
export class HttpUnixClient implements Disposable {
  readonly socket: string;
  readonly #client: Deno.HttpClient;
  readonly #adapter: string;
  readonly #base: string;
  readonly #timeoutMs: number;

  constructor(socket: string, options: HttpUnixOptions) {
    this.socket = socket;
    this.#client = Deno.createHttpClient({ proxy: { transport: "unix", path: socket } });
    this.#adapter = options.adapter;
    this.#base = options.basePath ?? "";
    this.#timeoutMs = options.timeoutMs ?? 30_000;
  }

  /**
   * Sends one request. A status of 300 or more throws a VmmError whose message
   * is the VMM's error text (`fault_message` for Firecracker, the body for
   * Cloud Hypervisor); `step` names what ovm was doing.
   */
  async request(
    method: "GET" | "PUT" | "PATCH",
    path: string,
    options: { body?: unknown; step: string; timeoutMs?: number; signal?: AbortSignal },
  ): Promise<HttpUnixResponse> {
    const signals = [AbortSignal.timeout(options.timeoutMs ?? this.#timeoutMs)];
    if (options.signal) signals.push(options.signal);
    let res: Response;
    try {
      res = await fetch(`http://localhost${this.#base}${path}`, {
        client: this.#client,
        method,
        headers: options.body !== undefined
          ? { "content-type": "application/json", accept: "application/json" }
          : { accept: "application/json" },
        body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
        signal: AbortSignal.any(signals),
      });
    } catch (e) {
      throw new VmmError(
        this.#adapter,
        options.step,
        `the API on "${this.socket}" did not answer ${method} ${path}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    const text = await res.text();
    let body: unknown = undefined;
    if (text.trim()) {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    if (res.status >= 300) {
      throw new VmmError(
        this.#adapter,
        options.step,
        `${method} ${path} failed with HTTP ${res.status}: ${errorText(body) || res.statusText}`,
      );
    }
    return { status: res.status, body };
  }

  close(): void {
    this.#client.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

function errorText(body: unknown): string {
  if (body === undefined) return "";
  if (typeof body === "string") return body.trim();
  if (body && typeof body === "object") {
    const o = body as Record<string, unknown>;
    if (typeof o.fault_message === "string") return o.fault_message;
    if (typeof o.error === "string") return o.error;
    if (typeof o.message === "string") return o.message;
  }
  return JSON.stringify(body);
}

/** Waits until `socket` exists and accepts a connection, or the process has exited. */
export async function waitForSocket(
  socket: string,
  options: { timeoutMs: number; exited: () => boolean; signal?: AbortSignal },
): Promise<"ready" | "exited" | "timeout"> {
  const deadline = Date.now() + options.timeoutMs;
  while (true) {
    if (options.exited()) return "exited";
    try {
      const conn = await Deno.connect({ transport: "unix", path: socket });
      conn.close();
      return "ready";
    } catch { /* not yet */ }
    if (options.signal?.aborted) throw options.signal.reason;
    if (Date.now() > deadline) return "timeout";
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A VMM process serving its API on a UNIX socket, once the socket answers. */
export interface ApiVmmProcess {
  handle: VmHandle;
  exited: Promise<{ code: number; signal?: string }>;
  proc: ProcessHandle;
}

/**
 * Spawns `bin args` in its own session (stdout and stderr appended to
 * `logFile`) and waits for `socket`. A binary that exits first is a
 * VmmError carrying its output, under step "start".
 */
export async function launchApiVmm(
  adapter: string,
  bin: string,
  options: {
    args: string[];
    socket: string;
    cwd: string;
    logFile: string;
    runtimeFiles: string[];
    timeoutMs?: number;
    signal?: AbortSignal;
  },
): Promise<ApiVmmProcess> {
  await Deno.remove(options.socket).catch(() => {});
  const proc = spawn(bin, options.args, {
    cwd: options.cwd,
    newSession: true,
    outputFile: options.logFile,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  });
  const handle: VmHandle = {
    adapter,
    pid: proc.pid,
    pidStartTime: await processStartTime(proc.pid),
    controlSocket: options.socket,
    runtimeFiles: options.runtimeFiles,
    devices: [],
    argv: [bin, ...options.args],
  };
  const exited = proc.status.then((s) => ({
    code: s.code,
    ...(s.signal ? { signal: s.signal } : {}),
  }));
  let r: "ready" | "exited" | "timeout";
  try {
    r = await waitForSocket(options.socket, {
      timeoutMs: options.timeoutMs ?? 15_000,
      exited: () => proc.exited !== undefined,
      signal: options.signal,
    });
  } catch (e) {
    await proc.stop(1000);
    throw e;
  }
  if (r !== "ready") {
    await proc.stop(1000);
    const tail = await tailLines(options.logFile, 20);
    throw new VmmError(
      adapter,
      "start",
      r === "exited"
        ? `${bin} exited at once with code ${proc.exited?.code}`
        : `${bin} did not open its API socket within ${(options.timeoutMs ?? 15_000) / 1000} s`,
      { hint: tail ? `it said:\n${tail}` : "it printed nothing" },
    );
  }
  return { handle, exited, proc };
}

/** True while the handle's process (not a recycled pid) runs. */
export async function vmmAlive(handle: VmHandle): Promise<boolean> {
  const st = await processStartTime(handle.pid);
  if (st === undefined) return false;
  return handle.pidStartTime === undefined || st === handle.pidStartTime;
}

export async function waitGone(handle: VmHandle, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await vmmAlive(handle))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !(await vmmAlive(handle));
}

/** SIGTERM, then SIGKILL: the last resort of every API VMM's stop. */
export async function killVmm(adapter: string, handle: VmHandle): Promise<void> {
  signalPid(handle.pid, "SIGTERM");
  if (await waitGone(handle, 2000)) return;
  signalPid(handle.pid, "SIGKILL");
  if (!(await waitGone(handle, 5000))) {
    throw new VmmError(adapter, "stop", `process ${handle.pid} survived SIGKILL`);
  }
}

/** `<bin> --version` → "53.0" from "cloud-hypervisor v53.0" or "Firecracker v1.17.0"; "unknown" otherwise. */
export async function probeVersion(bin: string): Promise<string> {
  const r = await run(bin, ["--version"], { allowFailure: true }).catch(() => undefined);
  const m = r ? /\bv?(\d+\.\d+(?:\.\d+)?(?:-[\w.]+)?)/.exec(r.stdout + r.stderr) : null;
  return m?.[1] ?? "unknown";
}
