/**
 * @module
 * A small JSON client for VMM REST APIs served on a UNIX socket (Cloud
 * Hypervisor's `--api-socket`, Firecracker's `--api-sock`). Deno's `fetch`
 * speaks HTTP/1.1 over a UNIX socket through `Deno.createHttpClient`, so no
 * hand-written HTTP is needed. Every failure becomes a {@linkcode VmmError}
 * naming the adapter and the step, with the VMM's own message.
 */
import { VmmError } from "../errors.ts";

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
