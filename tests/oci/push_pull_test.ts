import assert from "node:assert/strict";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { pullToStore, pushFromStore } from "../../src/oci/mod.ts";
import { NotFoundError } from "../../src/errors.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";

async function tempHome(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "ovm-home-" });
}

Deno.test("push then pull round-trips an OVMS artifact through docker-registry", async () => {
  await using reg = await startRegistry();
  const a = await tempHome();
  const b = await tempHome();
  try {
    const packed = await packDummy(a, "demo/vm:1.0");
    const storeA = await ContentStore.open(a);
    const pushed = await pushFromStore(storeA, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    assert.equal(pushed.digest, packed.digest);
    const storeB = await ContentStore.open(b);
    const pulled = await pullToStore(storeB, `${reg.host}/vms/demo:1.0`);
    assert.equal(pulled.descriptor.digest, packed.digest);
    assert.equal(pulled.localRef, `${reg.host}/vms/demo:1.0`);
    const art = await loadArtifact(storeB, `${reg.host}/vms/demo:1.0`);
    assert.equal(art.descriptor.digest, packed.digest);
    await assertStoreConsistent(b);
    // A second pull fetches nothing.
    const again = await pullToStore(storeB, `${reg.host}/vms/demo:1.0`);
    assert.equal(again.transferred, 0);
    // A second push uploads nothing.
    const again2 = await pushFromStore(storeA, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    assert.equal(again2.transferred, 0);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("pull of a missing repository is a clear not-found error", async () => {
  await using reg = await startRegistry();
  const h = await tempHome();
  try {
    const store = await ContentStore.open(h);
    await assert.rejects(
      () => pullToStore(store, `${reg.host}/no/such:1.0`),
      (e) => e instanceof NotFoundError && /not found/i.test(e.message),
    );
    await assertStoreConsistent(h);
  } finally {
    await Deno.remove(h, { recursive: true });
  }
});

Deno.test("two concurrent pulls of one artifact into one store both succeed", async () => {
  await using reg = await startRegistry();
  const a = await tempHome();
  const b = await tempHome();
  try {
    const packed = await packDummy(a, "demo/vm:1.0", { diskBytes: 2 << 20 });
    await pushFromStore(await ContentStore.open(a), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    const [x, y] = await Promise.all([
      pullToStore(await ContentStore.open(b), `${reg.host}/vms/demo:1.0`),
      pullToStore(await ContentStore.open(b), `${reg.host}/vms/demo:1.0`),
    ]);
    assert.equal(x.descriptor.digest, packed.digest);
    assert.equal(y.descriptor.digest, packed.digest);
    await assertStoreConsistent(b);
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});
