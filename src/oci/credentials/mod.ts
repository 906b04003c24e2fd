/**
 * @module
 * Registry credentials, looked up where the tools users already have keep
 * them, first match wins: `$OVM_HOME/auth.json` (written by `ovm login`, mode
 * 0600, docker's shape); the containers auth file (`--authfile`, else
 * `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json` and
 * `~/.config/containers/auth.json`, as podman and skopeo write it); then
 * docker's `config.json` (`$DOCKER_CONFIG` or `~/.docker`). In each file a
 * `credHelpers` entry for the registry wins, then an inline `auths` entry,
 * then the file's `credsStore` helper (helper.ts runs them).
 */
import { join } from "node:path";
import { ValidationError } from "../../errors.ts";
import { writeFileAtomic } from "../../util/fs.ts";
import type { Credential, CredentialProvider } from "../remote/mod.ts";
import { type AuthFile, helperFor, inlineCredential, readAuthFile } from "./auth_file.ts";
import { helperCredential } from "./helper.ts";

export * from "./auth_file.ts";
export * from "./helper.ts";

type Env = { get(key: string): string | undefined };

export function ovmAuthPath(home: string): string {
  return join(home, "auth.json");
}

export function dockerConfigPath(env: Env = Deno.env): string {
  const dir = env.get("DOCKER_CONFIG") ?? join(env.get("HOME") ?? "/root", ".docker");
  return join(dir, "config.json");
}

/** The containers auth files (containers-auth.json(5)) in effect, in lookup order. */
export function containersAuthPaths(env: Env = Deno.env, authFile?: string): string[] {
  const explicit = authFile ?? env.get("REGISTRY_AUTH_FILE");
  if (explicit) return [explicit];
  const out: string[] = [];
  const runtime = env.get("XDG_RUNTIME_DIR");
  if (runtime) out.push(join(runtime, "containers", "auth.json"));
  const config = env.get("XDG_CONFIG_HOME") ?? join(env.get("HOME") ?? "/root", ".config");
  out.push(join(config, "containers", "auth.json"));
  return out;
}

/** Every file credentials are looked up in, in order. */
export function credentialFiles(
  home: string,
  options: { env?: Env; authFile?: string } = {},
): string[] {
  const env = options.env ?? Deno.env;
  return [
    ovmAuthPath(home),
    ...containersAuthPaths(env, options.authFile),
    dockerConfigPath(env),
  ];
}

export interface FileCredentialOptions {
  /** Where `HOME`, `DOCKER_CONFIG`, `REGISTRY_AUTH_FILE`, `PATH` are read (default the process's). */
  env?: Env;
  /** A containers auth file to use instead of `$REGISTRY_AUTH_FILE` (`--authfile`). */
  authFile?: string;
  signal?: AbortSignal;
}

/**
 * Credentials from the files of {@linkcode credentialFiles}. Files are read
 * on every call (a login in between is seen); a helper's answer is kept for
 * the provider's lifetime, so one transfer runs each helper once per registry.
 */
export function fileCredentials(
  home: string,
  options: FileCredentialOptions = {},
): CredentialProvider {
  const helped = new Map<string, Promise<Credential | undefined>>();
  const ask = (name: string, registry: string, source: string) => {
    const key = `${name}\0${registry}`;
    let p = helped.get(key);
    if (!p) {
      p = helperCredential(name, registry, { env: options.env, signal: options.signal, source });
      helped.set(key, p);
    }
    return p;
  };
  return async (registry) => {
    for (const path of credentialFiles(home, options)) {
      const file: AuthFile | undefined = await readAuthFile(path);
      if (!file && path === options.authFile) {
        throw new ValidationError(`Auth file "${path}" (--authfile) does not exist`, {
          hint: "give the path of a containers auth.json (podman login --authfile writes one)",
        });
      }
      if (!file) continue;
      const helper = helperFor(file, registry);
      const found = (helper ? await ask(helper, registry, path) : undefined) ??
        inlineCredential(file, registry) ??
        (file.credsStore ? await ask(file.credsStore, registry, path) : undefined);
      if (found) return found;
    }
    return undefined;
  };
}

/** Stores credentials for a registry in `$OVM_HOME/auth.json` (0600). */
export async function saveCredential(
  home: string,
  registry: string,
  cred: { username: string; password: string },
): Promise<string> {
  const path = ovmAuthPath(home);
  const doc = (await readAuthFile(path)) ?? {};
  doc.auths ??= {};
  const bytes = new TextEncoder().encode(`${cred.username}:${cred.password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  doc.auths[registry] = { auth: btoa(bin) };
  await Deno.mkdir(home, { recursive: true });
  await writeFileAtomic(path, JSON.stringify(doc, null, 2) + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return path;
}

/** Removes a registry's credentials; true when there were some. */
export async function removeCredential(home: string, registry: string): Promise<boolean> {
  const path = ovmAuthPath(home);
  const doc = await readAuthFile(path);
  if (!doc?.auths?.[registry]) return false;
  delete doc.auths[registry];
  await writeFileAtomic(path, JSON.stringify(doc, null, 2) + "\n", { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return true;
}
