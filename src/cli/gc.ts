/**
 * @module
 * `ovm gc`: removes blobs that no ref and no instance needs.
 */
import { join } from "node:path";
import { type Digest, isDigest } from "../manifest/mod.ts";
import { getInstance, isActive, pruneTemplates } from "../runtime/mod.ts";
import { netPaths, pruneNetworks } from "../net/mod.ts";
import { exists } from "../util/fs.ts";
import { formatBytes } from "../util/size.ts";
import { bool, type Command } from "./command.ts";

/**
 * Manifest digests that instances under `$OVM_HOME/instances/` still use.
 * Each instance's `state.json` names its artifact in `manifestDigest`.
 */
export async function instanceRoots(instancesDir: string): Promise<Digest[]> {
  const out: Digest[] = [];
  try {
    for await (const e of Deno.readDir(instancesDir)) {
      if (!e.isDirectory) continue;
      try {
        const s = JSON.parse(await Deno.readTextFile(join(instancesDir, e.name, "state.json")));
        if (isDigest(s.manifestDigest)) out.push(s.manifestDigest);
      } catch {
        // An instance without readable state holds nothing.
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

/** Whether an instance exists and its VM is running (reattaching to it first). */
export async function instanceRunning(home: string, id: string): Promise<boolean> {
  try {
    return isActive(await getInstance(home, id));
  } catch {
    return false;
  }
}

export const gcCommand: Command = {
  usesRuntimes: true,
  name: "gc",
  summary: "Remove blobs that no ref and no instance needs, and stale partial downloads",
  usage: "gc [--dry-run] [--json]",
  options: { "dry-run": { type: "boolean", help: "Only list what would be removed" } },
  async run(ctx, input) {
    const store = await ctx.store();
    const roots = await instanceRoots(store.paths.instances);
    const res = await store.gc({ roots, dryRun: bool(input, "dry-run") });
    // Decoded RAM snapshots in /dev/shm are memory: drop those of snapshots gone from the store.
    const templates = await pruneTemplates(store, { dryRun: bool(input, "dry-run") });
    // What crashed instances left on the host's networks (never networks themselves).
    const network = bool(input, "dry-run") || !(await exists(netPaths(ctx.home).state))
      ? undefined
      : await pruneNetworks(ctx.home, { isRunning: (id) => instanceRunning(ctx.home, id) });
    ctx.out.result({ ...res, templates, ...(network ? { network } : {}) });
    if (network) {
      for (const l of network.leases) {
        ctx.out.info(`released ${l.address} on ${l.network} (instance ${l.instance})`);
      }
      for (const l of network.links) ctx.out.info(`removed device ${l}`);
      for (const t of network.tables) ctx.out.info(`removed nft table ${t}`);
    }
    const verb = bool(input, "dry-run") ? "would remove" : "removed";
    for (const b of res.removed) ctx.out.info(`${verb} ${b.digest} (${formatBytes(b.size)})`);
    ctx.out.line(
      `${verb} ${res.removed.length} blob(s), ${formatBytes(res.freedBytes)}; ` +
        (res.attachmentsDropped
          ? `${res.attachmentsDropped} attachment(s) of removed artifacts; `
          : "") +
        `${res.ingestRemoved} partial ingest(s); ${templates.removed.length} decoded snapshot ` +
        `template(s), ${formatBytes(templates.freedBytes)} of RAM`,
    );
  },
};
