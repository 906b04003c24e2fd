import assert from "node:assert/strict";
import { ContentStore } from "../../src/store/mod.ts";
import {
  fileCredentials,
  NetworkError,
  openRepository,
  parseRetryAfter,
  pullToStore,
  pushFromStore,
  saveCredential,
} from "../../src/oci/mod.ts";
import { USER_AGENT } from "../../src/version.ts";
import { packDummy, startProxy, startRegistry } from "../_helpers/registry.ts";

Deno.test("parseRetryAfter reads delta-seconds and HTTP dates", () => {
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  const now = Date.parse("Sun, 22 Nov 2026 03:00:00 GMT");
  assert.equal(parseRetryAfter("Sun, 22 Nov 2026 03:00:05 GMT", now), 5000);
});

Deno.test("a redirect to another host never carries the registry's Authorization", async () => {
  await using reg = await startRegistry({ kind: "htpasswd", username: "u", password: "p" });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const seen: { auth: string | null; ua: string | null }[] = [];
  const basic = `Basic ${btoa("u:p")}`;
  // A "storage backend" on another origin, like S3 behind a real registry.
  const storage = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    seen.push({ auth: req.headers.get("authorization"), ua: req.headers.get("user-agent") });
    const path = new URL(req.url).searchParams.get("path")!;
    const res = await fetch(`${reg.url}${path}`, { headers: { authorization: basic } });
    return new Response(res.body, { status: res.status });
  });
  const registryAuth: (string | null)[] = [];
  await using proxy = startProxy(reg.host, (req, forward) => {
    const path = new URL(req.url).pathname;
    registryAuth.push(req.headers.get("authorization"));
    if (req.method === "GET" && /\/blobs\/sha256:/.test(path)) {
      return new Response(null, {
        status: 307,
        headers: { location: `http://127.0.0.1:${storage.addr.port}/blob?path=${path}` },
      });
    }
    return forward(req);
  });
  try {
    await packDummy(home, "demo/vm:1.0");
    await saveCredential(home, reg.host, { username: "u", password: "p" });
    await saveCredential(home, proxy.host, { username: "u", password: "p" });
    const store = await ContentStore.open(home);
    await pushFromStore(store, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, { home });
    const home2 = await Deno.makeTempDir({ prefix: "ovm-home-" });
    try {
      await saveCredential(home2, proxy.host, { username: "u", password: "p" });
      await pullToStore(await ContentStore.open(home2), `${proxy.host}/vms/demo:1.0`, {
        home: home2,
      });
    } finally {
      await Deno.remove(home2, { recursive: true });
    }
    assert(seen.length >= 3);
    assert(seen.every((s) => s.auth === null), "credentials leaked to the redirect target");
    assert(seen.every((s) => s.ua === USER_AGENT));
    assert(registryAuth.includes(basic));
  } finally {
    await storage.shutdown();
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("bearer tokens are fetched again when they expire", async () => {
  await using reg = await startRegistry({
    kind: "token",
    username: "bob",
    password: "pw",
    expiresIn: 11,
  });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    await packDummy(home, "demo/vm:1.0");
    await saveCredential(home, reg.host, { username: "bob", password: "pw" });
    await pushFromStore(await ContentStore.open(home), "demo/vm:1.0", `${reg.host}/vms/demo:1.0`, {
      home,
    });
    const repo = openRepository(`${reg.host}/vms/demo`, { home });
    await repo.fetchManifest("1.0");
    const before = reg.tokenRequests.length;
    await repo.fetchManifest("1.0");
    assert.equal(reg.tokenRequests.length, before, "a fresh token is reused");
    // ovm refreshes 10 s before expiry: an 11 s token is stale after 1 s.
    await new Promise((r) => setTimeout(r, 1200));
    await repo.fetchManifest("1.0");
    assert.equal(reg.tokenRequests.length, before + 1);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("an HTTPS request to a plain-HTTP registry fails fast with a --plain-http hint, and --insecure falls back", async () => {
  await using reg = await startRegistry();
  const strict = openRepository(`${reg.host}/vms/demo`, { plainHttp: false });
  await assert.rejects(
    () => strict.ping(),
    (e) => e instanceof NetworkError && e.tls && /--plain-http/.test(e.hint ?? ""),
  );
  const lenient = openRepository(`${reg.host}/vms/demo`, { plainHttp: false, insecure: true });
  await lenient.ping();
  assert.equal(lenient.baseUrl, `http://${reg.host}/v2/`);
});

Deno.test("a registry that is not listening is a clear network error", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const repo = openRepository(`127.0.0.1:${port}/x`, { retry: { baseDelayMs: 1 } });
  await assert.rejects(
    () => repo.ping(),
    (e) => e instanceof NetworkError && !e.tls && /Cannot reach registry/.test(e.message),
  );
});

Deno.test("Docker Hub references talk to registry-1.docker.io with docker.io credentials", async () => {
  assert.equal(openRepository("library/alpine:3").baseUrl, "https://registry-1.docker.io/v2/");
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  try {
    await saveCredential(home, "docker.io", { username: "hub", password: "pw" });
    const creds = fileCredentials(home, { env: { get: () => undefined } });
    assert.equal((await creds("registry-1.docker.io"))?.username, "hub");
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
