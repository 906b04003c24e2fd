/**
 * @module
 * Where ovm keeps its state. `$OVM_HOME` wins; otherwise the XDG data
 * directory (`$XDG_DATA_HOME/ovm`, or `~/.local/share/ovm`).
 */
import { join } from "node:path";

export function defaultHome(env: { get(k: string): string | undefined } = Deno.env): string {
  const explicit = env.get("OVM_HOME");
  if (explicit) return explicit;
  const xdg = env.get("XDG_DATA_HOME");
  if (xdg) return join(xdg, "ovm");
  const home = env.get("HOME") ?? "/root";
  return join(home, ".local", "share", "ovm");
}

/** The fixed layout below `$OVM_HOME`. */
export function homePaths(home: string) {
  return {
    home,
    /** The OCI image layout (skopeo: `oci:<store>:<name:tag>`). */
    store: join(home, "store"),
    /** Partial blobs; same filesystem as the store so rename is atomic. */
    ingest: join(home, "ingest"),
    /** Shared by writers, exclusive for gc. */
    storeLock: join(home, "store.lock"),
    instances: join(home, "instances"),
    system: join(home, "system"),
    runtimes: join(home, "runtimes"),
    cache: join(home, "cache"),
    policy: join(home, "policy.json"),
    auth: join(home, "auth.json"),
  };
}
export type HomePaths = ReturnType<typeof homePaths>;
