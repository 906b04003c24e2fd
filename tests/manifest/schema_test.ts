import assert from "node:assert/strict";
import { jsonSchemas, renderSchema } from "../../src/manifest/json_schema.ts";
import {
  digestOf,
  isDigest,
  manifestFromValue,
  parseBootstrapConfig,
  parseDigest,
  parseManifest,
} from "../../src/manifest/mod.ts";
import { ValidationError } from "../../src/errors.ts";

const root = new URL("../../", import.meta.url);

Deno.test("schemas/*.json match what the zod schemas generate", async () => {
  for (const [name, doc] of Object.entries(jsonSchemas())) {
    const onDisk = await Deno.readTextFile(new URL(`schemas/${name}`, root));
    assert.equal(
      onDisk,
      renderSchema(doc),
      `schemas/${name} drifted from its zod schema: run 'deno task schemas'`,
    );
  }
});

Deno.test("every example manifest validates", async () => {
  let n = 0;
  for await (const e of Deno.readDir(new URL("examples/", root))) {
    if (!e.name.endsWith("-manifest.json")) continue;
    const m = parseManifest(await Deno.readFile(new URL(`examples/${e.name}`, root)), e.name);
    assert.equal(m.schemaVersion, 1);
    n++;
  }
  assert.ok(n >= 3, `expected at least 3 example manifests, found ${n}`);
});

Deno.test("the canonical example keeps every field of the spec", async () => {
  const m = parseManifest(await Deno.readFile(new URL("examples/ubuntu-manifest.json", root)));
  assert.equal(m.diskLayers.length, 2);
  assert.equal(m.ramSnapshot?.compression, "lz4");
  assert.equal(m.ramSnapshot?.preload_hint, true);
  assert.equal(m.devices[0].type, "ivshmem");
  assert.equal(m.devices[0].mmio_addr, "0x10000000");
  assert.equal(m.metadata?.platform.arch, "x86_64");
  assert.deepEqual(m.runtimeHints?.preferredRuntime, ["qemu", "cherrybomb"]);
});

Deno.test("the example bootstrap config validates", async () => {
  const c = parseBootstrapConfig(
    await Deno.readFile(new URL("examples/bootstrap-config.json", root)),
  );
  assert.equal(c.workdir, "/srv");
  assert.equal(c.user, "1000:1000");
});

function base(): Record<string, unknown> {
  return {
    schemaVersion: 1,
    mediaType: "application/vnd.ovms.manifest.v1+json",
    name: "t",
    version: "1",
    kernel: { ref: digestOf("k") },
  };
}

function rejects(value: unknown, pattern: RegExp, path?: string): void {
  assert.throws(() => manifestFromValue(value, "m.json"), (e: unknown) => {
    assert.ok(e instanceof ValidationError, `expected ValidationError, got ${e}`);
    assert.match(e.message, pattern);
    if (path) assert.equal(e.path, path);
    return true;
  });
}

Deno.test("an unknown schemaVersion is refused naming the field", () => {
  rejects({ ...base(), schemaVersion: 2 }, /schemaVersion.*unsupported value 2/, "schemaVersion");
});

Deno.test("a wrong mediaType is refused naming the expected type", () => {
  rejects(
    { ...base(), mediaType: "application/json" },
    /mediaType.*expected "application\/vnd\.ovms\.manifest\.v1\+json"/,
    "mediaType",
  );
});

Deno.test("bad digest strings in refs are refused with the JSON path", () => {
  for (
    const ref of [
      "sha256:../../x",
      "sha256:abc",
      `sha512:${"a".repeat(128)}`,
      `sha256:${"A".repeat(64)}`,
      "",
    ]
  ) {
    rejects({ ...base(), kernel: { ref } }, /kernel\.ref/, "kernel.ref");
  }
  rejects(
    { ...base(), diskLayers: [{ ref: "sha256:zz", format: "qcow2", size: 1 }] },
    /diskLayers\[0\]\.ref/,
    "diskLayers[0].ref",
  );
});

Deno.test("duplicate disk-layer refs are refused", () => {
  const ref = digestOf("d");
  rejects(
    {
      ...base(),
      diskLayers: [{ ref, format: "qcow2", size: 1 }, { ref, format: "qcow2", size: 1 }],
    },
    /duplicate/,
    "diskLayers[1].ref",
  );
});

Deno.test("duplicate device names and non-power-of-two ivshmem sizes are refused", () => {
  const dev = { type: "ivshmem", name: "a", size: 1024, mmio_addr: "0x1000" };
  rejects({ ...base(), devices: [dev, dev] }, /duplicate device name "a"/);
  rejects({ ...base(), devices: [{ ...dev, size: 1000 }] }, /power of two/, "devices[0].size");
  rejects({ ...base(), devices: [{ ...dev, type: "gpu" }] }, /devices\[0\]\.type/);
});

Deno.test("unknown fields are refused", () => {
  rejects({ ...base(), kernal: {} }, /kernal/);
});

Deno.test("a raw diff layer is refused: only the base may be raw", () => {
  rejects(
    {
      ...base(),
      diskLayers: [
        { ref: digestOf("a"), format: "qcow2", size: 1 },
        { ref: digestOf("b"), format: "raw", size: 1 },
      ],
    },
    /diff layer must be qcow2/,
  );
});

Deno.test("malformed JSON and oversized manifests are refused", () => {
  assert.throws(() => parseManifest("{ nope", "bad.json"), /bad\.json is not valid JSON/);
  const big = JSON.stringify({ ...base(), annotations: { pad: "x".repeat(4 * 1024 * 1024) } });
  assert.throws(() => parseManifest(big, "big.json"), /over the limit of 4194304 bytes/);
  assert.throws(() => parseManifest("[]", "arr.json"), /JSON object/);
});

Deno.test("digests are validated before use", () => {
  assert.equal(isDigest(digestOf("x")), true);
  assert.throws(() => parseDigest("sha256:../../etc"), /hex part has characters/);
  assert.throws(() => parseDigest("md5:abc"), /unsupported algorithm "md5"/);
  assert.throws(() => parseDigest(`sha256:${"a".repeat(63)}`), /63 characters, expected 64/);
});
