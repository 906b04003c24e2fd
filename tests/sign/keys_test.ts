/**
 * Key pairs: `ovm keygen` output (modes, PEM labels, encryption), cosign's
 * encrypted key format (public fixtures from sigstore-rs, see testdata/README.md),
 * and the DER signature encoding cosign exchanges.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodePem,
  derToP1363,
  encodePem,
  generateKeyPair,
  loadPublicKey,
  loadSigningKey,
  p1363ToDer,
  parseSigningKey,
  verifySignature,
} from "../../src/sign/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";

const testdata = new URL("./testdata/", import.meta.url).pathname;
const msg = new TextEncoder().encode("what is signed");

Deno.test("keygen writes a 0600 PKCS#8 private key and a PKIX public key that sign and verify", async () => {
  await using tmp = await tempDir();
  const r = await ovm(tmp.path, "keygen", "--output-key-prefix", join(tmp.path, "k"), "--json");
  assertExit(r, 0);
  const out = JSON.parse(r.stdout);
  assert.equal((await Deno.stat(out.privatePath)).mode! & 0o777, 0o600);
  assert.equal(decodePem(await Deno.readTextFile(out.privatePath))[0].label, "PRIVATE KEY");
  assert.equal(decodePem(await Deno.readTextFile(out.publicPath))[0].label, "PUBLIC KEY");
  const key = await loadSigningKey(out.privatePath);
  const pub = await loadPublicKey(out.publicPath);
  assert.equal(key.publicKey.fingerprint, pub.fingerprint);
  assert.equal(out.fingerprint, pub.fingerprint);
  assert(await verifySignature(pub, await key.sign(msg), msg));
  // Never overwrites.
  const again = await ovm(tmp.path, "keygen", "--output-key-prefix", join(tmp.path, "k"));
  assertExit(again, 2);
  assert.match(again.stderr, /already exists/);
});

Deno.test("keygen encrypts with the passphrase from --passphrase-env, in PKCS#8 or cosign format", async () => {
  await using tmp = await tempDir();
  for (const format of ["pkcs8", "cosign"]) {
    const prefix = join(tmp.path, format);
    const stdout = { writeSync: (p: Uint8Array) => p.byteLength, isTerminal: () => false };
    const { runCli } = await import("../../src/cli/app.ts");
    const code = await runCli(
      [
        "keygen",
        "--output-key-prefix",
        prefix,
        "--passphrase-env",
        "PW",
        "--format",
        format,
        "--home",
        tmp.path,
      ],
      { stdout, stderr: stdout, env: { get: (k: string) => (k === "PW" ? "s3cret" : undefined) } },
    );
    assert.equal(code, 0);
    const text = await Deno.readTextFile(`${prefix}.key`);
    assert.equal(
      decodePem(text)[0].label,
      format === "pkcs8" ? "ENCRYPTED PRIVATE KEY" : "ENCRYPTED SIGSTORE PRIVATE KEY",
    );
    await assert.rejects(() => parseSigningKey(text, { passphrase: "wrong" }), /wrong passphrase/);
    const key = await parseSigningKey(text, { passphrase: "s3cret" });
    const pub = await loadPublicKey(`${prefix}.pub`);
    assert(await verifySignature(pub, await key.sign(msg), msg));
  }
});

Deno.test("keys made by cosign generate-key-pair open with their passwords", async () => {
  // ENCRYPTED COSIGN PRIVATE KEY, password "123" (older label, N=32768).
  const older = await loadSigningKey(join(testdata, "cosign_ecdsa_encrypted.key"), {
    passphrase: "123",
  });
  // ENCRYPTED SIGSTORE PRIVATE KEY made by cosign with an empty password (N=65536).
  const newer = await loadSigningKey(join(testdata, "cosign_generated_empty_password.key"), {
    passphrase: "",
  });
  for (const k of [older, newer]) {
    assert(await verifySignature(k.publicKey, await k.sign(msg), msg));
  }
  await assert.rejects(
    () => loadSigningKey(join(testdata, "cosign_ecdsa_encrypted.key"), { passphrase: "1234" }),
    (e) => e instanceof ValidationError && /wrong passphrase/.test(e.message),
  );
});

Deno.test("signatures are exchanged as ASN.1 DER and round-trip to r||s", async () => {
  const pair = await generateKeyPair();
  const key = await parseSigningKey(pair.privatePem);
  for (let i = 0; i < 20; i++) {
    const der = await key.sign(msg);
    assert.equal(der[0], 0x30);
    const raw = derToP1363(der);
    assert.deepEqual(p1363ToDer(raw), der);
  }
  // High bits and leading zeros.
  const raw = new Uint8Array(64);
  raw[0] = 0x80;
  raw[33] = 0x01;
  assert.deepEqual(derToP1363(p1363ToDer(raw)), raw);
});

Deno.test("ovm sign reads a cosign key's password from COSIGN_PASSWORD or --passphrase-env", async () => {
  await using tmp = await tempDir();
  const { packDummy } = await import("../_helpers/registry.ts");
  const { runCli } = await import("../../src/cli/app.ts");
  await packDummy(tmp.path, "demo/vm:1.0");
  const sink = () => {
    const chunks: string[] = [];
    return {
      chunks,
      writeSync: (p: Uint8Array) => (chunks.push(new TextDecoder().decode(p)), p.byteLength),
      isTerminal: () => false,
    };
  };
  const run = async (args: string[], env: Record<string, string>) => {
    const out = sink();
    const err = sink();
    const code = await runCli([...args, "--home", tmp.path], {
      stdout: out,
      stderr: err,
      env: { get: (k: string) => env[k] },
    });
    return { code, stdout: out.chunks.join(""), stderr: err.chunks.join("") };
  };
  const key = join(testdata, "cosign_ecdsa_encrypted.key");
  const missing = await run(["sign", "--key", key, "demo/vm:1.0"], {});
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /encrypted|wrong passphrase/);
  const viaEnv = await run(["sign", "--key", key, "demo/vm:1.0", "--json"], {
    COSIGN_PASSWORD: "123",
  });
  assert.equal(viaEnv.code, 0, viaEnv.stderr);
  const signed = JSON.parse(viaEnv.stdout);
  const pub = (await loadSigningKey(key, { passphrase: "123" })).publicKey;
  assert.equal(signed.keyFingerprint, pub.fingerprint);
  const pubPath = join(tmp.path, "cosign.pub");
  await Deno.writeTextFile(pubPath, encodePem("PUBLIC KEY", pub.spki));
  const verified = await run(["verify", "--key", pubPath, "demo/vm:1.0", "--json"], {});
  assert.equal(verified.code, 0, verified.stderr);
  assert.equal(JSON.parse(verified.stdout).verified.length, 2);
  const named = await run(["sign", "--key", key, "--passphrase-env", "NOPE", "demo/vm:1.0"], {});
  assert.equal(named.code, 2);
  assert.match(named.stderr, /"NOPE" is not set/);
});
