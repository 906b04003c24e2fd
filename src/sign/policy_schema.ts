/**
 * @module
 * The zod schema of the admission policy file (`policy.json`), kept free of
 * other imports so `src/manifest/json_schema.ts` can publish it as
 * `schemas/policy.v1.json`.
 */
import { z } from "zod";

export const PolicyRuleSchema = z.strictObject({
  match: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).meta({
    description:
      "Repository glob(s), matched against `registry/repository` (local refs: the local " +
      "repository name). `*` matches within a path segment, `**` across segments.",
  }),
  keys: z.array(z.string().min(1)).default([]).meta({
    description:
      "Trusted public keys: PEM file paths (relative to the policy file) or inline PEM text.",
  }),
  requireSignature: z.boolean().default(true).meta({
    description: "Refuse the artifact unless a trusted key signed its digest.",
  }),
  requireSnapshotSignature: z.boolean().default(true).meta({
    description: "Refuse an artifact with a RAM snapshot unless a trusted key signed its digest " +
      "(applies even when requireSignature is false).",
  }),
});

export const PolicySchema = z.strictObject({
  $schema: z.string().optional(),
  version: z.literal(1),
  default: z.enum(["deny", "warn", "allow"]).default("deny").meta({
    description: "Decision for repositories that no rule matches.",
  }),
  rules: z.array(PolicyRuleSchema).default([]).meta({
    description: "Rules in order; the first whose `match` fits decides.",
  }),
}).superRefine((p, ctx) => {
  p.rules.forEach((r, i) => {
    if ((r.requireSignature || r.requireSnapshotSignature) && r.keys.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["rules", i, "keys"],
        message: "a rule that requires signatures must trust at least one key",
      });
    }
  });
});

export type PolicyDocument = z.infer<typeof PolicySchema>;
export type PolicyRule = z.infer<typeof PolicyRuleSchema>;
