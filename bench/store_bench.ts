/**
 * @module
 * Content-store ingest against plain copies of the same bytes: what hashing,
 * fsync and rename cost. Run: `deno task bench` (or `deno bench -A bench/store_bench.ts`).
 */
import { join } from "node:path";
import { ContentStore } from "../src/store/mod.ts";
import { digestFile } from "../src/manifest/mod.ts";

const SIZE = 64 << 20;
const dir = await Deno.makeTempDir({ prefix: "ovm-bench-store-" });
const src = join(dir, "src.bin");
{
  const buf = new Uint8Array(1 << 20);
  using f = await Deno.open(src, { write: true, create: true });
  for (let i = 0; i < SIZE / buf.length; i++) {
    crypto.getRandomValues(buf.subarray(0, 65536));
    await f.write(buf);
  }
}
const store = await ContentStore.open(join(dir, "home"));
let n = 0;

Deno.bench({
  name: "copyFile 64 MiB",
  group: "ingest",
  baseline: true,
  async fn() {
    await Deno.copyFile(src, join(dir, `copy-${n++}`));
  },
});

Deno.bench({
  name: "sha256 of 64 MiB (streaming)",
  group: "ingest",
  async fn() {
    await digestFile(src);
  },
});

Deno.bench({
  name: "store.importFile 64 MiB (hash + fsync + verify + rename)",
  group: "ingest",
  async fn() {
    const info = await store.importFile(src);
    // Remove so the next iteration ingests again instead of short-circuiting.
    await Deno.remove(store.blobPath(info.digest));
  },
});

globalThis.addEventListener("unload", () => {
  Deno.removeSync(dir, { recursive: true });
});
