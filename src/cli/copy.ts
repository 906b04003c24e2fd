/**
 * @module
 * `ovm copy`: copies an artifact (or a whole index) from one registry
 * repository to another with the same engine as push and pull; blobs are
 * mounted across repositories of one registry instead of copied.
 */
import { type Digest, MediaTypes } from "../manifest/mod.ts";
import { copyBetween, copyReferrersBetween, openRepository } from "../oci/mod.ts";
import { copySignatures, RemoteSignatureSource, SignMediaTypes } from "../sign/mod.ts";
import { formatBytes } from "../util/size.ts";
import type { Command } from "./command.ts";
import { REMOTE_OPTIONS, remoteOptions } from "./push.ts";

export const copyCommand: Command = {
  name: "copy",
  summary: "Copy an artifact from one registry repository to another",
  usage: "copy <SRC-REF> <DST-REF> [options]",
  args: { min: 2, max: 2, names: "SRC-REF DST-REF" },
  options: {
    ...REMOTE_OPTIONS,
    "no-signatures": {
      type: "boolean",
      help: "Do not copy the artifact's signatures (by default they follow the digest)",
    },
    "no-referrers": {
      type: "boolean",
      help: "Do not copy its other referrers (SBOMs, attestations; copied by default)",
    },
  },
  examples: ["ovm copy localhost:5000/vms/demo:1.0 localhost:5001/mirror/demo:1.0"],
  async run(ctx, input) {
    const [src, dst] = input.args;
    const { options, progress } = remoteOptions(ctx, input);
    let res;
    try {
      res = await copyBetween(src, dst, options);
    } finally {
      progress.finish();
    }
    // Signatures are attached to the digest, so they stay valid in the new repository.
    const signatures = input.options["no-signatures"] ? 0 : await copySignatures(
      new RemoteSignatureSource(openRepository(src, options)),
      new RemoteSignatureSource(openRepository(dst, options)),
      res.descriptor.digest as Digest,
      { signal: ctx.signal },
    );
    // Other referrers (an SBOM attached by `oras attach`, attestations, and
    // theirs) follow too, as with `oras copy -r`. OVMS artifacts pointing at
    // this one (snapshots of it) are artifacts of their own: copy them by name.
    const referrers = input.options["no-referrers"] ? [] : await copyReferrersBetween(
      src,
      dst,
      res.descriptor.digest as Digest,
      {
        ...options,
        accept: (m) =>
          m.artifactType !== SignMediaTypes.bundle &&
          m.artifactType !== MediaTypes.manifest && m.config?.mediaType !== MediaTypes.manifest,
      },
    );
    ctx.out.result({
      source: src,
      destination: dst,
      digest: res.descriptor.digest,
      mediaType: res.descriptor.mediaType,
      blobs: res.blobs,
      bytes: res.bytes,
      transferred: res.transferred,
      signatures,
      referrers: referrers.map((d) => d.digest),
    });
    ctx.out.line(
      `copied ${src} to ${dst} ${res.descriptor.digest} (${res.blobs} blobs, ${
        formatBytes(res.transferred)
      } transferred${signatures ? `, ${signatures} signature(s)` : ""}${
        referrers.length ? `, ${referrers.length} other referrer(s)` : ""
      })`,
    );
  },
};
