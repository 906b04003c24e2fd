/**
 * cosign 3.1 (the real binary) and ovm against a real docker-registry 2.8
 * (no referrers API: bundles ride the sha256-<hex> tag index), both ways and
 * in both signature forms: the Sigstore bundle (DSSE, cosign 3's default) and
 * the legacy `.sig` tag (`--new-bundle-format=false`). Offline: no
 * transparency log, no TUF fetch.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Digest } from "../../src/manifest/mod.ts";
import { openRepository, pushFromStore, resetCapabilities } from "../../src/oci/mod.ts";
import { pushAttachment } from "../../src/oci/attach.ts";
import { RemoteSignatureSource, signatureTag } from "../../src/sign/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { packDummy, startRegistry } from "../_helpers/registry.ts";
import { needs, run, runOk, toolEnv } from "../_helpers/tools.ts";

const cosign = await needs("cosign");
const PASS = "interop-pass";
// ovm runs in-process and reads passphrases from this process's environment.
Deno.env.set("OVM_INTEROP_PASS", PASS);

/** `cosign sign --key` offline, in the bundle form (default) or the legacy `.sig` form. */
function cosignSign(key: string, ref: string, legacy: boolean, env: Record<string, string>) {
  return runOk("cosign", [
    "sign",
    "--key",
    key,
    "--use-signing-config=false",
    "--tlog-upload=false",
    ...(legacy ? ["--new-bundle-format=false"] : []),
    "--allow-http-registry",
    "-y",
    ref,
  ], { env: { ...env, COSIGN_PASSWORD: PASS } });
}

/** `cosign verify --key` offline; the legacy form needs `--new-bundle-format=false`. */
function cosignVerify(pub: string, ref: string, legacy: boolean, env: Record<string, string>) {
  return run("cosign", [
    "verify",
    "--key",
    pub,
    "--insecure-ignore-tlog",
    ...(legacy ? ["--new-bundle-format=false"] : []),
    "--allow-http-registry",
    ref,
  ], { env });
}

async function ovmVerify(home: string, pub: string, ref: string) {
  const r = await ovm(home, "verify", "--key", pub, ref, "--json");
  return { ...r, json: r.code === 0 ? JSON.parse(r.stdout) : undefined };
}

async function writePolicy(dir: string, pub: string): Promise<string> {
  const file = join(dir, "policy.json");
  await Deno.writeTextFile(
    file,
    JSON.stringify({ version: 1, default: "deny", rules: [{ match: "**", keys: [pub] }] }),
  );
  return file;
}

Deno.test({
  name: "ovm sign output verifies with cosign verify --key in the bundle and the legacy form",
  ...cosign,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const { digest } = await packDummy(home, "demo/vm:1.0");
    assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "ovm")), 0);
    const pub = join(home, "ovm.pub");
    // Signed in the registry by ovm.
    assertExit(await ovm(home, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`), 0);
    assertExit(
      await ovm(home, "sign", "--key", join(home, "ovm.key"), `${reg.host}/vms/demo:1.0`),
      0,
    );
    for (const legacy of [false, true]) {
      const v = await cosignVerify(pub, `${reg.host}/vms/demo:1.0`, legacy, t.env);
      assert.equal(v.code, 0, `cosign verify (legacy=${legacy}): ${v.stderr}`);
      const claims = JSON.parse(v.stdout);
      assert.equal(claims[0].critical.image["docker-manifest-digest"], digest);
    }
    // Signed in the local store, then pushed: the signatures travel and cosign reads them.
    await packDummy(home, "demo/local:1.0", { seed: 5 });
    assertExit(await ovm(home, "sign", "--key", join(home, "ovm.key"), "demo/local:1.0"), 0);
    assertExit(await ovm(home, "push", "demo/local:1.0", `${reg.host}/vms/local:1.0`), 0);
    for (const legacy of [false, true]) {
      const v = await cosignVerify(pub, `${reg.host}/vms/local:1.0`, legacy, t.env);
      assert.equal(v.code, 0, `cosign verify of a pushed local signature: ${v.stderr}`);
    }
    // Another key does not verify (cosign is really checking).
    assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "other")), 0);
    for (const legacy of [false, true]) {
      const v = await cosignVerify(
        join(home, "other.pub"),
        `${reg.host}/vms/demo:1.0`,
        legacy,
        t.env,
      );
      assert.notEqual(v.code, 0, "cosign verify with a foreign key must fail");
    }
  },
});

for (const keyKind of ["cosign generate-key-pair", "ovm keygen --format cosign"] as const) {
  Deno.test({
    name:
      `cosign sign --key (${keyKind}) in both forms verifies with ovm verify and passes ovm policy`,
    ...cosign,
    async fn() {
      resetCapabilities();
      await using reg = await startRegistry();
      await using tmp = await tempDir();
      await using t = await toolEnv();
      const home = tmp.path;
      const prefix = join(home, "signer");
      if (keyKind === "cosign generate-key-pair") {
        await runOk("cosign", ["generate-key-pair", "--output-key-prefix", prefix], {
          env: { ...t.env, COSIGN_PASSWORD: PASS },
        });
      } else {
        const r = await ovm(
          home,
          "keygen",
          "--output-key-prefix",
          prefix,
          "--format",
          "cosign",
          "--passphrase-env",
          "OVM_INTEROP_PASS",
        );
        assertExit(r, 0);
      }
      const store = await ContentStore.open(home);
      const a = await packDummy(home, "demo/a:1.0", { seed: 1 });
      const b = await packDummy(home, "demo/b:1.0", { seed: 2 });
      await pushFromStore(store, "demo/a:1.0", `${reg.host}/vms/bundle:1.0`);
      await pushFromStore(store, "demo/b:1.0", `${reg.host}/vms/legacy:1.0`);
      await cosignSign(`${prefix}.key`, `${reg.host}/vms/bundle@${a.digest}`, false, t.env);
      await cosignSign(`${prefix}.key`, `${reg.host}/vms/legacy@${b.digest}`, true, t.env);

      const vb = await ovmVerify(home, `${prefix}.pub`, `${reg.host}/vms/bundle:1.0`);
      assertExit(vb, 0);
      assert.equal(vb.json.digest, a.digest);
      assert.deepEqual(
        vb.json.verified.map((v: { form: string; content?: string }) => [v.form, v.content]),
        [["bundle", "dsse-envelope"]],
      );
      // cosign's tag-index entry says the empty type; ovm referrers reports the manifest's own.
      const refs = await ovm(home, "referrers", `${reg.host}/vms/bundle:1.0`, "--json");
      assertExit(refs, 0);
      assert.deepEqual(
        JSON.parse(refs.stdout).referrers.map((r: { artifactType: string }) => r.artifactType),
        ["application/vnd.dev.sigstore.bundle.v0.3+json"],
      );
      const vl = await ovmVerify(home, `${prefix}.pub`, `${reg.host}/vms/legacy:1.0`);
      assertExit(vl, 0);
      assert.deepEqual(vl.json.verified.map((v: { form: string }) => v.form), ["cosign-legacy"]);

      const policy = await writePolicy(home, `${prefix}.pub`);
      for (const repo of ["bundle", "legacy"]) {
        const p = await ovm(
          home,
          "policy",
          "check",
          "--policy",
          policy,
          `${reg.host}/vms/${repo}:1.0`,
        );
        assertExit(p, 0);
        assert.match(p.stdout, /allow/);
        // And `ovm pull` under that policy takes it.
        assertExit(
          await ovm(home, "pull", "--policy", policy, `${reg.host}/vms/${repo}:1.0`, "-q"),
          0,
        );
      }
      // Unsigned, the policy refuses.
      await packDummy(home, "demo/c:1.0", { seed: 3 });
      await pushFromStore(store, "demo/c:1.0", `${reg.host}/vms/unsigned:1.0`);
      const deny = await ovm(
        home,
        "policy",
        "check",
        "--policy",
        policy,
        `${reg.host}/vms/unsigned:1.0`,
      );
      assertExit(deny, 1);
    },
  });
}

Deno.test({
  name:
    "a signature for digest A attached to digest B is refused by cosign and ovm alike, in both forms",
  ...cosign,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const store = await ContentStore.open(home);
    const a = await packDummy(home, "demo/a:1.0", { seed: 1 });
    const b = await packDummy(home, "demo/b:1.0", { seed: 2 });
    await pushFromStore(store, "demo/a:1.0", `${reg.host}/vms/demo:a`);
    await pushFromStore(store, "demo/b:1.0", `${reg.host}/vms/demo:b`);
    const prefix = join(home, "cs");
    await runOk("cosign", ["generate-key-pair", "--output-key-prefix", prefix], {
      env: { ...t.env, COSIGN_PASSWORD: PASS },
    });
    // A is signed by cosign (both forms) and by ovm (both forms), with the same key.
    await cosignSign(`${prefix}.key`, `${reg.host}/vms/demo@${a.digest}`, false, t.env);
    await cosignSign(`${prefix}.key`, `${reg.host}/vms/demo@${a.digest}`, true, t.env);
    assertExit(
      await ovm(
        home,
        "sign",
        "--key",
        `${prefix}.key`,
        "--passphrase-env",
        "OVM_INTEROP_PASS",
        `${reg.host}/vms/demo:a`,
      ),
      0,
    );

    // The attacker re-attaches every bundle of A to B (subject rewritten) and copies A's .sig.
    const repo = openRepository(`${reg.host}/vms/demo`);
    const src = new RemoteSignatureSource(repo);
    const bDesc = (await repo.fetchManifest(b.digest)).descriptor;
    const bundles = await src.bundleManifests(a.digest as Digest);
    assert(bundles.length >= 1);
    for (const m of bundles) await pushAttachment(repo, { ...m.manifest, subject: bDesc });
    const sigA = await repo.fetchManifest(signatureTag(a.digest as Digest));
    await repo.pushManifest(
      signatureTag(b.digest as Digest),
      sigA.bytes,
      sigA.descriptor.mediaType,
    );

    for (const legacy of [false, true]) {
      const okA = await cosignVerify(`${prefix}.pub`, `${reg.host}/vms/demo:a`, legacy, t.env);
      assert.equal(okA.code, 0, okA.stderr);
      const badB = await cosignVerify(`${prefix}.pub`, `${reg.host}/vms/demo:b`, legacy, t.env);
      assert.notEqual(badB.code, 0, `cosign accepted a replayed signature (legacy=${legacy})`);
    }
    assertExit(await ovmVerify(home, `${prefix}.pub`, `${reg.host}/vms/demo:a`), 0);
    const vb = await ovmVerify(home, `${prefix}.pub`, `${reg.host}/vms/demo:b`);
    assertExit(vb, 1);
    const replays = vb.stderr.split("\n").filter((l) => /replayed from another artifact/.test(l));
    assert(replays.length >= bundles.length + 1, vb.stderr);
    const policy = await writePolicy(home, `${prefix}.pub`);
    assertExit(await ovm(home, "policy", "check", "--policy", policy, `${reg.host}/vms/demo:b`), 1);
  },
});

Deno.test({
  name:
    "a tag moved after signing is refused by cosign and ovm alike; the signed digest still verifies",
  ...cosign,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using tmp = await tempDir();
    await using t = await toolEnv();
    const home = tmp.path;
    const store = await ContentStore.open(home);
    const a = await packDummy(home, "demo/a:1.0", { seed: 1 });
    await packDummy(home, "demo/b:1.0", { seed: 2 });
    assertExit(await ovm(home, "keygen", "--output-key-prefix", join(home, "k")), 0);
    await pushFromStore(store, "demo/a:1.0", `${reg.host}/vms/demo:1.0`);
    assertExit(
      await ovm(home, "sign", "--key", join(home, "k.key"), `${reg.host}/vms/demo:1.0`),
      0,
    );
    // The tag now names another manifest.
    await pushFromStore(store, "demo/b:1.0", `${reg.host}/vms/demo:1.0`);
    const pub = join(home, "k.pub");
    for (const legacy of [false, true]) {
      const moved = await cosignVerify(pub, `${reg.host}/vms/demo:1.0`, legacy, t.env);
      assert.notEqual(moved.code, 0, `cosign accepted a moved tag (legacy=${legacy})`);
      const pinned = await cosignVerify(pub, `${reg.host}/vms/demo@${a.digest}`, legacy, t.env);
      assert.equal(pinned.code, 0, pinned.stderr);
    }
    const vm = await ovmVerify(home, pub, `${reg.host}/vms/demo:1.0`);
    assertExit(vm, 1);
    assert.match(vm.stderr, /no signature found/);
    assertExit(await ovmVerify(home, pub, `${reg.host}/vms/demo@${a.digest}`), 0);
    const policy = await writePolicy(home, pub);
    assertExit(
      await ovm(home, "policy", "check", "--policy", policy, `${reg.host}/vms/demo:1.0`),
      1,
    );
  },
});
