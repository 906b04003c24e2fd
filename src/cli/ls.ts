/**
 * @module
 * `ovm ls`: the artifacts in the local store.
 */
import { loadArtifact } from "../store/mod.ts";
import { formatBytes } from "../util/size.ts";
import type { Command } from "./command.ts";

export const lsCommand: Command = {
  name: "ls",
  summary: "List the artifacts in the local store",
  usage: "ls [--json]",
  async run(ctx) {
    const store = await ctx.store();
    const rows = [];
    for (const r of await store.listRefs()) {
      let size = 0;
      let kind = r.descriptor.artifactType ?? r.descriptor.mediaType;
      let created: string | undefined;
      try {
        const a = await loadArtifact(store, r.descriptor.digest);
        size = a.oci.layers.reduce((n, l) => n + l.size, 0);
        kind = a.manifest.ramSnapshot ? "vm+snapshot" : "vm";
        created = a.manifest.metadata?.created;
      } catch {
        // Not an OVMS artifact (a container image kept for convert, a signature): list it anyway.
      }
      rows.push({ ref: r.name, digest: r.descriptor.digest, kind, size, created });
    }
    ctx.out.result(rows);
    ctx.out.table(
      ["REF", "DIGEST", "KIND", "SIZE", "CREATED"],
      rows.map((r) => [r.ref, r.digest.slice(7, 19), r.kind, formatBytes(r.size), r.created ?? ""]),
    );
  },
};
