/**
 * @module
 * `OvmsClient`: a typed client of the OVMS runtime contract over a UNIX
 * socket — what an orchestrator's runtime plugin wraps, and what the CLI
 * uses when a server is running. Error answers become the same domain errors
 * the library throws (404 → NotFoundError, 409 → ConflictError, ...), with
 * the HTTP status on `status`.
 *
 * ```ts
 * using client = new OvmsClient({ socket: "/run/ovm/ovm.sock" });
 * const { instance_id } = await client.start("demo/busybox:1.0", { overrides: { memory: "256M" } });
 * for await (const rec of client.logs(instance_id, { follow: true })) console.log(rec.line);
 * ```
 */
import {
  AlreadyExistsError,
  ConflictError,
  NotFoundError,
  OvmError,
  PolicyError,
  ValidationError,
} from "../errors.ts";
import type {
  ErrorBody,
  InjectResponse,
  InstancesReply,
  LogRecord,
  SnapshotResponse,
  StartReply,
  StartRequest,
  StatusReply,
  StopReply,
  VersionResponse,
} from "./schemas.ts";
import { clientSocketPath, defaultSocketPath, socketLive } from "./listen.ts";

export type {
  InjectResponse,
  InstancesReply,
  LogRecord,
  SnapshotResponse,
  StartReply,
  StartRequest,
  StatusReply,
  StopReply,
  VersionResponse,
};

/** A non-2xx answer whose code has no domain error (413, 415, 5xx, ...). */
export class ApiError extends OvmError {
  readonly status: number;
  readonly apiCode: string;
  constructor(status: number, apiCode: string, message: string, options?: { hint?: string }) {
    super(message, options);
    this.status = status;
    this.apiCode = apiCode;
  }
}

/** Turns an error answer into the error the library would have thrown. */
export function errorFromResponse(status: number, body: unknown): OvmError {
  const e = (body as Partial<ErrorBody> | undefined)?.error;
  const message = e?.message ?? `The runtime answered HTTP ${status}`;
  const opts = { hint: e?.hint };
  switch (e?.code) {
    case "validation":
    case "bad_request":
      return new ValidationError(message, opts);
    case "not_found":
      return new NotFoundError(message, opts);
    case "already_exists":
      return new AlreadyExistsError(message, opts);
    case "conflict":
      return new ConflictError(message, opts);
    case "policy":
      return new PolicyError(message, opts);
  }
  return new ApiError(status, e?.code ?? "internal", message, opts);
}

export interface OvmsClientOptions {
  /** The server's socket; default `$OVM_SOCKET`, else the server's default path. */
  socket?: string;
}

export class OvmsClient implements Disposable {
  readonly socket: string;
  readonly #http: Deno.HttpClient;

  constructor(options: OvmsClientOptions = {}) {
    this.socket = clientSocketPath(options.socket);
    this.#http = Deno.createHttpClient({ proxy: { transport: "unix", path: this.socket } });
  }

  /** The raw exchange (the conformance kit reads statuses and bodies itself). */
  async request(
    method: string,
    path: string,
    init: { body?: BodyInit; headers?: HeadersInit; signal?: AbortSignal } = {},
  ): Promise<Response> {
    return await fetch(`http://ovms${path}`, {
      method,
      body: init.body,
      headers: init.headers,
      signal: init.signal,
      client: this.#http,
    });
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, {
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? undefined : { "content-type": "application/json" },
    });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) throw errorFromResponse(res.status, parsed);
    return parsed as T;
  }

  /** Starts an instance; answers at once with `starting` (or, with `wait`, once it booted). */
  async start(
    manifest: string,
    options: { overrides?: StartRequest["overrides"]; wait?: boolean } = {},
  ): Promise<StartReply> {
    return await this.#call("POST", `/start${options.wait ? "?wait=true" : ""}`, {
      manifest,
      ...(options.overrides ? { overrides: options.overrides } : {}),
    });
  }

  async stop(
    id: string,
    options: { timeoutMs?: number; force?: boolean } = {},
  ): Promise<StopReply> {
    return await this.#call("POST", "/stop", {
      instance_id: id,
      ...(options.timeoutMs !== undefined ? { timeout_ms: options.timeoutMs } : {}),
      ...(options.force ? { force: true } : {}),
    });
  }

  async snapshot(
    id: string,
    tag?: string,
    options: { stop?: boolean } = {},
  ): Promise<SnapshotResponse> {
    return await this.#call("POST", "/snapshot", {
      instance_id: id,
      ...(tag ? { tag } : {}),
      ...(options.stop ? { stop: true } : {}),
    });
  }

  /** Writes `data` at `offset` into the instance's ivshmem region `device`. */
  async inject(
    id: string,
    mmio: { device: string; offset: number; data: Uint8Array },
  ): Promise<InjectResponse> {
    let bin = "";
    for (let i = 0; i < mmio.data.byteLength; i += 0x8000) {
      bin += String.fromCharCode(...mmio.data.subarray(i, i + 0x8000));
    }
    return await this.#call("POST", "/inject", {
      instance_id: id,
      content: { mmio: { device: mmio.device, offset: mmio.offset, data: btoa(bin) } },
    });
  }

  /** Restores an instance put on standby (`snapshot(id, tag, {stop: true})`) under the same id. */
  async resume(id: string): Promise<StatusReply> {
    return await this.#call("POST", "/resume", { instance_id: id });
  }

  async status(id: string): Promise<StatusReply> {
    return await this.#call("GET", `/status/${encodeURIComponent(id)}`);
  }

  async instances(): Promise<InstancesReply["instances"]> {
    return (await this.#call<InstancesReply>("GET", "/instances")).instances;
  }

  async remove(id: string, options: { force?: boolean } = {}): Promise<void> {
    await this.#call(
      "DELETE",
      `/instances/${encodeURIComponent(id)}${options.force ? "?force=true" : ""}`,
    );
  }

  async health(): Promise<boolean> {
    return (await this.#call<{ status: string }>("GET", "/healthz")).status === "ok";
  }

  async version(): Promise<VersionResponse> {
    return await this.#call("GET", "/version");
  }

  /** The console as records; with `follow`, until the VM ends or `signal` aborts. */
  async *logs(
    id: string,
    options: { follow?: boolean; offset?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<LogRecord> {
    const q = new URLSearchParams();
    if (options.follow) q.set("follow", "true");
    if (options.offset) q.set("offset", String(options.offset));
    const res = await this.request(
      "GET",
      `/logs/${encodeURIComponent(id)}${q.size ? `?${q}` : ""}`,
      { signal: options.signal },
    );
    if (!res.ok) {
      throw errorFromResponse(res.status, await res.json().catch(() => undefined));
    }
    yield* ndjson<LogRecord>(res.body!);
  }

  close(): void {
    this.#http.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

/** Parses an NDJSON byte stream record by record. */
export async function* ndjson<T>(body: ReadableStream<Uint8Array>): AsyncGenerator<T> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of body) {
    buf += dec.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.trim()) yield JSON.parse(line) as T;
    }
  }
  if (buf.trim()) yield JSON.parse(buf) as T;
}

/**
 * The server the CLI should talk to, if any: `--socket` (must answer),
 * `$OVM_SOCKET` (used when it answers), else the default socket when it
 * answers and serves the same `OVM_HOME` (so a CLI pointed at another home
 * never drives someone else's server). Undefined: work directly.
 */
export async function findServer(options: {
  socket?: string;
  env: { get(key: string): string | undefined };
  home: string;
}): Promise<OvmsClient | undefined> {
  if (options.socket !== undefined) {
    if (!(await socketLive(options.socket))) {
      throw new NotFoundError(`No server answers on "${options.socket}"`, {
        hint: "start one with 'ovm serve --socket PATH', or drop --socket to work directly",
      });
    }
    return new OvmsClient({ socket: options.socket });
  }
  const fromEnv = options.env.get("OVM_SOCKET");
  const path = fromEnv || defaultSocketPath(options.env);
  if (!(await socketLive(path))) return undefined;
  const client = new OvmsClient({ socket: path });
  if (fromEnv) return client;
  try {
    const v = await client.version();
    if (v.home === options.home) return client;
  } catch { /* not an ovm server */ }
  client.close();
  return undefined;
}

/** The `--socket` option of the verbs that can act through a server. */
export const SOCKET_OPTION = {
  type: "string" as const,
  valueName: "PATH",
  help:
    "Act through the ovm serve on this socket (default: $OVM_SOCKET, or the default socket when it serves this home)",
};
