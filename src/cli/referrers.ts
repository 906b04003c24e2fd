/**
 * @module
 * `ovm referrers`: lists the artifacts (signatures, RAM snapshots, SBOMs)
 * whose `subject` is a given manifest — through the OCI 1.1 referrers API, or
 * the `sha256-<hex>` tag schema on registries without it.
 */
import { listReferrers, referrersCapabilityOf } from "../oci/mod.ts";
import { parseReference } from "../oci/reference.ts";
import { type Command, str } from "./command.ts";
import { CONNECTION_OPTIONS, remoteOptions } from "./push.ts";

export const referrersCommand: Command = {
  name: "referrers",
  summary: "List artifacts that refer to a manifest (signatures, snapshots)",
  usage: "referrers <REGISTRY/REPO[:TAG|@DIGEST]> [--artifact-type TYPE] [options]",
  args: { min: 1, max: 1, names: "REMOTE-REF" },
  options: {
    ...CONNECTION_OPTIONS,
    "artifact-type": {
      type: "string",
      valueName: "TYPE",
      help: "Only referrers of this artifact type",
    },
  },
  examples: ["ovm referrers localhost:5000/vms/demo:1.0"],
  async run(ctx, input) {
    const ref = input.args[0];
    const { options } = remoteOptions(ctx, {
      ...input,
      options: { ...input.options, progress: "none" },
    });
    const res = await listReferrers(ref, { ...options, artifactType: str(input, "artifact-type") });
    const registry = parseReference(ref).registry!;
    const via = referrersCapabilityOf(registry) === "supported" ? "referrers API" : "tag schema";
    ctx.out.result({ subject: res.subject, via, referrers: res.referrers });
    if (res.referrers.length === 0) {
      ctx.out.info(`no referrers of ${res.subject.digest} (${via})`);
      return;
    }
    ctx.out.table(
      ["DIGEST", "ARTIFACT TYPE", "SIZE"],
      res.referrers.map((d) => [d.digest, d.artifactType ?? "-", String(d.size)]),
    );
  },
};
