/**
 * @module
 * `ovm export`: writes an artifact in the spec's download layout —
 * `manifest.json` (the OVMS manifest), `blobs/sha256-<hex>`, and
 * `metadata/oci-manifest.json` (the exact OCI manifest bytes, so that
 * `ovm push DIR` republishes the same digest).
 */
import { exportArtifact } from "../runtime/mod.ts";
import { formatBytes } from "../util/size.ts";
import type { Command } from "./command.ts";

export const exportCommand: Command = {
  name: "export",
  summary: "Write an artifact to a directory in the OVMS download layout",
  usage: "export <REF> <DIR>",
  args: { min: 2, max: 2, names: "REF DIR" },
  async run(ctx, input) {
    const store = await ctx.store();
    const res = await exportArtifact(store, input.args[0], input.args[1], { signal: ctx.signal });
    ctx.out.result(res);
    ctx.out.line(
      `exported ${res.digest} to ${res.dir} (${res.blobs} blobs, ${formatBytes(res.bytes)})`,
    );
  },
};
