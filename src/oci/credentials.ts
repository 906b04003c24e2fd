/**
 * @module
 * Registry credentials: `$OVM_HOME/auth.json` (written by `ovm login`, mode
 * 0600, Docker's `config.json` shape so the file is familiar), then Docker's
 * own `config.json` (`$DOCKER_CONFIG` or `~/.docker`) as a read-only fallback.
 * Credential helpers (`credsStore`, `credHelpers`) are not run.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import { exists, writeFileAtomic } from "../util/fs.ts";
import type { Credential, CredentialProvider } from "./remote/mod.ts";

interface AuthFile {
  auths?: Record<
    string,
    { auth?: string; username?: string; password?: string; identitytoken?: string }
  >;
  [k: string]: unknown;
}

type Env = { get(key: string): string | undefined };

async function readAuthFile(path: string): Promise<AuthFile | undefined> {
  if (!(await exists(path))) return undefined;
  const text = await Deno.readTextFile(path);
  try {
    const doc = JSON.parse(text);
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
      throw new Error("not an object");
    }
    return doc as AuthFile;
  } catch (cause) {
    throw new ValidationError(`Credentials file "${path}" is not valid JSON`, {
      cause,
      hint: "fix or remove the file, then run `ovm login` again",
    });
  }
}

/** Docker's spellings of a host: `host`, `https://host`, `https://host/v1/`. */
function lookup(file: AuthFile | undefined, registry: string): Credential | undefined {
  const auths = file?.auths ?? {};
  if (registry === "registry-1.docker.io" || registry === "index.docker.io") registry = "docker.io";
  const keys = [registry, `https://${registry}`, `http://${registry}`, `https://${registry}/v1/`];
  if (registry === "docker.io") keys.push("https://index.docker.io/v1/", "index.docker.io");
  for (const k of keys) {
    const e = auths[k];
    if (!e) continue;
    if (e.auth) {
      const decoded = new TextDecoder().decode(
        Uint8Array.from(atob(e.auth), (c) => c.charCodeAt(0)),
      );
      const colon = decoded.indexOf(":");
      if (colon > 0) {
        return {
          username: decoded.slice(0, colon),
          password: decoded.slice(colon + 1),
          identityToken: e.identitytoken,
        };
      }
    }
    if (e.username) {
      return { username: e.username, password: e.password, identityToken: e.identitytoken };
    }
  }
  return undefined;
}

export function ovmAuthPath(home: string): string {
  return join(home, "auth.json");
}

export function dockerConfigPath(env: Env = Deno.env): string {
  const dir = env.get("DOCKER_CONFIG") ?? join(env.get("HOME") ?? "/root", ".docker");
  return join(dir, "config.json");
}

/** Credentials from ovm's file first, then Docker's. */
export function fileCredentials(home: string, options: { env?: Env } = {}): CredentialProvider {
  return async (registry) =>
    lookup(await readAuthFile(ovmAuthPath(home)), registry) ??
      lookup(await readAuthFile(dockerConfigPath(options.env)), registry);
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
