/**
 * Interop with the reference tools: what ovm pushes, skopeo reads and copies
 * byte for byte; what skopeo pushes (an OCI image umoci built), ovm pulls.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ContentStore } from "../../src/store/mod.ts";
import { digestOf } from "../../src/manifest/mod.ts";
import { pullToStore, pushFromStore } from "../../src/oci/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";

async function run(cmd: string, args: string[], cwd?: string): Promise<Uint8Array> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return out.stdout;
}

Deno.test("skopeo reads and copies what ovm push publishes, with matching digests", async () => {
  await using reg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const out = await Deno.makeTempDir({ prefix: "ovm-skopeo-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    await pushFromStore(await ContentStore.open(home), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    const raw = await run("skopeo", [
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${reg.host}/vms/demo:1.0`,
    ]);
    assert.equal(digestOf(raw), packed.digest);
    const local = await ContentStore.open(home);
    assert.deepEqual(raw, await local.readBlob(packed.digest));
    await run("skopeo", [
      "copy",
      "--src-tls-verify=false",
      `docker://${reg.host}/vms/demo:1.0`,
      `oci:${join(out, "layout")}:copied`,
    ]);
    const index = JSON.parse(await Deno.readTextFile(join(out, "layout", "index.json")));
    assert.equal(index.manifests[0].digest, packed.digest);
    // Every blob skopeo wrote has the bytes ovm stored.
    const art = JSON.parse(new TextDecoder().decode(raw));
    for (const d of [art.config, ...art.layers]) {
      const theirs = await Deno.readFile(join(out, "layout", "blobs", "sha256", d.digest.slice(7)));
      assert.equal(digestOf(theirs), d.digest);
    }
  } finally {
    await Deno.remove(home, { recursive: true });
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("ovm pull --any fetches and verifies an umoci image pushed by skopeo", async () => {
  await using reg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const work = await Deno.makeTempDir({ prefix: "ovm-umoci-" });
  try {
    const layout = join(work, "layout");
    await run("umoci", ["init", "--layout", layout]);
    await run("umoci", ["new", "--image", `${layout}:latest`]);
    await Deno.mkdir(join(work, "rootfs", "etc"), { recursive: true });
    await Deno.writeTextFile(join(work, "rootfs", "etc", "hostname"), "tiny\n");
    await Deno.writeTextFile(join(work, "rootfs", "hello.txt"), "hello from umoci\n");
    await run("umoci", ["insert", "--image", `${layout}:latest`, join(work, "rootfs"), "/"]);
    await run("skopeo", [
      "copy",
      "--dest-tls-verify=false",
      `oci:${layout}:latest`,
      `docker://${reg.host}/img/tiny:1`,
    ]);
    const raw = await run("skopeo", [
      "inspect",
      "--raw",
      "--tls-verify=false",
      `docker://${reg.host}/img/tiny:1`,
    ]);
    const store = await ContentStore.open(home);
    // Not an OVMS artifact: refused before any layer is fetched…
    await assert.rejects(() => pullToStore(store, `${reg.host}/img/tiny:1`), ValidationError);
    await assertStoreConsistent(home);
    // …and accepted with --any.
    const res = await pullToStore(store, `${reg.host}/img/tiny:1`, { any: true });
    assert.equal(res.descriptor.digest, digestOf(raw));
    assert.equal(res.ovms, false);
    const m = JSON.parse(new TextDecoder().decode(raw));
    for (const d of [m.config, ...m.layers]) assert(await store.has(d.digest));
    assert.equal((await store.resolve(`${reg.host}/img/tiny:1`)).digest, digestOf(raw));
    await assertStoreConsistent(home);
  } finally {
    await Deno.remove(home, { recursive: true });
    await Deno.remove(work, { recursive: true });
  }
});
