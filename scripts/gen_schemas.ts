/**
 * @module
 * Regenerates `schemas/*.json` from the zod schemas (`deno task schemas`).
 */
import { jsonSchemas, renderSchema } from "../src/manifest/json_schema.ts";

const dir = new URL("../schemas/", import.meta.url);
await Deno.mkdir(dir, { recursive: true });
for (const [name, doc] of Object.entries(jsonSchemas())) {
  await Deno.writeTextFile(new URL(name, dir), renderSchema(doc));
  console.log(`wrote schemas/${name}`);
}
