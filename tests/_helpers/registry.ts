/**
 * @module
 * Real registries for tests: Debian's `docker-registry` (distribution 2.8)
 * on a free loopback port, with no auth, htpasswd basic auth, or token auth
 * against a small token server signed with a key made by `openssl`; and a
 * fault-injecting proxy to put in front of it. Everything is torn down by
 * `await using`, also when the test fails.
 */
import { join } from "node:path";

export interface RunningRegistry extends AsyncDisposable {
  /** `127.0.0.1:PORT` */
  host: string;
  url: string;
  dir: string;
  /** Requests the token server saw (token auth only). */
  tokenRequests: URL[];
  /** With `tls`: the PEM of the private CA that signed the registry's certificate. */
  caFile?: string;
  /** With `clientCerts`: a client certificate and key the registry accepts. */
  clientCert?: string;
  clientKey?: string;
}

export interface RegistryOptions {
  /** Serve HTTPS with a certificate (for 127.0.0.1 and localhost) from a private CA. */
  tls?: boolean;
  /** With `tls`: require a client certificate from the same CA (mutual TLS). */
  clientCerts?: boolean;
}

export type RegistryAuth =
  | { kind: "none" }
  | { kind: "htpasswd"; username: string; password: string }
  | {
    kind: "token";
    username: string;
    password: string;
    /** Answer with `access_token` instead of `token`. */
    accessTokenField?: boolean;
    /** Token lifetime in seconds. */
    expiresIn?: number;
    /** Actions the user may have per repository; absent: whatever is asked for. */
    access?: Record<string, string[]>;
    /** A refresh token the token server accepts (OAuth2 POST) as this user. */
    refreshToken?: string;
  };

export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function sh(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd: opts.cwd, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed: ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** Starts docker-registry; waits until `/v2/` answers. */
export async function startRegistry(
  auth: RegistryAuth = { kind: "none" },
  options: RegistryOptions = {},
): Promise<RunningRegistry> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-registry-" });
  const cleanups: (() => Promise<void> | void)[] = [
    () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  ];
  const tokenRequests: URL[] = [];
  try {
    const port = freePort();
    let authYaml = "";
    if (auth.kind === "htpasswd") {
      const line = await sh("htpasswd", ["-Bbn", auth.username, auth.password]);
      await Deno.writeTextFile(join(dir, "htpasswd"), line);
      authYaml = `auth:
  htpasswd:
    realm: ovm-test
    path: ${join(dir, "htpasswd")}
`;
    } else if (auth.kind === "token") {
      const server = await startTokenServer(dir, auth, tokenRequests);
      cleanups.push(() => server.shutdown());
      authYaml = `auth:
  token:
    realm: http://127.0.0.1:${server.port}/token
    service: ovm-test-registry
    issuer: ovm-test-issuer
    rootcertbundle: ${join(dir, "token.crt")}
`;
    }
    const config = `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: ${join(dir, "data")}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:${port}
${authYaml}`;
    let tlsYaml = "";
    let caFile: string | undefined;
    let client: { cert: string; key: string } | undefined;
    if (options.tls) {
      const pki = await makeTestPki(dir);
      caFile = pki.caFile;
      tlsYaml = `  tls:
    certificate: ${pki.certFile}
    key: ${pki.keyFile}
`;
      if (options.clientCerts) {
        client = await makeClientCert(dir);
        tlsYaml += `    clientcas:
      - ${pki.caFile}
`;
      }
    }
    await Deno.writeTextFile(
      join(dir, "config.yml"),
      config.replace(`  addr: 127.0.0.1:${port}\n`, `  addr: 127.0.0.1:${port}\n${tlsYaml}`),
    );
    const child = new Deno.Command("docker-registry", {
      args: ["serve", join(dir, "config.yml")],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    cleanups.unshift(async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* exited */ }
      await child.status;
      await stderr;
    });
    const url = `${caFile ? "https" : "http"}://127.0.0.1:${port}`;
    const caCerts = caFile ? [await Deno.readTextFile(caFile)] : [];
    const httpClient = !caFile ? undefined : client
      ? Deno.createHttpClient({
        caCerts,
        cert: await Deno.readTextFile(client.cert),
        key: await Deno.readTextFile(client.key),
      })
      : Deno.createHttpClient({ caCerts });
    try {
      for (let i = 0;; i++) {
        try {
          const res = await fetch(`${url}/v2/`, { client: httpClient } as RequestInit);
          await res.body?.cancel();
          if (res.status === 200 || res.status === 401) break;
        } catch { /* not yet */ }
        if (i > 100) throw new Error(`docker-registry did not start: ${await stderr}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      httpClient?.close();
    }
    return {
      host: `127.0.0.1:${port}`,
      url,
      dir,
      tokenRequests,
      caFile,
      clientCert: client?.cert,
      clientKey: client?.key,
      async [Symbol.asyncDispose]() {
        for (const c of cleanups) await c();
      },
    };
  } catch (e) {
    for (const c of cleanups) await c();
    throw e;
  }
}

// ---- a private CA ----

/**
 * Makes a private CA and a server certificate it signs, valid for 127.0.0.1
 * and localhost, with openssl, in `dir`.
 */
export async function makeTestPki(
  dir: string,
): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  const caKey = join(dir, "ca.key");
  const caFile = join(dir, "ca.crt");
  const keyFile = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const certFile = join(dir, "server.crt");
  const ext = join(dir, "server.ext");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  await sh("openssl", [
    "req",
    "-x509",
    ...ec,
    "-keyout",
    caKey,
    "-out",
    caFile,
    "-days",
    "1",
    "-subj",
    "/CN=ovm test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  await sh("openssl", ["req", ...ec, "-keyout", keyFile, "-out", csr, "-subj", "/CN=127.0.0.1"]);
  await Deno.writeTextFile(
    ext,
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
  );
  await sh("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    caFile,
    "-CAkey",
    caKey,
    "-CAcreateserial",
    "-out",
    certFile,
    "-days",
    "1",
    "-extfile",
    ext,
  ]);
  return { caFile, certFile, keyFile };
}

/** A client certificate signed by the CA `makeTestPki` made in `dir`. */
async function makeClientCert(dir: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, "client.key");
  const csr = join(dir, "client.csr");
  const cert = join(dir, "client.cert");
  const ext = join(dir, "client.ext");
  await sh("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    key,
    "-out",
    csr,
    "-subj",
    "/CN=ovm test client",
  ]);
  await Deno.writeTextFile(ext, "extendedKeyUsage=clientAuth\n");
  await sh("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    join(dir, "ca.crt"),
    "-CAkey",
    join(dir, "ca.key"),
    "-CAcreateserial",
    "-out",
    cert,
    "-days",
    "1",
    "-extfile",
    ext,
  ]);
  return { cert, key };
}

// ---- token server ----

/** libtrust's key id: base32 of the first 240 bits of sha256(SPKI DER), in groups of 4. */
async function libtrustKeyId(spki: ArrayBuffer): Promise<string> {
  const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", spki)).slice(0, 30);
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  let out = "";
  for (const b of hash) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out.match(/.{4}/g)!.join(":");
}

function b64url(data: Uint8Array | string): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function pemBody(pem: string): Uint8Array<ArrayBuffer> {
  const b64 = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function startTokenServer(
  dir: string,
  auth: Extract<RegistryAuth, { kind: "token" }>,
  seen: URL[],
): Promise<{ port: number; shutdown: () => Promise<void> }> {
  const keyPath = join(dir, "token.key");
  const certPath = join(dir, "token.crt");
  await sh("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    keyPath,
    "-out",
    certPath,
    "-days",
    "1",
    "-subj",
    "/CN=ovm-test-token",
  ]);
  const pkcs8 = pemBody(await Deno.readTextFile(keyPath));
  const key = await crypto.subtle.importKey(
    "pkcs8",
    pkcs8,
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const pub = await crypto.subtle.importKey(
    "jwk",
    { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y },
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["verify"],
  );
  const kid = await libtrustKeyId(await crypto.subtle.exportKey("spki", pub));
  const expected = `Basic ${btoa(`${auth.username}:${auth.password}`)}`;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    let given = req.headers.get("authorization");
    if (req.method === "POST") {
      // OAuth2 refresh-token grant (distribution's token spec, "oauth.md").
      const form = new URLSearchParams(await req.text());
      for (const [k, v] of form) if (k !== "refresh_token") url.searchParams.append(k, v);
      url.searchParams.delete("scope");
      for (const s of (form.get("scope") ?? "").split(" ").filter(Boolean)) {
        url.searchParams.append("scope", s);
      }
      if (form.get("grant_type") !== "refresh_token" || !auth.refreshToken) {
        return new Response("unsupported grant", { status: 400 });
      }
      if (form.get("refresh_token") !== auth.refreshToken) {
        return new Response("bad refresh token", { status: 401 });
      }
      given = expected;
    }
    seen.push(url);
    // Anonymous callers get a token without access; wrong credentials a 401.
    if (given && given !== expected) return new Response("bad credentials", { status: 401 });
    const access = given
      ? url.searchParams.getAll("scope").map((s) => {
        const [type, ...rest] = s.split(":");
        const asked = rest.pop()!.split(",");
        const name = rest.join(":");
        const allowed = auth.access ? auth.access[name] ?? [] : asked;
        return { type, name, actions: asked.filter((a) => allowed.includes(a)) };
      })
      : [];
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: "ES256", typ: "JWT", kid };
    const claims = {
      iss: "ovm-test-issuer",
      sub: given ? auth.username : "",
      aud: url.searchParams.get("service"),
      exp: now + (auth.expiresIn ?? 300),
      nbf: now - 10,
      iat: now,
      jti: crypto.randomUUID(),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = new Uint8Array(
      await crypto.subtle.sign(
        { name: "ECDSA", hash: "SHA-256" },
        key,
        new TextEncoder().encode(input),
      ),
    );
    const token = `${input}.${b64url(sig)}`;
    const body = auth.accessTokenField
      ? { access_token: token, expires_in: auth.expiresIn ?? 300 }
      : { token, expires_in: auth.expiresIn ?? 300 };
    return Response.json(body);
  });
  return { port: server.addr.port, shutdown: () => server.shutdown() };
}

// ---- fault proxy ----

export interface FaultProxy extends AsyncDisposable {
  host: string;
  /** Every request the proxy saw: method, path, Range header. */
  log: { method: string; path: string; range: string | null }[];
}

export type ProxyHandler = (
  req: Request,
  forward: (req: Request) => Promise<Response>,
  log: FaultProxy["log"],
) => Promise<Response> | Response;

/** A loopback proxy to `upstream` whose handler can corrupt, cut or delay answers. */
export function startProxy(upstream: string, handler: ProxyHandler): FaultProxy {
  const log: FaultProxy["log"] = [];
  const forward = async (req: Request): Promise<Response> => {
    const u = new URL(req.url);
    const target = `http://${upstream}${u.pathname}${u.search}`;
    const headers = new Headers(req.headers);
    headers.delete("host");
    const res = await fetch(target, {
      method: req.method,
      headers,
      body: req.body,
      redirect: "manual",
    });
    const out = new Headers(res.headers);
    const loc = out.get("location");
    if (loc) out.set("location", loc.replace(`http://${upstream}`, ""));
    return new Response(req.method === "HEAD" ? null : res.body, {
      status: res.status,
      headers: out,
    });
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const u = new URL(req.url);
    log.push({ method: req.method, path: u.pathname, range: req.headers.get("range") });
    return handler(req, forward, log);
  });
  return {
    host: `127.0.0.1:${server.addr.port}`,
    log,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

// ---- store checks ----

/**
 * Asserts the store holds nothing half-written: every blob's bytes match its
 * name, and every ref's closure is present.
 */
export async function assertStoreConsistent(home: string): Promise<void> {
  const { ContentStore } = await import("../../src/store/mod.ts");
  const { digestFile } = await import("../../src/manifest/mod.ts");
  const store = await ContentStore.open(home);
  const dir = join(store.root, "blobs", "sha256");
  for await (const e of Deno.readDir(dir)) {
    const { digest } = await digestFile(join(dir, e.name));
    if (digest !== `sha256:${e.name}`) {
      throw new Error(`store blob ${e.name} has digest ${digest}`);
    }
  }
  for (const d of await store.indexDescriptors()) await store.assertComplete(d);
}

/** Makes small dummy kernel/initrd/disk files and packs them as `tag` in a fresh store. */
export async function packDummy(
  home: string,
  tag: string,
  options: { diskBytes?: number; seed?: number } = {},
): Promise<{ digest: string; ref: string }> {
  const { ContentStore } = await import("../../src/store/mod.ts");
  const { pack } = await import("../../src/cli/pack.ts");
  const store = await ContentStore.open(home);
  const tmp = await Deno.makeTempDir({ prefix: "ovm-pack-" });
  try {
    const seed = options.seed ?? 1;
    const fill = (n: number, s: number) => {
      const b = new Uint8Array(n);
      let x = s * 2654435761 >>> 0;
      for (let i = 0; i < n; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        b[i] = x >>> 24;
      }
      return b;
    };
    await Deno.writeFile(join(tmp, "vmlinuz"), fill(64 * 1024, seed));
    await Deno.writeFile(join(tmp, "initrd"), fill(32 * 1024, seed + 1));
    await Deno.writeFile(join(tmp, "disk.raw"), fill(options.diskBytes ?? 256 * 1024, seed + 2));
    const res = await pack(store, {
      kernel: join(tmp, "vmlinuz"),
      initrd: join(tmp, "initrd"),
      disks: [{ path: join(tmp, "disk.raw"), format: "raw" }],
      devices: [],
      tag,
    });
    return { digest: res.descriptor.digest, ref: res.ref };
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}
