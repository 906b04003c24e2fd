import assert from "node:assert/strict";
import { ContentStore } from "../../src/store/mod.ts";
import {
  AuthError,
  copyBetween,
  parseChallenges,
  pullToStore,
  pushFromStore,
  saveCredential,
} from "../../src/oci/mod.ts";
import { assertStoreConsistent, packDummy, startRegistry } from "../_helpers/registry.ts";

Deno.test("parseChallenges reads bearer and basic challenges with quoted params", () => {
  const c = parseChallenges(
    'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push", Basic realm="x"',
  );
  assert.equal(c[0].scheme, "bearer");
  assert.equal(c[0].params.realm, "https://auth.example/token");
  assert.equal(c[0].params.scope, "repository:a/b:pull,push");
  assert.equal(c[1].scheme, "basic");
  assert.equal(c[1].params.realm, "x");
});

Deno.test("push and pull work with htpasswd basic auth and stored credentials", async () => {
  await using reg = await startRegistry({
    kind: "htpasswd",
    username: "alice",
    password: "s3cret",
  });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    const path = await saveCredential(home, reg.host, { username: "alice", password: "s3cret" });
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const store = await ContentStore.open(home);
    const pushed = await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, { home });
    assert.equal(pushed.digest, packed.digest);
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      await saveCredential(home2, reg.host, { username: "alice", password: "s3cret" });
      const pulled = await pullToStore(await ContentStore.open(home2), `${reg.host}/vms/demo:1.0`, {
        home: home2,
      });
      assert.equal(pulled.descriptor.digest, packed.digest);
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a wrong password is a clear auth error and leaves the store untouched", async () => {
  await using reg = await startRegistry({
    kind: "htpasswd",
    username: "alice",
    password: "s3cret",
  });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    await saveCredential(home, reg.host, { username: "alice", password: "wrong" });
    const store = await ContentStore.open(home);
    await assert.rejects(
      () => pullToStore(store, `${reg.host}/vms/demo:1.0`, { home }),
      (e) => e instanceof AuthError && e.status === 401 && /ovm login/.test(e.hint ?? ""),
    );
    await packDummy(home, "demo/vm:1.0");
    await assert.rejects(
      () => pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, { home }),
      AuthError,
    );
    await assertStoreConsistent(home);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

for (const accessTokenField of [false, true]) {
  Deno.test(`push and pull work with bearer token auth (${accessTokenField ? "access_token" : "token"} field)`, async () => {
    await using reg = await startRegistry({
      kind: "token",
      username: "bob",
      password: "hunter2",
      accessTokenField,
    });
    const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const packed = await packDummy(home, "demo/vm:1.0");
      await saveCredential(home, reg.host, { username: "bob", password: "hunter2" });
      const store = await ContentStore.open(home);
      const pushed = await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:2.0`, {
        home,
      });
      assert.equal(pushed.digest, packed.digest);
      assert(
        reg.tokenRequests.some((u) =>
          u.searchParams.get("scope") === "repository:vms/demo:pull,push"
        ),
      );
      const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
      try {
        await saveCredential(home2, reg.host, { username: "bob", password: "hunter2" });
        const pulled = await pullToStore(
          await ContentStore.open(home2),
          `${reg.host}/vms/demo:2.0`,
          {
            home: home2,
          },
        );
        assert.equal(pulled.descriptor.digest, packed.digest);
      } finally {
        await Deno.remove(home2, { recursive: true });
      }
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  });
}

Deno.test("a wrong password against a token registry fails at the token endpoint", async () => {
  await using reg = await startRegistry({ kind: "token", username: "bob", password: "hunter2" });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    await saveCredential(home, reg.host, { username: "bob", password: "nope" });
    const store = await ContentStore.open(home);
    await assert.rejects(
      () => pullToStore(store, `${reg.host}/vms/demo:1.0`, { home }),
      (e) => e instanceof AuthError && /refused/.test(e.hint ?? ""),
    );
    // Anonymous: the token has no access, so the registry says 401 again.
    const anon = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      const s = await ContentStore.open(anon);
      await assert.rejects(
        () => pullToStore(s, `${reg.host}/vms/demo:1.0`, { home: anon }),
        AuthError,
      );
    } finally {
      await Deno.remove(anon, { recursive: true });
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("copy within a token-auth registry mounts with a token scoped to both repositories", async () => {
  await using reg = await startRegistry({ kind: "token", username: "bob", password: "pw" });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    const packed = await packDummy(home, "demo/vm:1.0");
    await saveCredential(home, reg.host, { username: "bob", password: "pw" });
    await pushFromStore(await ContentStore.open(home), "demo/vm:1.0", `${reg.host}/vms/a:1`, {
      home,
    });
    const res = await copyBetween(`${reg.host}/vms/a:1`, `${reg.host}/vms/b:1`, { home });
    assert.equal(res.descriptor.digest, packed.digest);
    assert.equal(res.transferred, 0, "blobs were mounted, not copied");
    assert(
      reg.tokenRequests.some((u) => {
        const scopes = u.searchParams.getAll("scope");
        return scopes.includes("repository:vms/b:pull,push") &&
          scopes.includes("repository:vms/a:pull");
      }),
    );
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
