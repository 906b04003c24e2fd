/**
 * The admission policy: rules by repository glob, snapshot signatures,
 * defaults for unmatched repositories, bad policy files, and enforcement in
 * `ovm pull` and `ovm run` (nothing fetched, nothing started when refused).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { pullToStore, pushFromStore, resetCapabilities } from "../../src/oci/mod.ts";
import {
  checkAdmission,
  enforcePolicy,
  globToRegExp,
  loadSigningKey,
  matchRule,
  parsePolicy,
  signReference,
} from "../../src/sign/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { assertExit, listFiles, ovm, tempDir } from "../_helpers/cli.ts";
import { packDummy, startRegistry } from "../_helpers/registry.ts";
import { makeKeys, packWithSnapshot } from "../_helpers/sign.ts";

async function writePolicy(dir: string, doc: unknown, name = "policy.json"): Promise<string> {
  const p = join(dir, name);
  await Deno.writeTextFile(p, typeof doc === "string" ? doc : JSON.stringify(doc, null, 2));
  return p;
}

Deno.test("globs match within a segment with * and across segments with **", () => {
  assert(globToRegExp("127.0.0.1:5000/vms/*").test("127.0.0.1:5000/vms/demo"));
  assert(!globToRegExp("127.0.0.1:5000/vms/*").test("127.0.0.1:5000/vms/team/demo"));
  assert(globToRegExp("127.0.0.1:5000/**").test("127.0.0.1:5000/vms/team/demo"));
  assert(!globToRegExp("example.com/vms/*").test("exampleXcom/vms/demo"));
  assert(globToRegExp("demo/v?").test("demo/vm"));
});

Deno.test("an unsigned RAM snapshot is refused where snapshot signatures are required, and pulled once signed", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const packer = join(tmp.path, "packer");
  const { digest, snapDigest } = await packWithSnapshot(packer, "demo/vm:1.0", "demo/vm:snap");
  const src = await ContentStore.open(packer);
  await pushFromStore(src, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
  await pushFromStore(src, "demo/vm:snap", `${reg.host}/vms/demo:snap`);
  const keys = await makeKeys(tmp.path, "k");
  const policyFile = await writePolicy(tmp.path, {
    version: 1,
    default: "deny",
    rules: [{
      match: `${reg.host}/vms/*`,
      keys: ["k.pub"], // relative to the policy file
      requireSignature: false,
      requireSnapshotSignature: true,
    }],
  });
  const policy = (await parsePolicy(await Deno.readFile(policyFile), policyFile))!;

  const plain = await checkAdmission(`${reg.host}/vms/demo:1.0`, { policy, kind: "pull" });
  assert.equal(plain.decision, "allow");
  assert.equal(plain.digest, digest);
  assert.equal(plain.snapshot, false);
  const snap = await checkAdmission(`${reg.host}/vms/demo:snap`, { policy, kind: "pull" });
  assert.equal(snap.decision, "deny");
  assert.equal(snap.digest, snapDigest);
  assert.equal(snap.snapshot, true);
  assert.match(snap.reasons.join("\n"), /requires a signature on artifacts with a RAM snapshot/);

  // The CLI refuses it and fetches nothing.
  const home = join(tmp.path, "home");
  const r = await ovm(home, "pull", "--policy", policyFile, `${reg.host}/vms/demo:snap`);
  assertExit(r, 1);
  assert.match(r.stderr, /Policy refuses to pull/);
  assert.deepEqual(await listFiles(join(home, "store", "blobs")), []);

  // Signed, it pulls; the signatures come along so `run` can check them locally.
  await signReference(`${reg.host}/vms/demo:snap`, await loadSigningKey(keys.privatePath));
  assertExit(await ovm(home, "pull", "--policy", policyFile, `${reg.host}/vms/demo:snap`), 0);
  const check = await ovm(
    home,
    "policy",
    "check",
    "--policy",
    policyFile,
    "--for",
    "run",
    `${reg.host}/vms/demo:snap`,
    "--json",
  );
  assertExit(check, 0);
  const decided = JSON.parse(check.stdout);
  assert.equal(decided.decision, "allow");
  assert.equal(decided.checked, "local store");
  assert.equal(decided.digest, snapDigest);
  assert.equal(decided.verified.length, 2);
});

Deno.test("the digest checked is the digest pulled, even when the tag moves afterwards", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  const a = await packDummy(tmp.path, "demo/a:1.0");
  await packDummy(tmp.path, "demo/b:1.0", { seed: 4 });
  const store = await ContentStore.open(tmp.path);
  await pushFromStore(store, "demo/a:1.0", `${reg.host}/vms/demo:1.0`);
  const keys = await makeKeys(tmp.path, "k");
  await signReference(`${reg.host}/vms/demo:1.0`, await loadSigningKey(keys.privatePath));
  const policyFile = await writePolicy(tmp.path, {
    version: 1,
    rules: [{ match: `${reg.host}/**`, keys: [keys.publicPath] }],
  });
  const home = join(tmp.path, "home");
  const admitted = await enforcePolicy(`${reg.host}/vms/demo:1.0`, {
    kind: "pull",
    home,
    policyFile,
  });
  assert.equal(admitted?.digest, a.digest);
  // The tag now names unsigned content; the admitted pull still gets what was checked.
  await pushFromStore(store, "demo/b:1.0", `${reg.host}/vms/demo:1.0`);
  const pulled = await pullToStore(await ContentStore.open(home), admitted!.pinned, {
    localRef: admitted!.localRef,
  });
  assert.equal(pulled.descriptor.digest, a.digest);
  assert.equal(pulled.localRef, `${reg.host}/vms/demo:1.0`);
  // And a fresh pull of the moved tag is refused.
  const r = await ovm(home, "pull", "--policy", policyFile, `${reg.host}/vms/demo:1.0`);
  assertExit(r, 1);
  assert.match(r.stderr, /no signature found|no valid signature/i);
});

Deno.test("repositories no rule matches get the default: deny, warn or allow", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  await packDummy(tmp.path, "demo/vm:1.0");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/other/vm:1.0`);
  const keys = await makeKeys(tmp.path, "k");
  for (const dflt of ["deny", "warn", "allow"] as const) {
    const policy = await parsePolicy(
      JSON.stringify({
        version: 1,
        default: dflt,
        rules: [{ match: "registry.example/**", keys: [await Deno.readTextFile(keys.publicPath)] }],
      }),
      join(tmp.path, "inline.json"),
    );
    const res = await checkAdmission(`${reg.host}/other/vm:1.0`, { policy, kind: "pull" });
    assert.equal(res.decision, dflt);
    assert.equal(res.rule, -1);
    assert.match(
      res.reasons[0],
      new RegExp(`no rule .* matches repository "${reg.host}/other/vm"; the default is ${dflt}`),
    );
  }
  // warn: the pull goes ahead with a warning.
  const home = join(tmp.path, "home");
  await Deno.mkdir(home, { recursive: true });
  await writePolicy(home, { version: 1, default: "warn" });
  const r = await ovm(home, "pull", `${reg.host}/other/vm:1.0`);
  assertExit(r, 0);
  assert.match(r.stderr, /warning: policy: no rule/);
});

Deno.test("a policy file with a syntax or schema error is refused with exit 2 and nothing is pulled", async () => {
  resetCapabilities();
  await using reg = await startRegistry();
  await using tmp = await tempDir();
  await packDummy(tmp.path, "demo/vm:1.0");
  await pushFromStore(await ContentStore.open(tmp.path), "demo/vm:1.0", `${reg.host}/vms/vm:1.0`);
  const home = join(tmp.path, "home");
  await Deno.mkdir(home, { recursive: true });

  const broken = await writePolicy(tmp.path, '{ "version": 1, "rules": [ }', "broken.json");
  const r1 = await ovm(home, "pull", "--policy", broken, `${reg.host}/vms/vm:1.0`);
  assertExit(r1, 2);
  assert.match(r1.stderr, /broken\.json/);

  const noKeys = await writePolicy(tmp.path, {
    version: 1,
    rules: [{ match: "**", requireSignature: true }],
  }, "nokeys.json");
  const r2 = await ovm(home, "pull", "--policy", noKeys, `${reg.host}/vms/vm:1.0`);
  assertExit(r2, 2);
  assert.match(r2.stderr, /must trust at least one key/);

  const missingKey = await writePolicy(tmp.path, {
    version: 1,
    rules: [{ match: "**", keys: ["nowhere.pub"] }],
  }, "missingkey.json");
  const r3 = await ovm(home, "pull", "--policy", missingKey, `${reg.host}/vms/vm:1.0`);
  assertExit(r3, 2);
  assert.match(r3.stderr, /cannot load key "nowhere.pub"/);

  // The default file too, when it exists.
  await writePolicy(home, "not json at all");
  const r4 = await ovm(home, "pull", `${reg.host}/vms/vm:1.0`);
  assertExit(r4, 2);
  const r5 = await ovm(home, "policy", "check", `${reg.host}/vms/vm:1.0`);
  assertExit(r5, 2);
  assert.deepEqual(await listFiles(join(home, "store", "blobs")), []);
  await assert.rejects(
    () => parsePolicy("{", "x.json"),
    (e) => e instanceof ValidationError,
  );
});

Deno.test("run refuses an unsigned local artifact under the policy before anything starts", async () => {
  await using tmp = await tempDir();
  const { digest } = await packDummy(tmp.path, "demo/vm:1.0");
  const keys = await makeKeys(tmp.path, "k");
  await writePolicy(tmp.path, {
    version: 1,
    rules: [{ match: "demo/**", keys: [keys.publicPath] }],
  });
  const r = await ovm(tmp.path, "run", "demo/vm:1.0");
  assertExit(r, 1);
  assert.match(r.stderr, /Policy refuses to run "demo\/vm:1.0"/);
  assert.deepEqual(await listFiles(join(tmp.path, "instances")), []);

  // Signed in the store, the same check admits it, pinned to the digest.
  await signReference("demo/vm:1.0", await loadSigningKey(keys.privatePath), {
    store: await ContentStore.open(tmp.path),
  });
  const admitted = await enforcePolicy("demo/vm:1.0", {
    kind: "run",
    home: tmp.path,
    store: await ContentStore.open(tmp.path),
  });
  assert.equal(admitted?.decision, "allow");
  assert.equal(admitted?.pinned, `demo/vm@${digest}`);
  // Without a policy file nothing is enforced.
  await Deno.remove(join(tmp.path, "policy.json"));
  assert.equal(await enforcePolicy("demo/vm:1.0", { kind: "run", home: tmp.path }), undefined);
  await assert.rejects(
    () =>
      enforcePolicy("demo/vm:1.0", {
        kind: "run",
        home: tmp.path,
        policyFile: join(tmp.path, "gone.json"),
      }),
    (e) => e instanceof ValidationError,
  );
});

Deno.test("the policy example in docs/signing.md validates", async () => {
  await using tmp = await tempDir();
  const doc = await Deno.readTextFile(new URL("../../docs/signing.md", import.meta.url));
  const section = doc.slice(doc.indexOf("## Admission policy"));
  const json = /```json\n([\s\S]*?)```/.exec(section)![1];
  await Deno.mkdir(join(tmp.path, "keys"));
  const keys = await makeKeys(join(tmp.path, "keys"), "release");
  const p = await writePolicy(tmp.path, json);
  const policy = await parsePolicy(await Deno.readFile(p), p);
  assert.equal(policy.document.rules.length, 2);
  assert.equal(policy.keys[0][0].fingerprint, keys.fingerprint);
  assert.equal(matchRule(policy, "demo/vm"), 0);
  assert.equal(matchRule(policy, "localhost:5000/scratch/a"), 1);
  assert.equal(matchRule(policy, "localhost:5000/scratch/a/b"), -1);
});
