/**
 * @module
 * The HTTP transport to registries, as decorators around `fetch` (the shape of
 * go-containerregistry's `transport` package): {@linkcode HttpTransport}
 * follows redirects itself so `Authorization` never leaves the registry's
 * host, {@linkcode RetryTransport} retries 429 and 5xx with bounded, jittered
 * backoff honouring `Retry-After`, and {@linkcode AuthTransport} answers 401
 * challenges (basic, or bearer via the token endpoint) exactly once per
 * request.
 */
import { OvmError, RegistryError } from "../errors.ts";
import { USER_AGENT } from "../version.ts";
import { delay } from "../util/async.ts";

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

/** Plain fetch with `User-Agent`, and redirects that drop credentials across hosts. */
export class HttpTransport implements Transport {
  #userAgent: string;
  #fetch: typeof fetch;

  constructor(options: { userAgent?: string; fetch?: typeof fetch } = {}) {
    this.#userAgent = options.userAgent ?? USER_AGENT;
    this.#fetch = options.fetch ?? fetch;
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
      const res = await this.#fetch(url, init);
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

export interface RetryOptions {
  /** Attempts in all, the first included. */
  maxAttempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Called before each wait, for progress output. */
  onRetry?: (info: { attempt: number; delayMs: number; reason: string }) => void;
}

const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

/** Retries throttling, server errors and network failures, bounded and jittered. */
export class RetryTransport implements Transport {
  #next: Transport;
  #opts: Required<Omit<RetryOptions, "onRetry">> & Pick<RetryOptions, "onRetry">;

  constructor(next: Transport, options: RetryOptions = {}) {
    this.#next = next;
    this.#opts = {
      maxAttempts: options.maxAttempts ?? 5,
      baseDelayMs: options.baseDelayMs ?? 250,
      maxDelayMs: options.maxDelayMs ?? 10_000,
      onRetry: options.onRetry,
    };
  }

  async roundTrip(req: HttpRequest): Promise<Response> {
    for (let attempt = 1;; attempt++) {
      let res: Response | undefined;
      let reason: string;
      try {
        res = await this.#next.roundTrip(req);
        if (!RETRY_STATUSES.has(res.status) || attempt >= this.#opts.maxAttempts) return res;
        reason = `HTTP ${res.status}`;
      } catch (e) {
        if (!isNetworkError(e) || attempt >= this.#opts.maxAttempts) throw e;
        reason = (e as Error).message;
      }
      const retryAfter = res ? parseRetryAfter(res.headers.get("retry-after")) : undefined;
      await res?.body?.cancel();
      const backoff = Math.min(
        this.#opts.maxDelayMs,
        this.#opts.baseDelayMs * 2 ** (attempt - 1),
      );
      // Full jitter keeps many clients from retrying in lockstep; Retry-After
      // is a floor the server asked for, capped so a bad header cannot hang us.
      let delayMs = Math.random() * backoff;
      if (retryAfter !== undefined) delayMs = Math.min(Math.max(retryAfter, delayMs), 60_000);
      this.#opts.onRetry?.({ attempt, delayMs, reason });
      await delay(delayMs, req.signal);
    }
  }
}

/** `Retry-After` as milliseconds (delta-seconds or an HTTP date). */
export function parseRetryAfter(v: string | null, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** A failure of the connection rather than an answer from the server. */
export function isNetworkError(e: unknown): boolean {
  if (e instanceof DOMException && e.name === "AbortError") return false;
  if (e instanceof NetworkError) return !e.tls;
  if (isTlsError(e)) return false;
  return e instanceof TypeError || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.ConnectionAborted ||
    e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.UnexpectedEof ||
    e instanceof Deno.errors.Interrupted || e instanceof Deno.errors.TimedOut ||
    (e instanceof Error && e.name === "Http");
}

/** A TLS failure (handshake, certificate, plain HTTP answering): retrying will not help. */
export function isTlsError(e: unknown): boolean {
  const text = e instanceof Error ? `${e.message} ${String(e.cause ?? "")}` : "";
  return /certificate|InvalidContentType|handshake|\btls\b|\bssl\b/i.test(text);
}

/** The registry could not be reached, or the connection failed mid-answer. */
export class NetworkError extends RegistryError {
  /** A TLS failure rather than a lost connection. */
  readonly tls: boolean;
  constructor(message: string, options: { cause?: unknown; hint?: string; tls?: boolean }) {
    super(message, { status: 0, cause: options.cause, hint: options.hint });
    this.tls = options.tls ?? false;
  }
}

// ---- authentication ----

/** Credentials for one registry host. */
export interface Credential {
  username?: string;
  password?: string;
  /** A refresh token / identity token (sent as `refresh_token` to OAuth2 endpoints). */
  identityToken?: string;
}

export type CredentialProvider = (registry: string) => Promise<Credential | undefined>;

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses `WWW-Authenticate` (one or more challenges, quoted or token params). */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const re =
    /\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+((?:[A-Za-z0-9_-]+\s*=\s*(?:"(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?\s*)*))?,?/gy;
  let m: RegExpExecArray | null;
  while ((m = re.exec(header)) !== null && m[0].length > 0) {
    const params: Record<string, string> = {};
    const pre = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
    let p: RegExpExecArray | null;
    while ((p = pre.exec(m[2] ?? "")) !== null) {
      params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
    }
    out.push({ scheme: m[1].toLowerCase(), params });
  }
  return out;
}

/** An authentication failure: wrong or missing credentials, or a denied scope. */
export class AuthError extends RegistryError {}

interface TokenEntry {
  token: string;
  expiresAt: number;
}

interface HostAuth {
  scheme?: "basic" | "bearer";
  realm?: string;
  service?: string;
}

/**
 * Answers 401 challenges. Bearer tokens are cached per host and scope set and
 * fetched again shortly before they expire; a request is sent at most twice,
 * so a second 401 becomes an {@linkcode AuthError} instead of a loop.
 */
export class AuthTransport implements Transport {
  #next: Transport;
  #credentials: CredentialProvider;
  #hosts = new Map<string, HostAuth>();
  #tokens = new Map<string, TokenEntry>();
  #now: () => number;

  constructor(
    next: Transport,
    options: { credentials?: CredentialProvider; now?: () => number } = {},
  ) {
    this.#next = next;
    this.#credentials = options.credentials ?? (() => Promise.resolve(undefined));
    this.#now = options.now ?? Date.now;
  }

  async roundTrip(req: HttpRequest): Promise<Response> {
    const url = new URL(req.url);
    const host = url.host;
    const first = await this.#authorize(req, host, false);
    const res = await this.#next.roundTrip(first);
    if (res.status !== 401) return res;
    const header = res.headers.get("www-authenticate") ?? "";
    await res.body?.cancel();
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basic = challenges.find((c) => c.scheme === "basic");
    if (bearer?.params.realm) {
      this.#hosts.set(host, {
        scheme: "bearer",
        realm: bearer.params.realm,
        service: bearer.params.service,
      });
      const scopes = new Set(req.scopes ?? []);
      if (bearer.params.scope) { for (const s of bearer.params.scope.split(" ")) scopes.add(s); }
      const entry = await this.#fetchToken(host, [...scopes], req.signal);
      // The retry below looks the token up by the request's own scopes.
      this.#tokens.set(tokenKey(host, req.scopes ?? []), entry);
    } else if (basic) {
      this.#hosts.set(host, { scheme: "basic" });
    } else {
      throw new AuthError(`Registry "${host}" refused the request with an unknown challenge`, {
        status: 401,
        hint: `challenge: ${header || "(none)"}`,
      });
    }
    const second = await this.#authorize(req, host, true);
    const res2 = await this.#next.roundTrip(second);
    if (res2.status === 401 || (res2.status === 403 && this.#hosts.get(host)?.scheme)) {
      const body = await res2.text().catch(() => "");
      throw new AuthError(
        `Registry "${host}" refused the credentials (HTTP ${res2.status}) for ${req.method} ${url.pathname}`,
        {
          status: res2.status,
          ociCodes: ociCodes(body),
          hint: `check the user name and password: ovm login ${host}`,
        },
      );
    }
    return res2;
  }

  async #authorize(req: HttpRequest, host: string, after401: boolean): Promise<HttpRequest> {
    const state = this.#hosts.get(host);
    if (!state?.scheme) return req;
    const headers = { ...(req.headers ?? {}) };
    if (state.scheme === "basic") {
      const cred = await this.#credentials(host);
      if (!cred?.username) {
        if (!after401) return req;
        throw new AuthError(`Registry "${host}" requires a user name and password`, {
          status: 401,
          hint: `log in first: ovm login ${host}`,
        });
      }
      headers["Authorization"] = basicAuth(cred.username, cred.password ?? "");
    } else {
      const key = tokenKey(host, req.scopes ?? []);
      let entry = this.#tokens.get(key);
      if (!entry || entry.expiresAt <= this.#now()) {
        entry = await this.#fetchToken(host, req.scopes ?? [], req.signal);
      }
      headers["Authorization"] = `Bearer ${entry.token}`;
    }
    return { ...req, headers };
  }

  async #fetchToken(host: string, scopes: string[], signal?: AbortSignal): Promise<TokenEntry> {
    const state = this.#hosts.get(host)!;
    const realm = new URL(state.realm!);
    if (state.service) realm.searchParams.set("service", state.service);
    for (const s of scopes) realm.searchParams.append("scope", s);
    const cred = await this.#credentials(host);
    const headers: Record<string, string> = {};
    if (cred?.username) headers["Authorization"] = basicAuth(cred.username, cred.password ?? "");
    const res = await this.#next.roundTrip({ method: "GET", url: realm, headers, signal });
    const text = await res.text();
    if (!res.ok) {
      throw new AuthError(
        `Token endpoint "${realm.origin}${realm.pathname}" for "${host}" answered HTTP ${res.status}`,
        {
          status: res.status === 401 ? 401 : res.status,
          ociCodes: ociCodes(text),
          hint: res.status === 401 || res.status === 403
            ? `the credentials were refused; log in again: ovm login ${host}`
            : "the registry's auth service is failing; try again later",
        },
      );
    }
    let doc: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      doc = JSON.parse(text);
    } catch (cause) {
      throw new OvmError(`Token endpoint for "${host}" sent a body that is not JSON`, { cause });
    }
    const token = doc.token || doc.access_token;
    if (!token) {
      throw new OvmError(`Token endpoint for "${host}" sent neither "token" nor "access_token"`);
    }
    // The distribution token spec's default lifetime is 60 s; refresh 10 s early.
    const lifetime = Math.max(10, Number(doc.expires_in) || 60);
    const entry = { token, expiresAt: this.#now() + (lifetime - 10) * 1000 };
    this.#tokens.set(tokenKey(host, scopes), entry);
    return entry;
  }
}

function tokenKey(host: string, scopes: string[]): string {
  return `${host}|${[...scopes].sort().join(" ")}`;
}

function basicAuth(user: string, password: string): string {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

/** The `code`s of an OCI error body, or none. */
export function ociCodes(body: string): string[] {
  try {
    const doc = JSON.parse(body) as { errors?: { code?: string }[] };
    return (doc.errors ?? []).map((e) => String(e.code ?? "")).filter(Boolean);
  } catch {
    return [];
  }
}

/** The default stack: auth → retry → fetch. */
export function defaultTransport(
  options: { credentials?: CredentialProvider; retry?: RetryOptions; fetch?: typeof fetch } = {},
): Transport {
  return new AuthTransport(
    new RetryTransport(new HttpTransport({ fetch: options.fetch }), options.retry),
    { credentials: options.credentials },
  );
}
