/**
 * @module
 * Docker credential helpers (`docker-credential-<name>`): `get` with the
 * registry's server URL on stdin answers `{"ServerURL","Username","Secret"}`
 * on stdout; a user name of `<token>` means the secret is an identity
 * (refresh) token. The helper runs through src/process, bounded in time.
 */
import { NotFoundError, OvmError } from "../../errors.ts";
import { run, which } from "../../process/mod.ts";
import type { Credential } from "../remote/mod.ts";
import { canonicalRegistry } from "./auth_file.ts";

type Env = { get(key: string): string | undefined };

const HELPER_TIMEOUT_MS = 30_000;

/** The server URL a helper is asked about: Docker Hub's v1 URL, else the host. */
export function helperServerUrl(registry: string): string {
  return canonicalRegistry(registry) === "docker.io" ? "https://index.docker.io/v1/" : registry;
}

/**
 * Asks `docker-credential-<name>` for `registry`'s credential; undefined when
 * the helper has none. `source` names the file that chose the helper.
 */
export async function helperCredential(
  name: string,
  registry: string,
  options: { env?: Env; signal?: AbortSignal; source?: string } = {},
): Promise<Credential | undefined> {
  const program = `docker-credential-${name}`;
  const from = options.source ? ` (named in "${options.source}")` : "";
  const path = await which(program, { path: options.env?.get("PATH") });
  if (!path) {
    throw new NotFoundError(`Credential helper "${program}"${from} was not found on PATH`, {
      hint: `install ${program}, or remove "${name}" from credsStore/credHelpers`,
    });
  }
  const timeout = AbortSignal.timeout(HELPER_TIMEOUT_MS);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  const res = await run(path, ["get"], {
    stdin: helperServerUrl(registry),
    signal,
    allowFailure: true,
  });
  if (!res.success) {
    const said = (res.stdout + res.stderr).trim();
    if (/credentials not found/i.test(said)) return undefined;
    throw new OvmError(
      `Credential helper "${program}"${from} failed for "${registry}" (exit ${res.code}): ${
        said || "no output"
      }`,
      { hint: `check the helper, e.g. echo ${helperServerUrl(registry)} | ${program} get` },
    );
  }
  let doc: { Username?: string; Secret?: string };
  try {
    doc = JSON.parse(res.stdout);
  } catch (cause) {
    throw new OvmError(
      `Credential helper "${program}"${from} answered for "${registry}" with output that is not JSON`,
      { cause, hint: 'a helper prints {"ServerURL","Username","Secret"} on stdout' },
    );
  }
  if (!doc.Secret) return undefined;
  if (doc.Username === "<token>") return { identityToken: doc.Secret };
  return { username: doc.Username, password: doc.Secret };
}
