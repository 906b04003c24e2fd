import assert from "node:assert/strict";
import { join } from "node:path";
import { ConflictError } from "../../src/errors.ts";
import type { Manifest } from "../../src/manifest/mod.ts";
import { ContentStore, writeArtifact } from "../../src/store/mod.ts";
import {
  addKernel,
  assertSnapshotSystem,
  buildInitrd,
  loadSystem,
  systemAnnotations,
  systemRecord,
} from "../../src/system/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";

async function fakeSystem(home: string, dir: string, version: string) {
  const file = join(dir, `vmlinux-${version}`);
  await Deno.writeFile(file, crypto.getRandomValues(new Uint8Array(16384)));
  await addKernel(home, file, { version });
  const initrd = await buildInitrd(home, version);
  return await loadSystem(home, { kernel: version, initrd: initrd.version });
}

Deno.test("a snapshot restored with another kernel or initrd is refused, naming both versions", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const a = await fakeSystem(home, tmp.path, "1.0-a");
  const b = await fakeSystem(home, tmp.path, "1.0-b");
  assertSnapshotSystem(systemRecord(a), a);
  assert.throws(
    () => assertSnapshotSystem(systemRecord(a), b),
    (e) =>
      e instanceof ConflictError && e.message.includes('kernel "1.0-a"') &&
      e.message.includes('"1.0-b"') && e.message.includes("initrd"),
  );
});

Deno.test("ovm system rm refuses a version a stored RAM snapshot was taken with", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const set = await fakeSystem(home, tmp.path, "1.0-snap");
  const store = await ContentStore.open(home);
  const kernel = await store.writeBlob(crypto.getRandomValues(new Uint8Array(1024)));
  const ram = await store.writeBlob(crypto.getRandomValues(new Uint8Array(1024)));
  const manifest = {
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.manifest.v1+json",
    name: "test/snap",
    version: "1",
    kernel: { ref: kernel.digest },
    diskLayers: [],
    devices: [],
    ramSnapshot: {
      ref: ram.digest,
      compression: "lz4",
      preload_hint: false,
      mlock_required: false,
    },
    annotations: systemAnnotations(set),
  } as unknown as Manifest;
  await store.tag("test/snap:1", await writeArtifact(store, manifest));
  const r = await ovm(home, "system", "rm", set.initrd.version);
  assertExit(r, 1);
  assert.match(r.stderr, /stored snapshot "test\/snap:1"/);
});
