/**
 * @module
 * JSON Schema documents generated from the zod schemas. `deno task schemas`
 * writes them to `schemas/`; a test fails when the files drift.
 */
import { z } from "zod";
import { BootstrapConfigSchema, ManifestSchema } from "./schema.ts";
import { PolicySchema } from "../sign/policy_schema.ts";
import { RestoreRecordSchema } from "../runtime/mod.ts";

const BASE = "https://ovms.dev/schemas";

/** File name → JSON Schema document, for every schema OVMS publishes. */
export function jsonSchemas(): Record<string, unknown> {
  const gen = (schema: z.ZodType, id: string) => ({
    ...z.toJSONSchema(schema, { io: "input", target: "draft-2020-12" }),
    $id: `${BASE}/${id}`,
  });
  return {
    "manifest.v1.json": gen(ManifestSchema, "manifest.v1.json"),
    "bootstrap.config.v1.json": gen(BootstrapConfigSchema, "bootstrap.config.v1.json"),
    "policy.v1.json": gen(PolicySchema, "policy.v1.json"),
    "restore-record.v1.json": gen(RestoreRecordSchema, "restore-record.v1.json"),
  };
}

export function renderSchema(doc: unknown): string {
  return JSON.stringify(doc, null, 2) + "\n";
}
