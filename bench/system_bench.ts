/**
 * @module
 * System manager speed: `ensureSystem` when everything is present (the path
 * every `ovm run` takes), and an initrd build, against its peer
 * `cpio --reproducible | gzip -n` on the same tree.
 *
 *   deno bench -A bench/system_bench.ts
 */
import { join } from "node:path";
import { buildInitrd, DEFAULT_KERNEL, ensureSystem } from "../src/system/mod.ts";

const cache = Deno.env.get("OVM_TEST_CACHE") ?? "/tmp/ovm-test-cache";
const home = await Deno.makeTempDir({ prefix: "ovm-bench-system-" });
const set = await ensureSystem(home, { cacheDir: cache });

// The same tree on disk, for the peer.
const tree = join(home, "tree");
await Deno.mkdir(tree);
await new Deno.Command("sh", {
  args: ["-c", `cd ${tree} && gzip -dc ${set.initrd.path} | cpio -idm --quiet`],
}).output();

Deno.bench("ensureSystem, both images present", { group: "ensure", baseline: true }, async () => {
  await ensureSystem(home, { cacheDir: cache });
});

Deno.bench("initrd build (ovm: TS cpio + CompressionStream)", { group: "initrd" }, async () => {
  await buildInitrd(home, DEFAULT_KERNEL.version, { version: "bench", force: true });
});

Deno.bench("find | sort | cpio --reproducible | gzip -n (peer)", {
  group: "initrd",
  baseline: true,
}, async () => {
  await new Deno.Command("sh", {
    args: [
      "-c",
      `cd ${tree} && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet | gzip -n >/dev/null`,
    ],
  }).output();
});

globalThis.addEventListener("unload", () => {
  Deno.removeSync(home, { recursive: true });
});
