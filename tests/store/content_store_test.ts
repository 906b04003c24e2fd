import assert from "node:assert/strict";
import { join } from "node:path";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { canonicalJson, digestOf, MediaTypes, sha256Hex } from "../../src/manifest/mod.ts";
import { DigestMismatchError, NotFoundError, ValidationError } from "../../src/errors.ts";
import { listFiles, tempDir } from "../_helpers/cli.ts";
import { pack } from "../../src/cli/pack.ts";

const writer = new URL("./testdata/writer.ts", import.meta.url).pathname;

/** Every blob in the store hashes to its name. */
async function assertBlobsIntact(store: ContentStore): Promise<number> {
  const dir = join(store.root, "blobs", "sha256");
  let n = 0;
  for await (const e of Deno.readDir(dir)) {
    assert.equal(sha256Hex(await Deno.readFile(join(dir, e.name))), e.name, `blob ${e.name}`);
    n++;
  }
  return n;
}

async function assertRefsComplete(store: ContentStore): Promise<void> {
  for (const r of await store.listRefs()) await store.assertComplete(r.descriptor);
}

Deno.test("a blob is verified, read-only and content-addressed", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const data = new TextEncoder().encode("hello ovm");
  const info = await store.writeBlob(data);
  assert.equal(info.digest, digestOf(data));
  const st = await Deno.stat(store.blobPath(info.digest));
  assert.equal(st.mode! & 0o777, 0o444);
  assert.deepEqual(await store.readBlob(info.digest), data);
  assert.deepEqual(await listFiles(store.paths.ingest), []);
});

Deno.test("an ingest whose digest does not match leaves nothing behind", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  await assert.rejects(
    store.ingest([new Uint8Array([1, 2, 3])], { expectedDigest: digestOf("other") }),
    DigestMismatchError,
  );
  await assert.rejects(
    store.ingest([new Uint8Array([1, 2, 3])], { expectedSize: 2 }),
    /longer than its declared size of 2 bytes/,
  );
  await assert.rejects(
    store.ingest([new Uint8Array([1, 2, 3])], { expectedSize: 4 }),
    /is 3 bytes, expected 4/,
  );
  assert.deepEqual(await listFiles(join(store.root, "blobs")), []);
  assert.deepEqual(await listFiles(store.paths.ingest), []);
});

Deno.test("bad digests never become paths", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  for (const d of ["sha256:../../etc/passwd", "sha256:", "../x", `sha512:${"a".repeat(128)}`]) {
    assert.throws(() => store.blobPath(d), ValidationError);
    await assert.rejects(store.has(d), ValidationError);
  }
});

Deno.test("a tampered blob is detected on read", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const info = await store.writeBlob(new TextEncoder().encode("original"));
  const p = store.blobPath(info.digest);
  await Deno.chmod(p, 0o644);
  await Deno.writeTextFile(p, "tampered");
  await assert.rejects(store.readBlob(info.digest), DigestMismatchError);
});

Deno.test("a tag cannot point at a manifest whose blobs are missing", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const manifest = await store.writeBlob(canonicalJson({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociEmpty, digest: digestOf("{}"), size: 2 },
    layers: [],
  }));
  await assert.rejects(
    store.tag("x/y:1", { mediaType: MediaTypes.ociManifest, ...manifest }),
    NotFoundError,
  );
  assert.deepEqual(await store.listRefs(), []);
});

Deno.test("a writer killed mid-ingest leaves only a partial ingest, which resumes or is collected", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", writer, tmp.path, "slow", "crash-key"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /started/);
    reader.releaseLock();
    await new Promise((r) => setTimeout(r, 100));
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
  assert.deepEqual(await listFiles(join(store.root, "blobs")), []);
  const partial = await Deno.stat(join(store.paths.ingest, "crash-key"));
  assert.ok(partial.size >= 64 * 1024);
  // The lock died with the process: the ingest resumes from where it stopped.
  const w = await store.openIngest({ key: "crash-key" });
  assert.equal(w.offset, partial.size);
  w.close();
  const res = await store.gc();
  assert.equal(res.ingestRemoved, 1);
  assert.deepEqual(await listFiles(store.paths.ingest), []);
});

Deno.test("an ingest key held by a live writer is refused, not shared", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const w = await store.openIngest({ key: "k1" });
  try {
    await assert.rejects(store.openIngest({ key: "k1" }), /writing "k1" right now/);
  } finally {
    await w.abort();
  }
});

Deno.test("two processes writing the same blob end with one intact blob and both refs", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const spawnWriter = (tag: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", writer, tmp.path, "blob", "42", tag],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [a, b] = await Promise.all([spawnWriter("w/a:1"), spawnWriter("w/b:1")]);
  for (const r of [a, b]) assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  const refs = await store.listRefs();
  assert.deepEqual(refs.map((r) => r.name), ["w/a:1", "w/b:1"]);
  assert.equal(refs[0].descriptor.digest, refs[1].descriptor.digest);
  assert.equal(await assertBlobsIntact(store), 3);
  await assertRefsComplete(store);
  assert.deepEqual(await listFiles(store.paths.ingest), []);
});

Deno.test("concurrent tag updates in one process are all kept", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const config = await store.writeBlob(canonicalJson({}));
  const m = await store.writeBlob(canonicalJson({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociEmpty, ...config },
    layers: [],
  }));
  await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => store.tag(`c/t:${i}`, { mediaType: MediaTypes.ociManifest, ...m }),
    ),
  );
  assert.equal((await store.listRefs()).length, 12);
});

Deno.test("gc removes only what no ref and no instance needs", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const files = join(tmp.path, "files");
  await Deno.mkdir(files);
  await Deno.writeFile(join(files, "k"), new Uint8Array(1000).fill(1));
  await Deno.writeFile(join(files, "k2"), new Uint8Array(1000).fill(2));
  const kept = await pack(store, {
    kernel: join(files, "k"),
    disks: [],
    devices: [],
    tag: "g/kept:1",
  });
  const dropped = await pack(store, {
    kernel: join(files, "k2"),
    disks: [],
    devices: [],
    tag: "g/dropped:1",
  });
  const orphan = await store.writeBlob(new TextEncoder().encode("orphan"));
  await store.untag("g/dropped:1");
  // An instance still uses the dropped artifact's manifest.
  const inst = join(store.paths.instances, "vm1");
  await Deno.mkdir(inst, { recursive: true });
  await Deno.writeTextFile(
    join(inst, "state.json"),
    JSON.stringify({ manifestDigest: dropped.descriptor.digest }),
  );
  const { instanceRoots } = await import("../../src/cli/gc.ts");
  let res = await store.gc({ roots: await instanceRoots(store.paths.instances) });
  assert.deepEqual(res.removed.map((b) => b.digest), [orphan.digest]);
  await loadArtifact(store, "g/kept:1");
  await loadArtifact(store, dropped.descriptor.digest);
  await Deno.remove(inst, { recursive: true });
  res = await store.gc({ roots: await instanceRoots(store.paths.instances) });
  assert.equal(res.removed.length, 3); // manifest, config, kernel k2
  await loadArtifact(store, kept.ref);
  assert.equal(await assertBlobsIntact(store), 3);
});

Deno.test("skopeo and umoci read the store as an OCI image layout", async () => {
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  const f = join(tmp.path, "kernel");
  await Deno.writeFile(f, new Uint8Array(4096).fill(9));
  const res = await pack(store, { kernel: f, disks: [], devices: [], tag: "interop/vm:1.0" });
  const sk = await new Deno.Command("skopeo", {
    args: ["inspect", "--raw", `oci:${store.root}:interop/vm:1.0`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(sk.code, 0, new TextDecoder().decode(sk.stderr));
  assert.equal(digestOf(sk.stdout), res.descriptor.digest);
  const raw = JSON.parse(new TextDecoder().decode(sk.stdout));
  assert.equal(raw.artifactType, MediaTypes.manifest);
  const um = await new Deno.Command("umoci", {
    args: ["ls", "--layout", store.root],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(um.code, 0, new TextDecoder().decode(um.stderr));
  assert.match(new TextDecoder().decode(um.stdout), /interop\/vm:1\.0/);
});
