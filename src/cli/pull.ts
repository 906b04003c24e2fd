/**
 * @module
 * `ovm pull`: fetches an artifact from a registry into the local store and
 * records it as `registry/repo:tag`. Interrupted pulls resume.
 */
import { LAYOUT_PREFIX, pullToStore } from "../oci/mod.ts";
import { formatBytes } from "../util/size.ts";
import { bool, type Command, str } from "./command.ts";
import { REMOTE_OPTIONS, remoteOptions } from "./push.ts";
import { enforcePolicy } from "../sign/mod.ts";
import { POLICY_OPTION } from "./policy.ts";

export const pullCommand: Command = {
  name: "pull",
  summary: "Fetch an artifact from a registry into the local store",
  usage: "pull <REGISTRY/REPO[:TAG|@DIGEST] | oci:DIR[:REF]> [options]",
  description:
    "The tag is resolved once; blobs are verified as they stream and an interrupted pull\n" +
    "resumes where it stopped. A multi-platform index yields the linux/amd64 manifest.\n" +
    "Only OVMS artifacts are accepted unless --any is given (container images for `ovm convert`).\n" +
    "oci:DIR[:REF] imports from an OCI image layout on disk (written by oras, skopeo, umoci):\n" +
    "REF is a ref name in its index.json or sha256:<hex>, optional when the layout holds one\n" +
    "manifest; every blob is digest-checked; the local ref is REF when it reads NAME:TAG, else\n" +
    "<directory name>:REF (or -t). The admission policy applies to registries, not to layouts.",
  args: { min: 1, max: 1, names: "REMOTE-REF" },
  options: {
    ...REMOTE_OPTIONS,
    any: { type: "boolean", help: "Accept any OCI image, not only OVMS artifacts" },
    tag: {
      type: "string",
      short: "t",
      valueName: "NAME:TAG",
      help: "Local reference to record (default: the remote reference)",
    },
    policy: POLICY_OPTION,
  },
  examples: [
    "ovm pull localhost:5000/vms/demo:1.0",
    "ovm pull --any localhost:5000/library/alpine:3.19",
    "ovm pull oci:./layout:1.0 -t demo/vm:1.0",
  ],
  async run(ctx, input) {
    const ref = input.args[0];
    const { options, progress } = remoteOptions(ctx, input);
    const store = await ctx.store();
    // Admission policy (src/sign): checked in the registry before anything is
    // fetched; the digest it checked is what gets pulled.
    const admitted = ref.startsWith(LAYOUT_PREFIX) ? undefined : await enforcePolicy(ref, {
      ...options,
      kind: "pull",
      home: ctx.home,
      policyFile: str(input, "policy"),
      warn: (m) => ctx.out.warn(m),
    });
    let res;
    try {
      res = await pullToStore(store, admitted?.pinned ?? ref, {
        ...options,
        any: bool(input, "any"),
        localRef: str(input, "tag") ?? admitted?.localRef,
      });
      await admitted?.keep(store);
    } finally {
      progress.finish();
    }
    ctx.out.result({
      reference: res.reference,
      localRef: res.localRef ?? null,
      digest: res.descriptor.digest,
      resolved: res.resolved.digest,
      mediaType: res.descriptor.mediaType,
      ovms: res.ovms,
      blobs: res.blobs,
      bytes: res.bytes,
      transferred: res.transferred,
      ...(res.referrers !== undefined ? { referrers: res.referrers } : {}),
    });
    ctx.out.line(
      `pulled ${res.localRef ?? res.reference} ${res.descriptor.digest} (${res.blobs} blobs, ${
        formatBytes(res.transferred)
      } downloaded)`,
    );
  },
};
