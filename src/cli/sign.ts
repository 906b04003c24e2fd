/**
 * @module
 * `ovm sign`: signs an artifact by digest with a private key, writing both a
 * Sigstore bundle referrer and a legacy cosign signature (`sha256-<hex>.sig`).
 * Also home of the key-loading flags `verify` and `policy` share.
 */
import { ValidationError } from "../errors.ts";
import { loadSigningKey, type SigningKey, signReference } from "../sign/mod.ts";
import { type CliContext, type Command, type ParsedInput, str, strs } from "./command.ts";
import { CONNECTION_OPTIONS, remoteOptions } from "./push.ts";

/** Reads the private key named by --key, with the passphrase from --passphrase-env or COSIGN_PASSWORD. */
export async function signingKeyFromFlags(
  ctx: CliContext,
  input: ParsedInput,
): Promise<SigningKey> {
  const path = str(input, "key");
  if (!path) throw new ValidationError(`--key is required`, { hint: "pass the private key file" });
  const envName = str(input, "passphrase-env");
  let passphrase: string | undefined;
  if (envName !== undefined) {
    passphrase = ctx.env.get(envName);
    if (passphrase === undefined) {
      throw new ValidationError(`Environment variable "${envName}" is not set`);
    }
  } else {
    passphrase = ctx.env.get("COSIGN_PASSWORD");
  }
  return await loadSigningKey(path, { passphrase });
}

function parseAnnotations(values: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    if (eq <= 0) throw new ValidationError(`-a "${v}": expected KEY=VALUE`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

export const signCommand: Command = {
  name: "sign",
  summary: "Sign an artifact by digest (Sigstore bundle + cosign signature)",
  usage: "sign --key KEY <REF> [-a KEY=VALUE]... [options]",
  description:
    "A tag is resolved first and the digest it names is signed (and printed). Two forms are\n" +
    "written, both readable by `cosign verify --key`: a Sigstore bundle v0.3 (a DSSE in-toto\n" +
    "statement of the digest, as cosign 3 writes it) attached as an OCI 1.1 referrer (subject =\n" +
    "the manifest; the sha256-<hex> tag index on registries without the referrers API), and\n" +
    "cosign's legacy simple-signing signature at tag sha256-<hex>.sig. A ref with a registry\n" +
    "host is signed in the registry; any other ref (or --local) in the local store (see\n" +
    "docs/signing.md for how local signatures reach a registry).\n" +
    "Encrypted keys read their passphrase from COSIGN_PASSWORD or --passphrase-env VAR.",
  args: { min: 1, max: 1, names: "REF" },
  options: {
    key: { type: "string", valueName: "FILE", help: "Private key (ovm keygen or cosign)" },
    "passphrase-env": {
      type: "string",
      valueName: "VAR",
      help: "Environment variable holding the key's passphrase (default COSIGN_PASSWORD)",
    },
    annotation: {
      type: "string",
      short: "a",
      multiple: true,
      valueName: "KEY=VALUE",
      help: "Extra claim (payload's optional section, statement subject annotations)",
    },
    local: { type: "boolean", help: "Sign the artifact in the local store, not the registry" },
    ...CONNECTION_OPTIONS,
  },
  examples: [
    "ovm sign --key ovm.key localhost:5000/vms/demo:1.0",
    "COSIGN_PASSWORD=... ovm sign --key cosign.key demo/vm:1.0",
  ],
  async run(ctx, input) {
    const key = await signingKeyFromFlags(ctx, input);
    const { options } = remoteOptions(ctx, {
      ...input,
      options: { ...input.options, progress: "none" },
    });
    const res = await signReference(input.args[0], key, {
      ...options,
      store: await ctx.store(),
      local: input.options.local === true,
      annotations: parseAnnotations(strs(input, "annotation")),
    });
    ctx.out.result(res);
    ctx.out.line(`signed ${res.reference}`);
    ctx.out.line(`  key ${res.keyFingerprint}`);
    for (const f of res.forms) {
      ctx.out.line(
        `  ${f.form}: ${f.carrier === "existing" ? "already signed by this key" : f.carrier}`,
      );
    }
  },
};
