/**
 * @module
 * Auth files in the shape docker's `config.json` and containers-auth.json(5)
 * share: `auths` keyed by registry (`auth` = base64 `user:password`, or
 * `username`/`password`, `identitytoken`), `credHelpers` naming a
 * credential helper per registry, and `credsStore` naming one for all.
 */
import { ValidationError } from "../../errors.ts";
import { exists } from "../../util/fs.ts";
import type { Credential } from "../remote/mod.ts";

export interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

export interface AuthFile {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [k: string]: unknown;
}

/** Reads an auth file; undefined when it does not exist. */
export async function readAuthFile(path: string): Promise<AuthFile | undefined> {
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

/** Docker Hub's many names, as one. */
export function canonicalRegistry(registry: string): string {
  return registry === "registry-1.docker.io" || registry === "index.docker.io"
    ? "docker.io"
    : registry;
}

/** The spellings of a registry an auth file may use as a key: `host`, `https://host`, ... */
export function registryKeys(registry: string): string[] {
  const r = canonicalRegistry(registry);
  const keys = [r, `https://${r}`, `http://${r}`, `https://${r}/v1/`, `https://${r}/v2/`];
  if (r === "docker.io") keys.push("https://index.docker.io/v1/", "index.docker.io");
  return keys;
}

/** The inline credential an auth file holds for `registry`. */
export function inlineCredential(file: AuthFile, registry: string): Credential | undefined {
  const auths = file.auths ?? {};
  for (const k of registryKeys(registry)) {
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
    if (e.identitytoken) return { identityToken: e.identitytoken };
  }
  return undefined;
}

/** The credential helper an auth file names for `registry` (`credHelpers`), if any. */
export function helperFor(file: AuthFile, registry: string): string | undefined {
  const helpers = file.credHelpers ?? {};
  for (const k of registryKeys(registry)) if (helpers[k]) return helpers[k];
  return undefined;
}
