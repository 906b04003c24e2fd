/**
 * @module
 * `ovm inspect`: validates and prints an OVMS manifest — from the store (a
 * ref or digest), a manifest file, or an exported directory.
 */
import { join } from "node:path";
import { NotFoundError, ValidationError } from "../errors.ts";
import { parseManifest } from "../manifest/mod.ts";
import { loadArtifact } from "../store/mod.ts";
import { readFileBounded } from "../util/fs.ts";
import { formatBytes } from "../util/size.ts";
import type { Command } from "./command.ts";

async function statOrNull(p: string) {
  return await Deno.stat(p).catch(() => null);
}

export const inspectCommand: Command = {
  name: "inspect",
  summary: "Validate and show an OVMS manifest (local ref, digest, file or exported directory)",
  usage: "inspect <REF|FILE|DIR> [--json]",
  args: { min: 1, max: 1, names: "REF|FILE|DIR" },
  examples: ["ovm inspect demo/vm:1.0", "ovm inspect ./manifest.json --json"],
  async run(ctx, input) {
    const target = input.args[0];
    const st = target.includes("/") || target.endsWith(".json") || target.startsWith(".")
      ? await statOrNull(target)
      : null;
    if (st) {
      const file = st.isDirectory ? join(target, "manifest.json") : target;
      let bytes: Uint8Array;
      try {
        bytes = await readFileBounded(file, 4 << 20);
      } catch (e) {
        if (e instanceof RangeError) {
          throw new ValidationError(`${file} is over the limit of 4194304 bytes`, { cause: e });
        }
        throw new NotFoundError(`Cannot read "${file}"`, { cause: e });
      }
      const manifest = parseManifest(bytes, file);
      ctx.out.result({ source: file, valid: true, manifest });
      ctx.out.line(`${file}: valid OVMS manifest`);
      ctx.out.line(JSON.stringify(manifest, null, 2));
      return;
    }
    const store = await ctx.store();
    const a = await loadArtifact(store, target);
    const total = a.oci.layers.reduce((n, l) => n + l.size, 0);
    ctx.out.result({
      reference: target,
      digest: a.descriptor.digest,
      artifactType: a.oci.artifactType,
      subject: a.oci.subject,
      size: total,
      manifest: a.manifest,
      layers: a.oci.layers,
    });
    ctx.out.line(`Reference:  ${target}`);
    ctx.out.line(`Digest:     ${a.descriptor.digest}`);
    ctx.out.line(`Name:       ${a.manifest.name} ${a.manifest.version}`);
    if (a.oci.subject) ctx.out.line(`Subject:    ${a.oci.subject.digest}`);
    ctx.out.line(`Size:       ${formatBytes(total)} in ${a.oci.layers.length} blobs`);
    ctx.out.line("Layers:");
    for (const l of a.oci.layers) {
      const fmt = l.annotations?.["ovms.format"];
      ctx.out.line(
        `  ${l.digest}  ${formatBytes(l.size).padStart(10)}  ${l.mediaType}${
          fmt ? ` (${fmt})` : ""
        }`,
      );
    }
    ctx.out.line("Manifest:");
    ctx.out.line(JSON.stringify(a.manifest, null, 2));
  },
};
