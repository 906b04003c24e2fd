/**
 * @module
 * The HTTP transport to registries, as decorators around `fetch` (the shape of
 * go-containerregistry's `transport` package): {@linkcode HttpTransport}
 * follows redirects itself so `Authorization` never leaves the registry's
 * host; `RetryTransport` (retry.ts) and `AuthTransport` (auth.ts) wrap it,
 * and `defaultTransport` (stack.ts) stacks them.
 */
import { RegistryError } from "../../errors.ts";
import { USER_AGENT } from "../../version.ts";
import { httpClientFor, type TlsTrust } from "./tls.ts";

/** A request the transport may have to send more than once (retry, auth, redirect). */
export interface HttpRequest {
  method: string;
  url: string | URL;
  headers?: Record<string, string>;
  /** Bytes, or a factory called for every attempt (streams cannot be replayed). */
  body?: Uint8Array | (() => BodyInit | Promise<BodyInit>);
  signal?: AbortSignal;
  /** Bearer scopes this request needs, e.g. `repository:vms/demo:pull,push`. */
  scopes?: string[];
}

/** One round trip: a request in, the final response out (bodies are the caller's). */
export interface Transport {
  roundTrip(req: HttpRequest): Promise<Response>;
}

const MAX_REDIRECTS = 5;

/**
 * Plain fetch with `User-Agent`, redirects that drop credentials across
 * hosts, and the extra CA and client certificates `tls` finds for a host.
 */
export class HttpTransport implements Transport {
  #userAgent: string;
  #fetch: typeof fetch;
  #tls?: TlsTrust;

  constructor(options: { userAgent?: string; fetch?: typeof fetch; tls?: TlsTrust } = {}) {
    this.#userAgent = options.userAgent ?? USER_AGENT;
    this.#fetch = options.fetch ?? fetch;
    this.#tls = options.tls;
  }

  /** One fetch, through an HTTP client that trusts the host's extra CAs when it has any. */
  async #send(url: URL, init: RequestInit): Promise<Response> {
    const extra = url.protocol === "https:" ? await this.#tls?.forHost(url.host) : undefined;
    if (!extra) return await this.#fetch(url, init);
    return await this.#fetch(url, { ...init, client: httpClientFor(extra) } as RequestInit);
  }

  async roundTrip(req: HttpRequest): Promise<Response> {
    let url = new URL(req.url);
    const origin = url.origin;
    let method = req.method;
    let headers = new Headers(req.headers);
    headers.set("User-Agent", this.#userAgent);
    let body = req.body;
    for (let hop = 0;; hop++) {
      const init: RequestInit = { method, headers, redirect: "manual", signal: req.signal };
      if (body !== undefined) {
        init.body = body instanceof Uint8Array ? (body as Uint8Array<ArrayBuffer>) : await body();
      }
      const res = await this.#send(url, init);
      if (![301, 302, 303, 307, 308].includes(res.status)) return res;
      const location = res.headers.get("location");
      if (!location) return res;
      await res.body?.cancel();
      if (hop >= MAX_REDIRECTS) {
        throw new RegistryError(`Too many redirects from "${req.url}"`, { status: res.status });
      }
      url = new URL(location, url);
      if (url.origin !== origin) {
        // The storage backend behind a redirect is not the registry: it must
        // not see the registry credentials (it has its own signed URL).
        headers = new Headers(headers);
        headers.delete("Authorization");
      }
      if (res.status === 303 || ((res.status === 301 || res.status === 302) && method === "POST")) {
        method = "GET";
        body = undefined;
      }
    }
  }
}
