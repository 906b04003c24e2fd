/**
 * @module
 * Compiles the vendored containerd/ttrpc .proto files (spec/vendor/containerd/)
 * into the protobufjs JSON descriptor the shim loads at run time
 * (src/shim/proto/descriptors.json). `--check` fails when the file is stale.
 */
import { fileURLToPath } from "node:url";
import { compileShimProtos } from "../src/shim/proto/compile.ts";

const out = fileURLToPath(new URL("../src/shim/proto/descriptors.json", import.meta.url));
const text = JSON.stringify(compileShimProtos(), null, 1) + "\n";
if (Deno.args.includes("--check")) {
  const current = await Deno.readTextFile(out).catch(() => "");
  if (current !== text) {
    console.error(`${out} is stale: run 'deno task shim-proto'`);
    Deno.exit(1);
  }
} else {
  await Deno.writeTextFile(out, text);
  console.log(`wrote ${out}`);
}
