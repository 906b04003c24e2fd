/**
 * @module
 * Which certificates a registry connection trusts, as docker and the
 * containers tools (skopeo, podman) decide it: the system roots, plus a CA
 * file given with `--ca-file` or `SSL_CERT_FILE`, plus the per-registry
 * directory `certs.d/HOST[:PORT]/` (`*.crt` are CAs; a `*.cert` with the
 * `*.key` of the same name is a client certificate) under
 * `/etc/containers/certs.d` and `/etc/docker/certs.d`, or the directories in
 * `$OVM_CERTS_D` instead.
 */
import { join } from "node:path";
import { ValidationError } from "../../errors.ts";

type Env = { get(key: string): string | undefined };

/** The certs.d roots docker and containers-certs.d(5) read, in order. */
export const DEFAULT_CERTS_DIRS = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

export interface TlsOptions {
  /** A PEM file of CA certificates trusted for every registry (`--ca-file`). */
  caFile?: string;
  /** certs.d roots; default `$OVM_CERTS_D` (colon-separated) or {@linkcode DEFAULT_CERTS_DIRS}. */
  certsDirs?: string[];
  /** Where `SSL_CERT_FILE` and `OVM_CERTS_D` are read (default the process's). */
  env?: Env;
}

/** What a connection to one host trusts beyond the system roots. */
export interface HostTls {
  caCerts: string[];
  /** A client certificate chain and key (mutual TLS), from certs.d. */
  cert?: string;
  key?: string;
  /** The files these came from, for messages. */
  sources: string[];
}

/** The certs.d roots in effect for `env`. */
export function certsDirs(env: Env = Deno.env): string[] {
  const v = env.get("OVM_CERTS_D");
  return v ? v.split(":").filter(Boolean) : DEFAULT_CERTS_DIRS;
}

/** Resolves, once per host, the extra trust a registry connection needs. */
export class TlsTrust {
  #caFile?: string;
  #dirs: string[];
  #env: Env;
  #hosts = new Map<string, Promise<HostTls | undefined>>();

  constructor(options: TlsOptions = {}) {
    this.#env = options.env ?? Deno.env;
    this.#caFile = options.caFile;
    this.#dirs = options.certsDirs ?? certsDirs(this.#env);
  }

  /**
   * Whether trust was set up for `host` itself (`--ca-file`, or a
   * certs.d/HOST directory): a loopback registry is then spoken to over HTTPS.
   */
  configuredFor(host: string): boolean {
    if (this.#caFile) return true;
    return this.#dirs.some((root) => {
      try {
        return Deno.statSync(join(root, host)).isDirectory;
      } catch {
        return false;
      }
    });
  }

  /** The extra trust for `host` (`name[:port]`), or undefined when the system roots suffice. */
  forHost(host: string): Promise<HostTls | undefined> {
    let p = this.#hosts.get(host);
    if (!p) {
      p = this.#load(host);
      this.#hosts.set(host, p);
    }
    return p;
  }

  async #load(host: string): Promise<HostTls | undefined> {
    const out: HostTls = { caCerts: [], sources: [] };
    for (
      const [file, what] of [
        [this.#caFile, "--ca-file"],
        [this.#env.get("SSL_CERT_FILE"), "SSL_CERT_FILE"],
      ] as const
    ) {
      if (!file) continue;
      out.caCerts.push(await readPem(file, what));
      out.sources.push(file);
    }
    for (const root of this.#dirs) await readCertsDir(join(root, host), out);
    return out.sources.length ? out : undefined;
  }
}

async function readPem(path: string, what: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (cause) {
    throw new ValidationError(`CA file "${path}" (${what}) cannot be read`, {
      cause,
      hint: "give the path of a PEM file of CA certificates",
    });
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ValidationError(`CA file "${path}" (${what}) holds no PEM certificate`, {
      hint: 'expected "-----BEGIN CERTIFICATE-----" blocks',
    });
  }
  return text;
}

/** Adds a certs.d/HOST directory's CAs and client certificate to `out`. */
async function readCertsDir(dir: string, out: HostTls): Promise<void> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isFile || e.isSymlink) names.push(e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) return;
    throw e;
  }
  names.sort();
  for (const name of names) {
    const path = join(dir, name);
    if (name.endsWith(".crt")) {
      out.caCerts.push(await readPem(path, "certs.d"));
      out.sources.push(path);
    } else if (name.endsWith(".cert")) {
      const keyName = name.replace(/\.cert$/, ".key");
      if (!names.includes(keyName)) {
        throw new ValidationError(
          `Client certificate "${path}" has no key "${keyName}" beside it`,
          {
            hint: "certs.d pairs NAME.cert with NAME.key (as docker does)",
          },
        );
      }
      out.cert = await Deno.readTextFile(path);
      out.key = await Deno.readTextFile(join(dir, keyName));
      out.sources.push(path);
    }
  }
}

const CLIENTS = new Map<string, Deno.HttpClient>();

/**
 * The HTTP client for one set of extra trust, shared by every request that
 * needs the same (so connections are pooled and kept alive). Clients live as
 * long as the process; there are as many as distinct trust settings.
 */
export function httpClientFor(extra: HostTls): Deno.HttpClient {
  const key = JSON.stringify([extra.caCerts, extra.cert ?? "", extra.key ?? ""]);
  let client = CLIENTS.get(key);
  if (!client) {
    client = extra.cert && extra.key
      ? Deno.createHttpClient({ caCerts: extra.caCerts, cert: extra.cert, key: extra.key })
      : Deno.createHttpClient({ caCerts: extra.caCerts });
    CLIENTS.set(key, client);
  }
  return client;
}

/** What to tell a user whose TLS handshake with `host` failed, by the failure's text. */
export function tlsAdvice(host: string, detail: string, env: Env = Deno.env): {
  reason: string;
  hint: string;
} {
  const certsD = `${certsDirs(env).at(-1)}/${host}/ca.crt`;
  if (/UnknownIssuer|unknown authority|self.signed|UnknownCA/i.test(detail)) {
    return {
      reason: "x509: certificate signed by unknown authority",
      hint:
        `pass --ca-file FILE (or set SSL_CERT_FILE), or put the registry's CA certificate in ${certsD}`,
    };
  }
  if (/NotValidForName|not valid for/i.test(detail)) {
    return {
      reason: "x509: certificate is not valid for this host name",
      hint: `connect with a name the certificate of "${host}" lists (its subjectAltName)`,
    };
  }
  if (/Expired|NotValidYet/i.test(detail)) {
    return {
      reason: "x509: certificate has expired or is not yet valid",
      hint: `renew the certificate of "${host}" (or check this machine's clock)`,
    };
  }
  if (/InvalidContentType|corrupt message|wrong version/i.test(detail)) {
    return {
      reason: "the registry did not answer TLS",
      hint: "the registry may speak plain HTTP: pass --plain-http (or --insecure)",
    };
  }
  if (/CertificateRequired|certificate required|BadCertificate/i.test(detail)) {
    return {
      reason: "the registry requires a client certificate",
      hint: `put NAME.cert and NAME.key in ${certsD.replace(/ca\.crt$/, "")}`,
    };
  }
  return { reason: "TLS handshake failed", hint: "check the registry's TLS setup" };
}
