/**
 * Runtime selection from `runtimeHints.preferredRuntime`.
 */
import assert from "node:assert/strict";
import { manifestFromValue, MediaTypes } from "../../src/manifest/mod.ts";
import { selectAdapter } from "../../src/runtime/mod.ts";

function manifest(preferred: string[]) {
  return manifestFromValue({
    schemaVersion: 1,
    mediaType: MediaTypes.manifest,
    name: "m",
    version: "1",
    kernel: { ref: `sha256:${"a".repeat(64)}` },
    runtimeHints: { preferredRuntime: preferred },
  });
}

Deno.test("the first installed preferred runtime is chosen, with a warning for each one skipped", async () => {
  const warnings: string[] = [];
  const a = await selectAdapter(manifest(["firecracker", "qemu"]), {
    warn: (m) => warnings.push(m),
  });
  assert.equal(a.name, "qemu");
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /preferred runtime "firecracker"/);
});

Deno.test("without hints the first installed adapter runs; --runtime must name a known one", async () => {
  assert.equal((await selectAdapter(manifest([]))).name, "qemu");
  assert.equal((await selectAdapter(manifest(["x"]), { requested: "qemu" })).name, "qemu");
  await assert.rejects(
    selectAdapter(manifest([]), { requested: "vmware" }),
    /Unknown runtime "vmware"/,
  );
});
