/**
 * @module
 * `ovm verify`: checks an artifact's signatures (both forms) against public
 * keys, by digest, and prints what was verified.
 */
import { ValidationError } from "../errors.ts";
import { loadPublicKey, verifyReference } from "../sign/mod.ts";
import { type Command, strs } from "./command.ts";
import { CONNECTION_OPTIONS, remoteOptions } from "./push.ts";

export const verifyCommand: Command = {
  name: "verify",
  summary: "Verify an artifact's signatures against public keys",
  usage: "verify --key PUB [--key PUB]... <REF> [options]",
  description:
    "Resolves the ref once, fetches the Sigstore bundle referrers and the cosign signatures at\n" +
    "sha256-<hex>.sig (at most 100 signatures, 128 MiB per attachment), and checks each\n" +
    "cryptographically and that what it signed is this digest (a signature for another digest\n" +
    "is refused as a replay). Exits 0 when at least one signature by a given key is valid.",
  args: { min: 1, max: 1, names: "REF" },
  options: {
    key: {
      type: "string",
      multiple: true,
      valueName: "PUB",
      help: "Trusted public key (PEM file)",
    },
    local: { type: "boolean", help: "Verify the artifact in the local store, not the registry" },
    ...CONNECTION_OPTIONS,
  },
  examples: ["ovm verify --key ovm.pub localhost:5000/vms/demo:1.0"],
  async run(ctx, input) {
    const paths = strs(input, "key");
    if (!paths.length) {
      throw new ValidationError(`--key is required`, { hint: "pass the signer's public key file" });
    }
    const keys = await Promise.all(paths.map((p) => loadPublicKey(p)));
    const { options } = remoteOptions(ctx, {
      ...input,
      options: { ...input.options, progress: "none" },
    });
    const res = await verifyReference(input.args[0], keys, {
      ...options,
      store: await ctx.store(),
      local: input.options.local === true,
    });
    ctx.out.result(res);
    ctx.out.line(`verified ${res.reference}`);
    for (const v of res.verified) {
      ctx.out.line(`  ${v.form}: key ${v.keyFingerprint} (${v.keySource}) in ${v.carrier}`);
    }
    for (const p of res.problems) ctx.out.warn(`ignored: ${p}`);
  },
};
