/**
 * @module
 * The auth decorator: {@linkcode AuthTransport} answers a registry's 401
 * challenge (basic, or bearer through the token endpoint named by its realm)
 * exactly once per request, with credentials from a
 * {@linkcode CredentialProvider}.
 */
import { OvmError } from "../../errors.ts";
import { AuthError, ociCodes } from "./errors.ts";
import type { HttpRequest, Transport } from "./transport.ts";

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
    await this.#answer(req, host, header);
    const second = await this.#authorize(req, host, true);
    const res2 = await this.#next.roundTrip(second);
    if (res2.status === 401 || (res2.status === 403 && this.#hosts.get(host)?.scheme)) {
      const denied = parseChallenges(res2.headers.get("www-authenticate") ?? "")
        .find((c) => c.params.error === "insufficient_scope");
      const body = await res2.text().catch(() => "");
      if (denied) {
        const scope = denied.params.scope ?? (req.scopes ?? []).join(" ");
        throw new AuthError(
          `Registry "${host}" denied access "${scope}" for ${req.method} ${url.pathname}`,
          {
            status: res2.status,
            ociCodes: ociCodes(body),
            hint:
              "the credentials are valid but the account lacks this access; use an account that has it, or ask the registry's admin",
          },
        );
      }
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

  /** Learns the host's scheme from a challenge; for bearer, fetches the token now. */
  async #answer(req: HttpRequest, host: string, header: string): Promise<void> {
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
      // The retry looks the token up by the request's own scopes.
      this.#tokens.set(tokenKey(host, req.scopes ?? []), entry);
    } else if (basic) {
      this.#hosts.set(host, { scheme: "basic" });
    } else {
      throw new AuthError(`Registry "${host}" refused the request with an unknown challenge`, {
        status: 401,
        hint: `challenge: ${header || "(none)"}`,
      });
    }
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
    const res = await this.#next.roundTrip(tokenRequest(realm, scopes, { cred, state, signal }));
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

/**
 * The token request: an OAuth2 refresh-token POST when the credential is an
 * identity token (as a credential helper's `<token>` user gives), else a GET
 * with basic auth, or anonymous.
 */
function tokenRequest(
  realm: URL,
  scopes: string[],
  ctx: { cred?: Credential; state: HostAuth; signal?: AbortSignal },
): HttpRequest {
  const { cred, state, signal } = ctx;
  if (cred?.identityToken && !cred.username) {
    const form = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: cred.identityToken,
      client_id: "ovm",
    });
    if (state.service) form.set("service", state.service);
    if (scopes.length) form.set("scope", scopes.join(" "));
    const url = new URL(realm);
    url.search = "";
    return {
      method: "POST",
      url,
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new TextEncoder().encode(form.toString()),
      signal,
    };
  }
  const headers: Record<string, string> = {};
  if (cred?.username) headers["Authorization"] = basicAuth(cred.username, cred.password ?? "");
  return { method: "GET", url: realm, headers, signal };
}

function tokenKey(host: string, scopes: string[]): string {
  return `${host}|${[...scopes].sort().join(" ")}`;
}

/** `Basic base64(user:password)`, UTF-8 safe. */
export function basicAuth(user: string, password: string): string {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}
