/**
 * A child process that writes to a store, for the crash and concurrency tests.
 * Usage: writer.ts <home> slow <key>          — ingests forever, slowly (killed by the test)
 *        writer.ts <home> blob <seed> <tag>   — writes a 4 MiB blob from seed, tags a manifest for it
 */
import { ContentStore } from "../../../src/store/mod.ts";
import { canonicalJson, MediaTypes } from "../../../src/manifest/mod.ts";

const [home, mode, arg, tag] = Deno.args;
const store = await ContentStore.open(home);

if (mode === "slow") {
  const w = await store.openIngest({ key: arg });
  const chunk = new Uint8Array(64 * 1024).fill(7);
  await w.write(chunk);
  console.log("started");
  while (true) {
    await w.write(chunk);
    await new Promise((r) => setTimeout(r, 5));
  }
} else if (mode === "blob") {
  const data = new Uint8Array(4 << 20);
  for (let i = 0; i < data.length; i += 4096) data[i] = Number(arg) & 0xff;
  await store.lease(async () => {
    const blob = await store.ingest(
      (async function* () {
        for (let off = 0; off < data.length; off += 65536) {
          yield data.subarray(off, off + 65536);
          await new Promise((r) => setTimeout(r, 1));
        }
      })(),
      { expectedSize: data.length },
    );
    const config = await store.writeBlob(canonicalJson({ note: "writer" }));
    const manifest = await store.writeBlob(canonicalJson({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociEmpty, digest: config.digest, size: config.size },
      layers: [{ mediaType: "application/octet-stream", digest: blob.digest, size: blob.size }],
    }));
    await store.tag(tag, { mediaType: MediaTypes.ociManifest, ...manifest });
  });
  console.log("done");
}
