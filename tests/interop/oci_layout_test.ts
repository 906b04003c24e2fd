/**
 * The local store as an OCI image layout, both ways: skopeo, umoci and oras
 * (`--oci-layout-path`) read `$OVM_HOME/store`; layouts written by
 * `oras copy -r --to-oci-layout` and `skopeo copy … oci:DIR:TAG` are imported
 * with `ovm pull oci:DIR:REF` (digests kept, signatures along), and broken
 * layouts are refused with nothing recorded.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { digestOf, sha256Hex } from "../../src/manifest/mod.ts";
import { resetCapabilities } from "../../src/oci/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";
import { needs, runOk, toolEnv } from "../_helpers/tools.ts";

const all = await needs("oras", "skopeo", "umoci");
const orasOnly = await needs("oras");
const skopeo = await needs("skopeo");

Deno.test({
  name: "skopeo, umoci and oras read $OVM_HOME/store as an OCI image layout",
  ...all,
  async fn() {
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest } = await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "k")), 0);
    assertExit(await ovm(home, "sign", "--key", join(home, "k.key"), "demo/vm:1.0"), 0);
    const store = join(home, "store");
    const m = JSON.parse(new TextDecoder().decode(
      await (await ContentStore.open(home)).readBlob(digest),
    ));

    // skopeo: the oci: transport, inspect and copy out.
    const raw = await runOk("skopeo", ["inspect", "--raw", `oci:${store}:demo/vm:1.0`], {
      env: t.env,
    });
    assert.equal(digestOf(new TextEncoder().encode(raw)), digest);
    const out = join(home, "skopeo-dir");
    await runOk("skopeo", ["copy", `oci:${store}:demo/vm:1.0`, `dir:${out}`], { env: t.env });
    for (const l of m.layers) {
      assert.equal(
        `sha256:${sha256Hex(await Deno.readFile(join(out, l.digest.slice(7))))}`,
        l.digest,
      );
    }

    // umoci: lists the refs (its stat/unpack want a container image config).
    const ls = await runOk("umoci", ["ls", "--layout", store], { env: t.env });
    assert.deepEqual(ls.trim().split("\n").filter((l) => !l.includes(".sig")), ["demo/vm:1.0"]);

    // oras: tags, manifest, files, and the local signature as a referrer.
    const tags = await runOk("oras", ["repo", "tags", "--oci-layout", store], { env: t.env });
    assert(tags.split("\n").includes("demo/vm:1.0"), tags);
    const fetched = await runOk(
      "oras",
      ["manifest", "fetch", "--oci-layout-path", store, "demo/vm:1.0"],
      { env: t.env },
    );
    assert.equal(digestOf(new TextEncoder().encode(fetched)), digest);
    const files = join(home, "oras-files");
    await runOk("oras", ["pull", "--oci-layout-path", store, "-o", files, "demo/vm:1.0"], {
      env: t.env,
    });
    for (const l of m.layers) {
      const title = l.annotations["org.opencontainers.image.title"];
      assert.equal(`sha256:${sha256Hex(await Deno.readFile(join(files, title)))}`, l.digest);
    }
    const d = JSON.parse(
      await runOk("oras", [
        "discover",
        "--oci-layout-path",
        store,
        "--format",
        "json",
        "demo/vm:1.0",
      ], { env: t.env }),
    );
    assert.deepEqual(
      d.referrers.map((r: { artifactType: string }) => r.artifactType),
      ["application/vnd.dev.sigstore.bundle.v0.3+json"],
    );
    // Reading changed nothing.
    await assertStoreConsistent(home);
  },
});

Deno.test({
  name: "a layout written by oras copy -r is imported by ovm pull oci:DIR:TAG, signatures included",
  ...orasOnly,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest } = await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "k")), 0);
    assertExit(await ovm(home, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`), 0);
    assertExit(
      await ovm(home, "sign", "--key", join(home, "k.key"), `${reg.host}/vms/demo:1.0`),
      0,
    );
    const layout = join(home, "layout");
    await runOk("oras", [
      "copy",
      "-r",
      "--from-plain-http",
      `${reg.host}/vms/demo:1.0`,
      "--to-oci-layout",
      `${layout}:1.0`,
    ], { env: t.env });

    const fresh = join(home, "fresh");
    const p = await ovm(
      fresh,
      "pull",
      `oci:${layout}:1.0`,
      "-t",
      "demo/imported:1.0",
      "--progress",
      "plain",
      "--json",
    );
    assertExit(p, 0);
    const res = JSON.parse(p.stdout);
    assert.equal(res.digest, digest);
    assert.equal(res.localRef, "demo/imported:1.0");
    assert.equal(res.referrers, 1, "the bundle came along");
    assert.match(p.stderr, /fetched [0-9a-f]{12} /); // progress, one line per blob
    const v = await ovm(
      fresh,
      "verify",
      "--key",
      join(home, "k.pub"),
      "demo/imported:1.0",
      "--json",
    );
    assertExit(v, 0);
    assert.equal(JSON.parse(v.stdout).digest, digest);
    assertExit(await ovm(fresh, "inspect", "demo/imported:1.0"), 0);
    // Without -t the layout's directory name and the tag name the local ref.
    const q = await ovm(fresh, "pull", `oci:${layout}:1.0`, "--json");
    assertExit(q, 0);
    assert.equal(JSON.parse(q.stdout).localRef, "layout:1.0");
    await assertStoreConsistent(fresh);

    // gc keeps the imported bundle while a ref names its subject, and drops it after.
    const g = await ovm(fresh, "gc", "--json");
    assertExit(g, 0);
    assert.equal(JSON.parse(g.stdout).attachmentsDropped, 0);
    assertExit(await ovm(fresh, "verify", "--key", join(home, "k.pub"), "demo/imported:1.0"), 0);
    // (ovm has no verb to drop a ref yet; the store's untag is what one would call.)
    const fs = await ContentStore.open(fresh);
    assert(await fs.untag("demo/imported:1.0"));
    assert(await fs.untag("layout:1.0"));
    const g2 = await ovm(fresh, "gc", "--json");
    assertExit(g2, 0);
    assert.equal(JSON.parse(g2.stdout).attachmentsDropped, 1);
    const index = JSON.parse(await Deno.readTextFile(join(fresh, "store", "index.json")));
    assert.deepEqual(index.manifests, []);
    assert.deepEqual(
      [...Deno.readDirSync(join(fresh, "store", "blobs", "sha256"))],
      [],
      "every blob of the artifact and its bundle is gone",
    );
  },
});

Deno.test({
  name: "a layout written by skopeo copy is imported by ovm pull with identical digests",
  ...skopeo,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest } = await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`), 0);
    const layout = join(home, "sk-layout");
    await runOk("skopeo", [
      "copy",
      "--src-tls-verify=false",
      `docker://${reg.host}/vms/demo:1.0`,
      `oci:${layout}:v1`,
    ], { env: t.env });
    const fresh = join(home, "fresh");
    const p = await ovm(fresh, "pull", `oci:${layout}:v1`, "-t", "demo/sk:1.0", "--json");
    assertExit(p, 0);
    assert.equal(JSON.parse(p.stdout).digest, digest);
    const a = await ContentStore.open(home);
    const b = await ContentStore.open(fresh);
    const m = JSON.parse(new TextDecoder().decode(await b.readBlob(digest)));
    for (const d of [m.config, ...m.layers]) {
      assert.deepEqual(await b.readBlob(d.digest), await a.readBlob(d.digest));
    }
    // ovm's own store is a layout too: a ref with ":" in it reads.
    const own = await ovm(
      join(home, "third"),
      "pull",
      `oci:${join(home, "store")}:demo/vm:1.0`,
      "--json",
    );
    assertExit(own, 0);
    assert.equal(JSON.parse(own.stdout).localRef, "demo/vm:1.0");
  },
});

Deno.test("broken or ambiguous layouts are refused naming the problem, with nothing recorded", async () => {
  await using tmp = await tempDir();
  const home = tmp.path;
  const { digest } = await packDummy(home, "demo/vm:1.0");
  await packDummy(home, "demo/vm:2.0", { seed: 4 });
  const store = join(home, "store");
  const fresh = join(home, "fresh");
  const expectRefused = async (ref: string, code: number, why: RegExp) => {
    const r = await ovm(fresh, "pull", ref);
    assertExit(r, code);
    assert.match(r.stderr, why, r.stderr);
    const ls = await ovm(fresh, "ls", "--json");
    assertExit(ls, 0);
    assert.deepEqual(JSON.parse(ls.stdout).length ?? JSON.parse(ls.stdout).artifacts?.length, 0);
  };
  await expectRefused(`oci:${join(home, "nope")}:1.0`, 1, /No OCI image layout at/);
  await expectRefused(
    `oci:${store}:demo/vm:9.9`,
    1,
    /has no manifest named "demo\/vm:9\.9"[\s\S]*demo\/vm:1\.0/,
  );
  await expectRefused(`oci:${store}`, 2, /holds 2 manifests; say which[\s\S]*demo\/vm:1\.0/);

  // A copy of the layout with one layer blob corrupted, and one with a blob missing.
  const m = JSON.parse(
    new TextDecoder().decode(await (await ContentStore.open(home)).readBlob(digest)),
  );
  const kernel = m.layers[0].digest.slice(7);
  for (
    const [name, damage, why] of [
      ["corrupt", "flip", /Digest mismatch/i],
      ["missing", "remove", /lacks blob "sha256:[0-9a-f]{64}"/],
    ] as const
  ) {
    const copy = join(home, name);
    await new Deno.Command("cp", { args: ["-a", store, copy] }).output();
    const f = join(copy, "blobs", "sha256", kernel);
    if (damage === "remove") await Deno.remove(f);
    else {
      const b = await Deno.readFile(f);
      b[100] ^= 0xff;
      await Deno.writeFile(f, b);
    }
    const r = await ovm(fresh, "pull", `oci:${copy}:demo/vm:1.0`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, why, r.stderr);
  }
  const ls = await ovm(fresh, "ls", "--json");
  assert(!ls.stdout.includes("demo/vm:1.0"), ls.stdout);
  await assertStoreConsistent(fresh);
});
