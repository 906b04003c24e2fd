/**
 * Referrers (tag-schema fallback on docker-registry, the OCI 1.1 API on the
 * project's own test registry), registry-to-registry copy with cross-repo
 * mounts, chunked uploads, multi-platform indexes and pushing an export dir.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ContentStore, loadArtifact, writeArtifact } from "../../src/store/mod.ts";
import { canonicalJson, type Descriptor, digestOf, MediaTypes } from "../../src/manifest/mod.ts";
import {
  copyBetween,
  listReferrers,
  openRepository,
  pullToStore,
  pushFromStore,
  referrersCapabilityOf,
  referrersTag,
  resetCapabilities,
} from "../../src/oci/mod.ts";
import { exportArtifact } from "../../src/runtime/mod.ts";
import {
  assertStoreConsistent,
  packDummy,
  startProxy,
  startRegistry,
} from "../_helpers/registry.ts";
import { startOciRegistry } from "../_helpers/oci_registry.ts";

/** Packs a base artifact and a second one whose manifest has `subject` = the base. */
async function baseAndReferrer(home: string) {
  await packDummy(home, "demo/vm:1.0");
  await packDummy(home, "demo/other:1.0", { seed: 5 });
  const store = await ContentStore.open(home);
  const other = await loadArtifact(store, "demo/other:1.0");
  const subject = await store.resolve("demo/vm:1.0");
  const sig = await writeArtifact(store, other.manifest, {
    subject,
    annotations: { "org.example.kind": "snapshot" },
  });
  await store.tag("demo/vm:snap", sig);
  return { store, base: subject, referrer: sig };
}

Deno.test("referrers fall back to the sha256-<hex> tag index on docker-registry", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const { store, base, referrer } = await baseAndReferrer(home);
    await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    await pushFromStore(store, "demo/vm:snap", `${reg.host}/vms/demo:snap`);
    assert.equal(referrersCapabilityOf(reg.host), "unsupported");
    // The fallback tag holds an OCI index naming the referrer.
    const res = await fetch(
      `${reg.url}/v2/vms/demo/manifests/${referrersTag(base.digest as `sha256:${string}`)}`,
      { headers: { accept: MediaTypes.ociIndex } },
    );
    assert.equal(res.headers.get("content-type"), MediaTypes.ociIndex);
    const index = await res.json();
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0].digest, referrer.digest);
    assert.equal(index.manifests[0].artifactType, MediaTypes.manifest);
    assert.equal(index.manifests[0].annotations["org.example.kind"], "snapshot");
    resetCapabilities();
    const listed = await listReferrers(`${reg.host}/vms/demo:1.0`);
    assert.equal(listed.subject.digest, base.digest);
    assert.deepEqual(listed.referrers.map((d) => d.digest), [referrer.digest]);
    assert.equal(
      (await listReferrers(`${reg.host}/vms/demo:1.0`, { artifactType: "application/x-none" }))
        .referrers.length,
      0,
    );
    // Pushing the referrer again does not duplicate the entry.
    await pushFromStore(store, "demo/vm:snap", `${reg.host}/vms/demo:snap2`);
    assert.equal((await listReferrers(`${reg.host}/vms/demo:1.0`)).referrers.length, 1);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("referrers use the OCI 1.1 API where the registry has it", async () => {
  resetCapabilities();
  await using reg = startOciRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const { store, base, referrer } = await baseAndReferrer(home);
    await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    await pushFromStore(store, "demo/vm:snap", `${reg.host}/vms/demo:snap`);
    assert.equal(referrersCapabilityOf(reg.host), "supported");
    // No fallback tag was written.
    assert.deepEqual(reg.tags("vms/demo"), ["1.0", "snap"]);
    resetCapabilities();
    const listed = await listReferrers(`${reg.host}/vms/demo@${base.digest}`, {
      artifactType: MediaTypes.manifest,
    });
    assert.deepEqual(listed.referrers.map((d) => d.digest), [referrer.digest]);
    assert.equal(referrersCapabilityOf(reg.host), "supported");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("copy between repositories of one registry mounts blobs instead of copying", async () => {
  await using reg = await startRegistry();
  await using proxy = startProxy(reg.host, (req, forward) => forward(req));
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    await pushFromStore(await ContentStore.open(home), "demo/vm:1.0", `${proxy.host}/vms/a:1.0`);
    const res = await copyBetween(`${proxy.host}/vms/a:1.0`, `${proxy.host}/mirror/b:1.0`);
    assert.equal(res.descriptor.digest, packed.digest);
    assert.equal(res.transferred, 0);
    const mounts = proxy.log.filter((l) => l.method === "POST" && l.path.includes("/mirror/b/"));
    assert(mounts.length > 0);
    assert(!proxy.log.some((l) => l.method === "GET" && l.path.startsWith("/v2/vms/a/blobs/")));
    const pulled = await pullToStore(
      await ContentStore.open(home),
      `${reg.host}/mirror/b:1.0`,
    );
    assert.equal(pulled.descriptor.digest, packed.digest);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("copy between two registries streams every blob and keeps the digest", async () => {
  await using a = await startRegistry();
  await using b = startOciRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    await pushFromStore(await ContentStore.open(home), "demo/vm:1.0", `${a.host}/vms/a:1.0`);
    const res = await copyBetween(`${a.host}/vms/a:1.0`, `${b.host}/vms/b:2.0`);
    assert.equal(res.descriptor.digest, packed.digest);
    assert(res.transferred > 0);
    const m = await openRepository(`${b.host}/vms/b:2.0`).fetchManifest("2.0");
    assert.equal(m.descriptor.digest, packed.digest);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("large blobs are pushed in PATCH chunks no smaller than OCI-Chunk-Min-Length", async () => {
  await using reg = startOciRegistry({ chunkMinLength: 1 << 20 });
  await using dreg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0", { diskBytes: 3 << 20 });
    const store = await ContentStore.open(home);
    const opts = { chunkSize: 256 << 10, monolithicMax: 512 << 10 };
    await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, opts);
    assert(reg.patches.length >= 3, `patches: ${reg.patches}`);
    assert(reg.patches.slice(0, -1).every((n) => n >= 1 << 20));
    // docker-registry takes the same chunked upload.
    await pushFromStore(store, "demo/vm:1.0", `${dreg.host}/vms/demo:1.0`, opts);
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const pulled = await pullToStore(await ContentStore.open(home2), `${dreg.host}/vms/demo:1.0`);
      assert.equal(pulled.descriptor.digest, packed.digest);
      await assertStoreConsistent(home2);
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("pull of a multi-platform index picks the linux/amd64 manifest", async () => {
  await using reg = startOciRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const amd = await packDummy(home, "demo/amd:1.0", { seed: 1 });
    const arm = await packDummy(home, "demo/arm:1.0", { seed: 2 });
    const store = await ContentStore.open(home);
    await pushFromStore(store, "demo/amd:1.0", `${reg.host}/vms/multi:amd`);
    await pushFromStore(store, "demo/arm:1.0", `${reg.host}/vms/multi:arm`);
    const desc = async (ref: string, arch: string): Promise<Descriptor> => ({
      ...(await store.resolve(ref)),
      annotations: undefined,
      platform: { os: "linux", architecture: arch },
    });
    const index = {
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [await desc("demo/arm:1.0", "arm64"), await desc("demo/amd:1.0", "amd64")],
    };
    const bytes = canonicalJson(JSON.parse(JSON.stringify(index)));
    const repo = openRepository(`${reg.host}/vms/multi`);
    await repo.pushManifest("1.0", bytes, MediaTypes.ociIndex);
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const res = await pullToStore(await ContentStore.open(home2), `${reg.host}/vms/multi:1.0`);
      assert.equal(res.resolved.digest, digestOf(bytes));
      assert.equal(res.descriptor.digest, amd.digest);
      assert.notEqual(res.descriptor.digest, arm.digest);
      await assertStoreConsistent(home2);
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("push DIR republishes an export directory with the same digest", async () => {
  await using reg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const out = await Deno.makeTempDir({ prefix: "ovm-export-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    const store = await ContentStore.open(home);
    await exportArtifact(store, "demo/vm:1.0", join(out, "x"));
    const res = await pushFromStore(store, join(out, "x"), `${reg.host}/vms/fromdir:1.0`);
    assert.equal(res.digest, packed.digest);
    // Without the OCI manifest copy, the manifest is rebuilt from manifest.json.
    await Deno.remove(join(out, "x", "metadata"), { recursive: true });
    const rebuilt = await pushFromStore(store, join(out, "x"), `${reg.host}/vms/fromdir:2.0`);
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const pulled = await pullToStore(
        await ContentStore.open(home2),
        `${reg.host}/vms/fromdir:2.0`,
      );
      assert.equal(pulled.descriptor.digest, rebuilt.digest);
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("a refused cross-repo mount (202) continues as an ordinary upload", async () => {
  await using reg = startOciRegistry();
  const bytes = new TextEncoder().encode("a small blob\n");
  const desc = {
    mediaType: "application/octet-stream",
    digest: digestOf(bytes),
    size: bytes.length,
  };
  const repo = openRepository(`${reg.host}/vms/target`);
  const status = await repo.pushBlob(desc, () => Promise.resolve(ReadableStream.from([bytes])), {
    mountFrom: "vms/elsewhere",
  });
  assert.equal(status, "pushed");
  assert.deepEqual(reg.mounts, [{
    digest: desc.digest,
    from: "vms/elsewhere",
    to: "vms/target",
    mounted: false,
  }]);
  assert.equal(await repo.blobExists(desc.digest), true);
});

Deno.test("copy of an index carries every child manifest and keeps the index digest", async () => {
  await using src = startOciRegistry();
  await using dst = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    await packDummy(home, "demo/amd:1.0", { seed: 1 });
    await packDummy(home, "demo/arm:1.0", { seed: 2 });
    const store = await ContentStore.open(home);
    await pushFromStore(store, "demo/amd:1.0", `${src.host}/vms/multi:amd`);
    await pushFromStore(store, "demo/arm:1.0", `${src.host}/vms/multi:arm`);
    const entry = async (ref: string, arch: string) => {
      const d = await store.resolve(ref);
      return {
        mediaType: d.mediaType,
        digest: d.digest,
        size: d.size,
        platform: { os: "linux", architecture: arch },
      };
    };
    const bytes = canonicalJson({
      schemaVersion: 2,
      mediaType: MediaTypes.ociIndex,
      manifests: [await entry("demo/amd:1.0", "amd64"), await entry("demo/arm:1.0", "arm64")],
    });
    await openRepository(`${src.host}/vms/multi`).pushManifest("1.0", bytes, MediaTypes.ociIndex);
    const res = await copyBetween(`${src.host}/vms/multi:1.0`, `${dst.host}/mirror/multi:1.0`);
    assert.equal(res.descriptor.digest, digestOf(bytes));
    const target = openRepository(`${dst.host}/mirror/multi`);
    assert.equal((await target.fetchManifest("1.0")).descriptor.digest, digestOf(bytes));
    for (const ref of ["demo/amd:1.0", "demo/arm:1.0"]) {
      const d = await store.resolve(ref);
      assert.equal((await target.fetchManifest(d.digest)).descriptor.digest, d.digest);
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a chunked upload that fails half-way continues from where the registry stands", async () => {
  await using reg = startOciRegistry({ failPatchOnce: true });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0", { diskBytes: 2 << 20 });
    const store = await ContentStore.open(home);
    await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, {
      chunkSize: 512 << 10,
      monolithicMax: 256 << 10,
      retry: { baseDelayMs: 1 },
    });
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const pulled = await pullToStore(await ContentStore.open(home2), `${reg.host}/vms/demo:1.0`);
      assert.equal(pulled.descriptor.digest, packed.digest);
      await assertStoreConsistent(home2);
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
