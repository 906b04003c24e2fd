/**
 * @module
 * `ovm policy check`: explains what the admission policy decides for a ref
 * (the digest, the rule that matched, the signatures found).
 */
import { checkAdmission, loadPolicy, policyPath } from "../sign/mod.ts";
import { type Command, type OptionSpec, str } from "./command.ts";
import { CONNECTION_OPTIONS, remoteOptions } from "./push.ts";
import { ValidationError } from "../errors.ts";
import { parseReference } from "../oci/mod.ts";

/** `--policy FILE`, shared by the verbs that enforce the admission policy (pull, run). */
export const POLICY_OPTION: OptionSpec = {
  type: "string",
  valueName: "FILE",
  help: "Admission policy file (default $OVM_HOME/policy.json when it exists)",
};

const checkCommand: Command = {
  name: "check",
  summary: "Explain the policy's decision for a ref",
  usage: "policy check <REF> [--policy FILE] [--for pull|run] [options]",
  description:
    "Resolves the ref once and prints the decision (allow, warn, deny), the digest, the rule\n" +
    "that matched and why. --for pull checks the registry (what `ovm pull` enforces); --for run\n" +
    "checks the local store (what `ovm run` enforces). Exit 0 on allow and warn, 1 on deny.",
  args: { min: 1, max: 1, names: "REF" },
  options: {
    policy: {
      type: "string",
      valueName: "FILE",
      help: "Policy file (default $OVM_HOME/policy.json)",
    },
    for: { type: "string", valueName: "KIND", help: "pull (registry) or run (local store)" },
    ...CONNECTION_OPTIONS,
  },
  examples: [
    "ovm policy check localhost:5000/vms/demo:1.0",
    "ovm policy check --for run demo/vm:1.0",
  ],
  async run(ctx, input) {
    const ref = input.args[0];
    const file = str(input, "policy") ?? policyPath(ctx.home);
    const policy = await loadPolicy(file);
    const kindFlag = str(input, "for");
    if (kindFlag !== undefined && kindFlag !== "pull" && kindFlag !== "run") {
      throw new ValidationError(`--for "${kindFlag}" must be pull or run`);
    }
    // Without --for: a ref naming a registry host is what a pull would see.
    const kind = kindFlag ??
      (parseReference(ref, { allowNoRegistry: true }).registry ? "pull" : "run");
    const { options } = remoteOptions(ctx, {
      ...input,
      options: { ...input.options, progress: "none" },
    });
    const res = await checkAdmission(ref, {
      ...options,
      policy: policy!,
      kind: kind as "pull" | "run",
      store: await ctx.store(),
    });
    ctx.out.result({
      reference: ref,
      decision: res.decision,
      digest: res.digest,
      repository: res.repository,
      rule: res.rule,
      snapshot: res.snapshot,
      reasons: res.reasons,
      verified: res.verification?.verified ?? [],
      policy: file,
      checked: kind === "pull" ? "registry" : "local store",
    });
    ctx.out.line(`${res.decision}: ${ref}`);
    ctx.out.line(`  digest      ${res.digest}`);
    ctx.out.line(`  repository  ${res.repository}`);
    ctx.out.line(`  rule        ${res.rule < 0 ? "none (default)" : res.rule}`);
    ctx.out.line(`  snapshot    ${res.snapshot ? "yes" : "no"}`);
    for (const r of res.reasons) ctx.out.line(`  - ${r}`);
    return res.decision === "deny" ? 1 : 0;
  },
};

export const policyCommand: Command = {
  name: "policy",
  summary: "Inspect the admission policy (which artifacts may be pulled and run)",
  usage: "policy <command>",
  subcommands: [checkCommand],
};
