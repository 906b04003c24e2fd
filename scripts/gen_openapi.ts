/**
 * @module
 * Writes spec/api/ovms-runtime.openapi.yaml from the zod schemas
 * (`deno task openapi`; `--check` exits 1 when the file is out of date).
 */
import { openApiYaml } from "../src/api/openapi.ts";

const file = new URL("../spec/api/ovms-runtime.openapi.yaml", import.meta.url);
const text = openApiYaml();
if (Deno.args.includes("--check")) {
  const current = await Deno.readTextFile(file).catch(() => "");
  if (current !== text) {
    console.error(`${file.pathname} is out of date: run 'deno task openapi'`);
    Deno.exit(1);
  }
} else {
  await Deno.mkdir(new URL(".", file), { recursive: true });
  await Deno.writeTextFile(file, text);
  console.log(`wrote ${file.pathname}`);
}
