/**
 * oras 1.3 (the real binary) and ovm against a real docker-registry 2.8 (no
 * referrers API: the sha256-<hex> tag fallback is what both use): oras reads
 * what ovm pushes and signs, ovm lists and copies what oras attaches, ovm
 * pulls what oras pushes with the OVMS media types (or says what is missing),
 * and `oras copy -r` keeps what `ovm verify` needs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { digestOf, sha256Hex } from "../../src/manifest/mod.ts";
import { resetCapabilities } from "../../src/oci/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";
import { rawManifest } from "../_helpers/sign.ts";
import { needs, runOk, toolEnv } from "../_helpers/tools.ts";

const oras = await needs("oras");

const OVMS = "application/vnd.ovms.manifest.v1+json";
const SBOM_TYPE = "application/spdx+json";

async function fileDigest(path: string): Promise<string> {
  return `sha256:${sha256Hex(await Deno.readFile(path))}`;
}

/** A packed, pushed and signed artifact; returns its digest and OCI manifest. */
async function pushedSigned(home: string, host: string, repo: string) {
  const { digest } = await packDummy(home, "demo/vm:1.0");
  assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "k")), 0);
  assertExit(await ovm(home, "push", "demo/vm:1.0", `${host}/${repo}:1.0`), 0);
  assertExit(await ovm(home, "sign", "--key", join(home, "k.key"), `${host}/${repo}:1.0`), 0);
  return { digest, pub: join(home, "k.pub"), key: join(home, "k.key") };
}

Deno.test({
  name: "oras manifest fetch, oras pull and oras discover read what ovm pushed and signed",
  ...oras,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest } = await pushedSigned(home, reg.host, "vms/demo");
    const ref = `${reg.host}/vms/demo:1.0`;

    const fetched = await runOk("oras", ["manifest", "fetch", "--plain-http", ref], { env: t.env });
    assert.equal(digestOf(new TextEncoder().encode(fetched)), digest, "the bytes ovm pushed");
    const m = JSON.parse(fetched);
    assert.equal(m.artifactType, OVMS);
    const config = await runOk("oras", ["manifest", "fetch-config", "--plain-http", ref], {
      env: t.env,
    });
    assert.equal(digestOf(new TextEncoder().encode(config)), m.config.digest);
    assert.equal(JSON.parse(config).mediaType, OVMS);

    const out = join(home, "pulled");
    await runOk("oras", ["pull", "--plain-http", "-o", out, ref], { env: t.env });
    for (const l of m.layers) {
      const title = l.annotations["org.opencontainers.image.title"];
      assert.equal(await fileDigest(join(out, title)), l.digest, `${title} pulled intact`);
    }

    const d = JSON.parse(
      await runOk("oras", ["discover", "--plain-http", "--format", "json", ref], { env: t.env }),
    );
    assert.equal(d.digest, digest);
    const types = d.referrers.map((r: { artifactType: string }) => r.artifactType);
    assert.deepEqual(types, ["application/vnd.dev.sigstore.bundle.v0.3+json"]);
    // The tree form names it too.
    const tree = await runOk("oras", ["discover", "--plain-http", ref], { env: t.env });
    assert.match(tree, /application\/vnd\.dev\.sigstore\.bundle\.v0\.3\+json/);
  },
});

Deno.test({
  name: "an SBOM attached by oras attach is listed by ovm referrers and carried by ovm copy",
  ...oras,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest, pub } = await pushedSigned(home, reg.host, "vms/demo");
    const ref = `${reg.host}/vms/demo:1.0`;
    const work = join(home, "sbom");
    await Deno.mkdir(work);
    const sbom = JSON.stringify({ spdxVersion: "SPDX-2.3", name: "demo-vm", packages: [] });
    await Deno.writeTextFile(join(work, "sbom.spdx.json"), sbom);
    const attached = await runOk("oras", [
      "attach",
      "--plain-http",
      "--artifact-type",
      SBOM_TYPE,
      "--format",
      "json",
      ref,
      `sbom.spdx.json:${SBOM_TYPE}`,
    ], { env: t.env, cwd: work });
    const sbomDigest = JSON.parse(attached).digest;

    const r = await ovm(home, "referrers", ref, "--json");
    assertExit(r, 0);
    const listed = JSON.parse(r.stdout);
    const entry = listed.referrers.find((x: { digest: string }) => x.digest === sbomDigest);
    assert(entry, r.stdout);
    assert.equal(entry.artifactType, SBOM_TYPE);
    const human = await ovm(home, "referrers", ref);
    assert.match(human.stdout, new RegExp(SBOM_TYPE.replace(/[+.]/g, "\\$&")));

    // ovm copy carries the SBOM (and the signatures) to the new repository.
    const c = await ovm(home, "copy", ref, `${reg.host}/mirror/demo:1.0`, "--json");
    assertExit(c, 0);
    assert.deepEqual(JSON.parse(c.stdout).referrers, [sbomDigest]);
    const d = JSON.parse(
      await runOk("oras", [
        "discover",
        "--plain-http",
        "--format",
        "json",
        `${reg.host}/mirror/demo:1.0`,
      ], { env: t.env }),
    );
    assert(d.referrers.some((x: { digest: string }) => x.digest === sbomDigest), "oras sees it");
    const got = join(home, "got");
    await runOk("oras", [
      "pull",
      "--plain-http",
      "-o",
      got,
      `${reg.host}/mirror/demo@${sbomDigest}`,
    ], {
      env: t.env,
    });
    assert.equal(await Deno.readTextFile(join(got, "sbom.spdx.json")), sbom);
    assertExit(await ovm(home, "verify", "--key", pub, `${reg.host}/mirror/demo:1.0`), 0);

    // --no-referrers leaves it behind (the signatures still follow).
    const bare = await ovm(
      home,
      "copy",
      ref,
      `${reg.host}/bare/demo:1.0`,
      "--no-referrers",
      "--json",
    );
    assertExit(bare, 0);
    assert.deepEqual(JSON.parse(bare.stdout).referrers, []);
    const rb = JSON.parse(
      (await ovm(home, "referrers", `${reg.host}/bare/demo:1.0`, "--json")).stdout,
    );
    assert(!rb.referrers.some((x: { digest: string }) => x.digest === sbomDigest));

    // Pulled into the store, the artifact is complete; gc keeps it.
    assertExit(await ovm(home, "pull", ref, "-t", "pulled/demo:1.0", "-q"), 0);
    assertExit(await ovm(home, "gc"), 0);
    const store = await ContentStore.open(home);
    assert.equal((await store.resolve("pulled/demo:1.0")).digest, digest);
    await assertStoreConsistent(home);
  },
});

Deno.test({
  name: "oras copy -r to another repository keeps everything ovm verify needs",
  ...oras,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest, pub } = await pushedSigned(home, reg.host, "vms/demo");
    await runOk("oras", [
      "copy",
      "-r",
      "--from-plain-http",
      "--to-plain-http",
      `${reg.host}/vms/demo:1.0`,
      `${reg.host}/other/demo:1.0`,
    ], { env: t.env });
    const v = await ovm(home, "verify", "--key", pub, `${reg.host}/other/demo:1.0`, "--json");
    assertExit(v, 0);
    const forms = JSON.parse(v.stdout).verified.map((x: { form: string }) => x.form);
    // oras copies referrers; the legacy .sig is a tag, not a referrer, so the bundle carries it.
    assert(forms.includes("bundle"), v.stdout);
    assert.equal(JSON.parse(v.stdout).digest, digest);
    // The copied bundle manifest is byte-identical to the original.
    const idx = await rawManifest(reg.url, "other/demo", `sha256-${digest.slice(7)}`);
    const orig = await rawManifest(reg.url, "vms/demo", `sha256-${digest.slice(7)}`);
    assert.deepEqual(
      idx.manifests.map((m: { digest: string }) => m.digest).sort(),
      orig.manifests.map((m: { digest: string }) => m.digest).sort(),
    );
  },
});

/** Pulls `ref`'s files and config with oras into `dir` (vmlinuz, initrd, disk0.tar, manifest.json). */
async function orasFiles(ref: string, dir: string, env: Record<string, string>) {
  await runOk("oras", ["pull", "--plain-http", "-o", dir, ref], { env });
  await runOk("oras", [
    "manifest",
    "fetch-config",
    "--plain-http",
    "-o",
    join(dir, "manifest.json"),
    ref,
  ], { env });
}

Deno.test({
  name:
    "oras push with the OVMS media types and the OVMS manifest as config is pulled and inspected by ovm",
  ...oras,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "push", "demo/vm:1.0", `${reg.host}/vms/src:1.0`), 0);
    const dir = join(home, "files");
    await orasFiles(`${reg.host}/vms/src:1.0`, dir, t.env);
    const configDigest = await fileDigest(join(dir, "manifest.json"));

    await runOk("oras", [
      "push",
      "--plain-http",
      `${reg.host}/oras/vm:1.0`,
      "--artifact-type",
      OVMS,
      "--config",
      `manifest.json:${OVMS}`,
      "vmlinuz:application/vnd.ovms.kernel.v1",
      "initrd:application/vnd.ovms.initrd.v1",
      "disk0.tar:application/vnd.oci.image.layer.v1.tar",
    ], { env: t.env, cwd: dir });

    const other = join(home, "other-home");
    const p = await ovm(other, "pull", `${reg.host}/oras/vm:1.0`, "--json");
    assertExit(p, 0);
    const i = await ovm(other, "inspect", `${reg.host}/oras/vm:1.0`, "--json");
    assertExit(i, 0);
    const info = JSON.parse(i.stdout);
    assert.deepEqual(
      info.manifest,
      JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))),
    );
    assert.equal(info.manifest.kernel.ref, await fileDigest(join(dir, "vmlinuz")));
    assert.equal(info.manifest.diskLayers[0].ref, await fileDigest(join(dir, "disk0.tar")));
    // The config blob ovm stored is the file oras pushed, byte for byte.
    const store = await ContentStore.open(other);
    assert(await store.has(configDigest));
    await assertStoreConsistent(other);
    await Deno.remove(other, { recursive: true });
  },
});

Deno.test({
  name: "oras pushes that are not OVMS artifacts are refused by ovm pull naming what is missing",
  ...oras,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "push", "demo/vm:1.0", `${reg.host}/vms/src:1.0`), 0);
    const dir = join(home, "files");
    await orasFiles(`${reg.host}/vms/src:1.0`, dir, t.env);
    const push = (tag: string, args: string[]) =>
      runOk("oras", ["push", "--plain-http", `${reg.host}/oras/bad:${tag}`, ...args], {
        env: t.env,
        cwd: dir,
      });
    // The OVMS manifest as a layer (oras's default empty config).
    await push("as-layer", [
      "--artifact-type",
      OVMS,
      `manifest.json:${OVMS}`,
      "vmlinuz:application/vnd.ovms.kernel.v1",
      "initrd:application/vnd.ovms.initrd.v1",
      "disk0.tar:application/vnd.oci.image.layer.v1.tar",
    ]);
    // The disk layer left out.
    await push("no-disk", [
      "--artifact-type",
      OVMS,
      "--config",
      `manifest.json:${OVMS}`,
      "vmlinuz:application/vnd.ovms.kernel.v1",
      "initrd:application/vnd.ovms.initrd.v1",
    ]);
    // The kernel with a generic media type.
    await push("wrong-type", [
      "--artifact-type",
      OVMS,
      "--config",
      `manifest.json:${OVMS}`,
      "vmlinuz:application/octet-stream",
      "initrd:application/vnd.ovms.initrd.v1",
      "disk0.tar:application/vnd.oci.image.layer.v1.tar",
    ]);

    const fresh = join(home, "fresh");
    const cases: [string, RegExp][] = [
      ["as-layer", /carried as a layer, not as the config[\s\S]*oras push --config manifest\.json/],
      [
        "no-disk",
        /names blob "sha256:[0-9a-f]{64}" \(application\/vnd\.oci\.image\.layer\.v1\.tar\) but no layer carries it/,
      ],
      [
        "wrong-type",
        /has media type "application\/octet-stream", expected "application\/vnd\.ovms\.kernel\.v1"/,
      ],
    ];
    for (const [tag, why] of cases) {
      const r = await ovm(fresh, "pull", `${reg.host}/oras/bad:${tag}`);
      assertExit(r, 2);
      assert.match(r.stderr, why, `${tag}: ${r.stderr}`);
      const ls = await ovm(fresh, "ls", "--json");
      assert(!ls.stdout.includes(`bad:${tag}`), `nothing recorded for ${tag}`);
    }
    await assertStoreConsistent(fresh);
  },
});
