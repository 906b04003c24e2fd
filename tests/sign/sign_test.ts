/**
 * Signing and verifying against a real docker-registry (distribution 2.8, no
 * referrers API: the bundle rides the sha256-<hex> tag index), with the
 * bundle and the legacy form read raw and checked with node:crypto.
 */
import assert from "node:assert/strict";
import { createPublicKey, createVerify } from "node:crypto";
import { join } from "node:path";
import { bundleFromJSON } from "@sigstore/bundle";
import { PolicyError } from "../../src/errors.ts";
import { type Digest, digestHex, digestOf } from "../../src/manifest/mod.ts";
import {
  copyBetween,
  openRepository,
  pushFromStore,
  referrersCapabilityOf,
  resetCapabilities,
} from "../../src/oci/mod.ts";
import {
  buildBundle,
  bundleManifest,
  copySignatures,
  EMPTY_CONFIG,
  loadPublicKey,
  loadSigningKey,
  RemoteSignatureSource,
  signatureTag,
  SignMediaTypes,
  signReference,
  verifyReference,
} from "../../src/sign/mod.ts";
import { pushAttachment } from "../../src/oci/attach.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { packDummy, startRegistry } from "../_helpers/registry.ts";
import { makeKeys, rawBlob, rawManifest } from "../_helpers/sign.ts";

const testdata = new URL("./testdata/", import.meta.url).pathname;

Deno.test("sign then verify passes by both routes, and signing a tag prints the digest signed", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "release");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);

  const s = await ovm(
    tmp.path,
    "sign",
    "--key",
    keys.privatePath,
    `${reg.host}/vms/demo:1.0`,
    "--json",
  );
  assertExit(s, 0);
  const signed = JSON.parse(s.stdout);
  assert.equal(signed.digest, digest);
  assert.equal(signed.reference, `${reg.host}/vms/demo@${digest}`);
  assert.deepEqual(signed.forms.map((f: { form: string }) => f.form), ["bundle", "cosign-legacy"]);
  assert.equal(referrersCapabilityOf(reg.host), "unsupported");

  const v = await ovm(
    tmp.path,
    "verify",
    "--key",
    keys.publicPath,
    `${reg.host}/vms/demo:1.0`,
    "--json",
  );
  assertExit(v, 0);
  const verified = JSON.parse(v.stdout);
  assert.equal(verified.digest, digest);
  assert.deepEqual(
    verified.verified.map((x: { form: string }) => x.form).sort(),
    ["bundle", "cosign-legacy"],
  );
  for (const x of verified.verified) assert.equal(x.keyFingerprint, keys.fingerprint);
  assert.deepEqual(verified.problems, []);

  const human = await ovm(tmp.path, "verify", "--key", keys.publicPath, `${reg.host}/vms/demo:1.0`);
  assertExit(human, 0);
  assert.match(human.stdout, new RegExp(`verified .*@${digest}`));
  assert.match(human.stdout, new RegExp(`bundle: key ${keys.fingerprint}`));

  // Signing again with the same key adds nothing.
  const again = await ovm(
    tmp.path,
    "sign",
    "--key",
    keys.privatePath,
    `${reg.host}/vms/demo:1.0`,
    "--json",
  );
  assertExit(again, 0);
  assert.deepEqual(JSON.parse(again.stdout).forms.map((f: { carrier: string }) => f.carrier), [
    "existing",
    "existing",
  ]);
  // A second key appends to the same .sig manifest and adds a second bundle.
  const other = await makeKeys(tmp.path, "other");
  assertExit(
    await ovm(tmp.path, "sign", "--key", other.privatePath, `${reg.host}/vms/demo:1.0`),
    0,
  );
  const sig = await rawManifest(reg.url, "vms/demo", signatureTag(digest as Digest));
  assert.equal(sig.layers.length, 2);
  const index = await rawManifest(reg.url, "vms/demo", `sha256-${digestHex(digest as Digest)}`);
  assert.equal(index.manifests.length, 2);
  for (const k of [keys, other]) {
    const r = await verifyReference(`${reg.host}/vms/demo:1.0`, [
      await loadPublicKey(k.publicPath),
    ]);
    assert.equal(r.verified.length, 2);
  }
});

Deno.test("the bundle is cosign 3's DSSE form: an in-toto statement of the digest, signed over its PAE", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  await signReference(`${reg.host}/vms/demo:1.0`, await loadSigningKey(keys.privatePath));

  // Find the bundle with plain HTTP: the fallback tag index, its manifest, the blob.
  const index = await rawManifest(reg.url, "vms/demo", `sha256-${digestHex(digest as Digest)}`);
  const entry = index.manifests.find((m: { artifactType?: string }) =>
    m.artifactType === SignMediaTypes.bundle
  );
  assert(entry, "the referrers tag index lists the bundle");
  assert.equal(entry.annotations["dev.sigstore.bundle.content"], "dsse-envelope");
  assert.equal(
    entry.annotations["dev.sigstore.bundle.predicateType"],
    "https://sigstore.dev/cosign/sign/v1",
  );
  const bm = await rawManifest(reg.url, "vms/demo", entry.digest);
  assert.equal(bm.artifactType, SignMediaTypes.bundle);
  assert.equal(bm.subject.digest, digest);
  assert.equal(bm.config.mediaType, "application/vnd.oci.empty.v1+json");
  assert.equal(bm.layers.length, 1);
  assert.equal(bm.layers[0].mediaType, SignMediaTypes.bundle);
  const bundleJson = JSON.parse(new TextDecoder().decode(
    await rawBlob(reg.url, "vms/demo", bm.layers[0].digest),
  ));
  assert.equal(bundleJson.mediaType, "application/vnd.dev.sigstore.bundle.v0.3+json");
  const manifestBytes = new Uint8Array(
    await (await fetch(`${reg.url}/v2/vms/demo/manifests/${digest}`, {
      headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
    })).arrayBuffer(),
  );
  assert.equal(digestOf(manifestBytes), digest);

  // The bundle parses with @sigstore/bundle. (@sigstore/verify cannot check a
  // DSSE signature under Deno: it calls crypto.verify with no digest, which
  // Deno's node:crypto refuses for EC keys. The real cosign checks it in
  // tests/interop/cosign_test.ts.) Here the PAE and signature are checked
  // with node:crypto, independently of ovm's code.
  const bundle = bundleFromJSON(bundleJson);
  assert.equal(bundle.content.$case, "dsseEnvelope");
  const env = bundleJson.dsseEnvelope;
  assert.equal(env.payloadType, "application/vnd.in-toto+json");
  assert.equal(env.signatures.length, 1);
  assert.equal(env.signatures[0].keyid, undefined, "cosign's verifier skips foreign keyids");
  const payload = Buffer.from(env.payload, "base64");
  const pae = Buffer.concat([
    Buffer.from(`DSSEv1 ${env.payloadType.length} ${env.payloadType} ${payload.length} `),
    payload,
  ]);
  const pem = await Deno.readTextFile(keys.publicPath);
  const check = (data: Buffer) =>
    createVerify("SHA256").update(data).verify(
      createPublicKey(pem),
      Buffer.from(env.signatures[0].sig, "base64"),
    );
  assert(check(pae), "the DSSE signature is over the PAE of the statement");
  assert(!check(Buffer.concat([pae, Buffer.from(" ")])));
  // cosign's hint: base64 of SHA-256 over the PKIX DER.
  const spkiHex = keys.fingerprint.slice("sha256:".length);
  assert.equal(
    bundleJson.verificationMaterial.publicKey.hint,
    Buffer.from(spkiHex, "hex").toString("base64"),
  );
  // The statement names the manifest digest, as cosign 3 writes it.
  assert.deepEqual(JSON.parse(payload.toString("utf8")), {
    _type: "https://in-toto.io/Statement/v1",
    subject: [{ digest: { sha256: digestHex(digest as Digest) }, annotations: {} }],
    predicateType: "https://sigstore.dev/cosign/sign/v1",
    predicate: {},
  });
});

Deno.test("the legacy signature has cosign's simple-signing structure at sha256-<hex>.sig", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  assertExit(
    await ovm(
      tmp.path,
      "sign",
      "--key",
      keys.privatePath,
      "-a",
      "team=vm",
      `${reg.host}/vms/demo:1.0`,
    ),
    0,
  );
  const sig = await rawManifest(reg.url, "vms/demo", `sha256-${digestHex(digest as Digest)}.sig`);
  assert.equal(sig.mediaType, "application/vnd.oci.image.manifest.v1+json");
  assert.equal(sig.config.mediaType, "application/vnd.oci.image.config.v1+json");
  assert.equal(sig.layers.length, 1);
  const layer = sig.layers[0];
  assert.equal(layer.mediaType, "application/vnd.dev.cosign.simplesigning.v1+json");
  const payloadBytes = await rawBlob(reg.url, "vms/demo", layer.digest);
  const payload = JSON.parse(new TextDecoder().decode(payloadBytes));
  assert.deepEqual(Object.keys(payload), ["critical", "optional"]);
  assert.deepEqual(Object.keys(payload.critical), ["identity", "image", "type"]);
  assert.deepEqual(payload.critical, {
    identity: { "docker-reference": `${reg.host}/vms/demo` },
    image: { "docker-manifest-digest": digest },
    type: "cosign container image signature",
  });
  assert.equal(payload.optional.team, "vm");
  const config = JSON.parse(
    new TextDecoder().decode(await rawBlob(reg.url, "vms/demo", sig.config.digest)),
  );
  assert.deepEqual(config.rootfs, { type: "layers", diff_ids: [layer.digest] });
  // The annotation is base64 DER ECDSA over the payload bytes, checked with node:crypto.
  const { createVerify } = await import("node:crypto");
  const ver = createVerify("SHA256");
  ver.update(payloadBytes);
  assert(ver.verify(
    await Deno.readTextFile(keys.publicPath),
    Buffer.from(layer.annotations["dev.cosignproject.cosign/signature"], "base64"),
  ));
});

Deno.test("verify refuses a wrong key, an unsigned artifact and a manifest tampered in the registry", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  const wrong = await makeKeys(tmp.path, "wrong");
  const store = await ContentStore.open(tmp.path);
  await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  await packDummy(tmp.path, "demo/unsigned:1.0", { seed: 9 });
  await pushFromStore(store, "demo/unsigned:1.0", `${reg.host}/vms/unsigned:1.0`);
  await signReference(`${reg.host}/vms/demo:1.0`, await loadSigningKey(keys.privatePath));

  const w = await ovm(tmp.path, "verify", "--key", wrong.publicPath, `${reg.host}/vms/demo:1.0`);
  assertExit(w, 1);
  assert.match(w.stderr, /No valid signature by a trusted key/);
  assert.match(w.stderr, /does not verify with any trusted key/);

  const u = await ovm(tmp.path, "verify", "--key", keys.publicPath, `${reg.host}/vms/unsigned:1.0`);
  assertExit(u, 1);
  assert.match(u.stderr, /no signature found/);

  // Flip a byte of the stored manifest on the registry's disk: same name, other bytes.
  const hex = digestHex(digest as Digest);
  const data = join(reg.dir, "data/docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
  const bytes = await Deno.readFile(data);
  const text = new TextDecoder().decode(bytes).replace("{", "{ ");
  await Deno.writeFile(data, new TextEncoder().encode(text));
  const t = await ovm(
    tmp.path,
    "verify",
    "--key",
    keys.publicPath,
    `${reg.host}/vms/demo@${digest}`,
  );
  assert.notEqual(t.code, 0, t.stdout);
  assert.match(t.stderr, /Digest mismatch/);
});

Deno.test("a signature copied from another digest is refused as a replay", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const a = await packDummy(tmp.path, "demo/a:1.0");
  const b = await packDummy(tmp.path, "demo/b:1.0", { seed: 7 });
  const keys = await makeKeys(tmp.path, "k");
  const store = await ContentStore.open(tmp.path);
  await pushFromStore(store, "demo/a:1.0", `${reg.host}/vms/demo:a`);
  await pushFromStore(store, "demo/b:1.0", `${reg.host}/vms/demo:b`);
  await signReference(`${reg.host}/vms/demo:a`, await loadSigningKey(keys.privatePath));

  // The attacker re-attaches a's bundle to b (subject rewritten) and copies a's .sig to b's tag.
  const repo = openRepository(`${reg.host}/vms/demo`);
  const src = new RemoteSignatureSource(repo);
  const [bundleM] = await src.bundleManifests(a.digest as Digest);
  const bDesc = (await repo.fetchManifest(b.digest)).descriptor;
  await pushAttachment(repo, { ...bundleM.manifest, subject: bDesc });
  const sigM = await repo.fetchManifest(signatureTag(a.digest as Digest));
  await repo.pushManifest(signatureTag(b.digest as Digest), sigM.bytes, sigM.descriptor.mediaType);

  const err = await verifyReference(`${reg.host}/vms/demo:b`, [
    await loadPublicKey(keys.publicPath),
  ])
    .then(() => undefined, (e) => e);
  assert(err instanceof PolicyError, String(err));
  const replays = err.message.split("\n").filter((l) => /replayed from another artifact/.test(l));
  assert.equal(replays.length, 2, err.message);
  assert(err.message.includes(`signs "${a.digest}", not "${b.digest}"`));
  // a itself still verifies.
  await verifyReference(`${reg.host}/vms/demo:a`, [await loadPublicKey(keys.publicPath)]);
});

Deno.test("a signed artifact copied to another repository still verifies", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  // The cosign fixture key (password "123") signs.
  const key = await loadSigningKey(join(testdata, "cosign_ecdsa_encrypted.key"), {
    passphrase: "123",
  });
  await signReference(`${reg.host}/vms/demo:1.0`, key);

  await copyBetween(`${reg.host}/vms/demo:1.0`, `${reg.host}/mirror/demo:1.0`);
  const from = new RemoteSignatureSource(openRepository(`${reg.host}/vms/demo`));
  const to = new RemoteSignatureSource(openRepository(`${reg.host}/mirror/demo`));
  assert.equal(await copySignatures(from, to, digest as Digest), 2);
  // Copying again adds nothing new to the .sig manifest.
  await copySignatures(from, to, digest as Digest);
  assert.equal(
    (await rawManifest(reg.url, "mirror/demo", signatureTag(digest as Digest))).layers.length,
    1,
  );

  const r = await verifyReference(`${reg.host}/mirror/demo:1.0`, [key.publicKey]);
  assert.equal(r.digest, digest);
  assert.deepEqual(r.verified.map((v) => v.form).sort(), ["bundle", "cosign-legacy"]);
  // The payload still names the repository it was signed in; verification is by digest.
  assert.deepEqual(r.problems, []);
});

Deno.test("a local artifact is signed in the store, verified there, and its signatures pushed along", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  const s = await ovm(tmp.path, "sign", "--key", keys.privatePath, "demo/vm:1.0", "--json");
  assertExit(s, 0);
  assert.equal(JSON.parse(s.stdout).target, "local");
  const v = await ovm(tmp.path, "verify", "--key", keys.publicPath, "demo/vm:1.0", "--json");
  assertExit(v, 0);
  assert.equal(JSON.parse(v.stdout).verified.length, 2);

  // `ovm push` carries them to the registry.
  assertExit(await ovm(tmp.path, "push", "demo/vm:1.0", `${reg.host}/vms/demo:1.0`), 0);
  assert.equal(
    (await rawManifest(reg.url, "vms/demo", signatureTag(digest as Digest))).layers.length,
    1,
  );
  const r = await verifyReference(`${reg.host}/vms/demo:1.0`, [
    await loadPublicKey(keys.publicPath),
  ]);
  assert.equal(r.verified.length, 2);
});

Deno.test("ovm copy carries the signatures along, so the copy verifies", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  const key = await loadSigningKey(join(testdata, "cosign_ecdsa_encrypted.key"), {
    passphrase: "123",
  });
  await signReference(`${reg.host}/vms/demo:1.0`, key);
  const r = await ovm(
    tmp.path,
    "copy",
    `${reg.host}/vms/demo:1.0`,
    `${reg.host}/copy/demo:1.0`,
    "--json",
  );
  assertExit(r, 0);
  assert.equal(JSON.parse(r.stdout).signatures, 2);
  const v = await verifyReference(`${reg.host}/copy/demo:1.0`, [key.publicKey]);
  assert.equal(v.digest, digest);
  // With --no-signatures the copy is unsigned.
  const r2 = await ovm(
    tmp.path,
    "copy",
    `${reg.host}/vms/demo:1.0`,
    `${reg.host}/bare/demo:1.0`,
    "--no-signatures",
    "--json",
  );
  assertExit(r2, 0);
  assert.equal(JSON.parse(r2.stdout).signatures, 0);
  await assert.rejects(verifyReference(`${reg.host}/bare/demo:1.0`, [key.publicKey]));
});

Deno.test("a message-signature bundle (ovm's earlier form) still verifies, and signing again adds the DSSE form", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  const key = await loadSigningKey(keys.privatePath);
  const source = new RemoteSignatureSource(openRepository(`${reg.host}/vms/demo`));
  const m = await source.manifest(digest);
  const bundle = buildBundle(digest as Digest, await key.sign(m.bytes), "");
  const { manifest } = bundleManifest(m.descriptor, bundle, {
    created: "2026-01-01T00:00:00Z",
    content: "message-signature",
  });
  await source.attach(manifest, [EMPTY_CONFIG, bundle]);

  const r = await verifyReference(`${reg.host}/vms/demo:1.0`, [key.publicKey]);
  assert.deepEqual(r.verified.map((v) => [v.form, v.content]), [["bundle", "message-signature"]]);
  const s = await signReference(`${reg.host}/vms/demo:1.0`, key);
  assert.notEqual(s.forms.find((f) => f.form === "bundle")?.carrier, "existing");
  const again = await verifyReference(`${reg.host}/vms/demo:1.0`, [key.publicKey]);
  assert.deepEqual(
    again.verified.filter((v) => v.form === "bundle").map((v) => v.content).sort(),
    ["dsse-envelope", "message-signature"],
  );
});
