/**
 * Faults between ovm and a real registry, injected by a proxy in front of
 * docker-registry. After each, the store holds nothing half-written.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ContentStore } from "../../src/store/mod.ts";
import { type Descriptor, digestOf } from "../../src/manifest/mod.ts";
import { type CopyEvent, pullToStore, pushFromStore } from "../../src/oci/mod.ts";
import { DigestMismatchError, RegistryError, ValidationError } from "../../src/errors.ts";
import {
  assertStoreConsistent,
  type FaultProxy,
  packDummy,
  type ProxyHandler,
  type RunningRegistry,
  startProxy,
  startRegistry,
} from "../_helpers/registry.ts";

const DISK = 3 << 20;

interface Fixture extends AsyncDisposable {
  reg: RunningRegistry;
  /** The pushed artifact's manifest digest and its biggest layer. */
  digest: string;
  big: Descriptor;
  srcHome: string;
  home: string;
  store: ContentStore;
  proxy(handler: ProxyHandler): FaultProxy;
}

async function fixture(): Promise<Fixture> {
  const reg = await startRegistry();
  const srcHome = await Deno.makeTempDir({ prefix: "ovm-src-" });
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const proxies: FaultProxy[] = [];
  try {
    const packed = await packDummy(srcHome, "demo/vm:1.0", { diskBytes: DISK });
    const src = await ContentStore.open(srcHome);
    await pushFromStore(src, "demo/vm:1.0", `${reg.host}/vms/demo:1.0`);
    const m = JSON.parse(new TextDecoder().decode(await src.readBlob(packed.digest)));
    const big = [...m.layers].sort((a: Descriptor, b: Descriptor) => b.size - a.size)[0];
    return {
      reg,
      digest: packed.digest,
      big,
      srcHome,
      home,
      store: await ContentStore.open(home),
      proxy(handler) {
        const p = startProxy(reg.host, handler);
        proxies.push(p);
        return p;
      },
      async [Symbol.asyncDispose]() {
        for (const p of proxies) await p[Symbol.asyncDispose]();
        await reg[Symbol.asyncDispose]();
        await Deno.remove(srcHome, { recursive: true });
        await Deno.remove(home, { recursive: true });
      },
    };
  } catch (e) {
    await reg[Symbol.asyncDispose]();
    throw e;
  }
}

const isBlobGet = (req: Request, digest: string) =>
  req.method === "GET" && new URL(req.url).pathname.endsWith(`/blobs/${digest}`);
const isManifestGet = (req: Request) =>
  req.method === "GET" && new URL(req.url).pathname.includes("/manifests/");

async function assertNothingRecorded(f: Fixture): Promise<void> {
  await assertStoreConsistent(f.home);
  assert.deepEqual(await f.store.listRefs(), []);
  assert.equal(await f.store.has(f.big.digest), false);
}

/**
 * Asserts `ingest/` holds only what a resume may use: nothing of `discarded`,
 * and for any other blob a non-empty, correct prefix of its bytes.
 */
async function assertIngestResumable(f: Fixture, discarded: string[]): Promise<void> {
  const src = await ContentStore.open(f.srcHome);
  for (const e of Deno.readDirSync(join(f.home, "ingest"))) {
    const digest = `sha256:${e.name}`;
    assert(!discarded.includes(digest), `the failed blob's ingest ${e.name} must be discarded`);
    const kept = await Deno.readFile(join(f.home, "ingest", e.name));
    const whole = await Deno.readFile(src.blobPath(digest));
    assert(
      kept.byteLength > 0 && kept.byteLength < whole.byteLength,
      `${e.name}: ${kept.byteLength}`,
    );
    assert.deepEqual(kept, whole.subarray(0, kept.byteLength), `${e.name} is a prefix of the blob`);
  }
}

Deno.test("pull rejects a blob whose bytes do not match its digest", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest)) return res;
    const bytes = new Uint8Array(await res.arrayBuffer());
    bytes[bytes.length >> 1] ^= 0xff;
    return new Response(bytes, { status: 200, headers: res.headers });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof DigestMismatchError && e.expected === f.big.digest,
  );
  await assertNothingRecorded(f);
  // The failed ingest is discarded, not kept for a resume; a sibling the
  // failure interrupted may keep what it had received (spec section 4).
  await assertIngestResumable(f, [f.big.digest]);
});

Deno.test("pull rejects a blob body shorter than the descriptor's size", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest)) return res;
    const bytes = new Uint8Array(await res.arrayBuffer()).subarray(0, f.big.size - 1000);
    // Streamed without Content-Length: the short end is only seen at EOF.
    return new Response(ReadableStream.from([bytes]), { status: 200 });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof ValidationError && /expected \d+/.test(e.message),
  );
  await assertNothingRecorded(f);
});

Deno.test("pull rejects a declared Content-Length that disagrees with the descriptor", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest)) return res;
    const bytes = new Uint8Array(await res.arrayBuffer()).subarray(0, f.big.size - 1);
    return new Response(bytes, { status: 200 });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof RegistryError && /descriptor says/.test(e.message),
  );
  await assertNothingRecorded(f);
});

Deno.test("pull stops reading a blob body longer than the descriptor's size", async () => {
  await using f = await fixture();
  let served = 0;
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest)) return res;
    const bytes = new Uint8Array(await res.arrayBuffer());
    const chunk = new Uint8Array(64 << 10);
    // The right bytes, then an endless tail: the client must stop on its own.
    let sentReal = false;
    return new Response(
      new ReadableStream({
        pull(ctl) {
          if (!sentReal) {
            sentReal = true;
            ctl.enqueue(bytes);
            served += bytes.byteLength;
            return;
          }
          if (served > 1 << 30) return ctl.close();
          served += chunk.byteLength;
          ctl.enqueue(chunk);
        },
      }),
      { status: 200 },
    );
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof ValidationError && /longer than its declared size/.test(e.message),
  );
  assert(served < 1 << 30, "the client kept reading past size+1");
  await assertNothingRecorded(f);
});

Deno.test("pull resumes a blob with a Range request after the connection is cut", async () => {
  await using f = await fixture();
  let cut = false;
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest) || cut) return res;
    cut = true;
    const bytes = new Uint8Array(await res.arrayBuffer());
    const half = bytes.subarray(0, bytes.length >> 1);
    return new Response(
      new ReadableStream({
        async start(ctl) {
          ctl.enqueue(half);
          await new Promise((r) => setTimeout(r, 300));
          ctl.error(new Error("cut"));
        },
      }),
      { status: 200, headers: { "content-length": String(bytes.length) } },
    );
  });
  const events: CopyEvent[] = [];
  const res = await pullToStore(f.store, `${p.host}/vms/demo:1.0`, {
    onEvent: (e) => events.push(e),
  });
  assert.equal(res.descriptor.digest, f.digest);
  const gets = p.log.filter((l) => l.method === "GET" && l.path.endsWith(f.big.digest));
  assert.equal(gets.length, 2);
  assert.match(gets[1].range ?? "", /^bytes=[1-9]\d*-$/);
  assert(events.some((e) => e.type === "blob-retry"));
  await assertStoreConsistent(f.home);
});

Deno.test("pull retries 429 then 503 and then succeeds", async () => {
  await using f = await fixture();
  let n = 0;
  const p = f.proxy((req, forward) => {
    if (isManifestGet(req) && n < 2) {
      n++;
      return n === 1
        ? new Response("slow down", { status: 429, headers: { "retry-after": "1" } })
        : new Response("unavailable", { status: 503 });
    }
    return forward(req);
  });
  const res = await pullToStore(f.store, `${p.host}/vms/demo:1.0`, {
    retry: { baseDelayMs: 10 },
  });
  assert.equal(res.descriptor.digest, f.digest);
  assert.equal(p.log.filter((l) => l.method === "GET" && l.path.includes("/manifests/")).length, 3);
  await assertStoreConsistent(f.home);
});

Deno.test("pull gives up after bounded retries of a failing registry", async () => {
  await using f = await fixture();
  const p = f.proxy(() => new Response("down", { status: 503 }));
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`, { retry: { baseDelayMs: 5 } }),
    (e) => e instanceof RegistryError && e.status === 503,
  );
  assert.equal(p.log.length, 5);
  await assertNothingRecorded(f);
});

for (const declared of [true, false]) {
  Deno.test(`pull rejects a 5 MiB manifest (${declared ? "declared" : "streamed"})`, async () => {
    await using f = await fixture();
    const p = f.proxy((req, forward) => {
      if (!isManifestGet(req)) return forward(req);
      const pad = "x".repeat(5 << 20);
      const body = new TextEncoder().encode(
        JSON.stringify({ schemaVersion: 2, config: {}, layers: [], annotations: { pad } }),
      );
      const headers = { "content-type": "application/vnd.oci.image.manifest.v1+json" };
      return new Response(declared ? body : ReadableStream.from([body]), { headers });
    });
    await assert.rejects(
      () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
      (e) => e instanceof ValidationError && /limit of 4194304/.test(e.message),
    );
    await assertNothingRecorded(f);
  });
}

Deno.test("pull rejects a manifest that is both an index and a manifest", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    if (!isManifestGet(req)) return forward(req);
    const res = await forward(req);
    const doc = await res.json();
    doc.manifests = [];
    return Response.json(doc, { headers: { "content-type": res.headers.get("content-type")! } });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof ValidationError && /both an index .* and a manifest/.test(e.message),
  );
  await assertNothingRecorded(f);
});

Deno.test("pull rejects a manifest whose mediaType disagrees with Content-Type", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isManifestGet(req)) return res;
    const headers = new Headers(res.headers);
    headers.set("content-type", "application/vnd.docker.distribution.manifest.v2+json");
    return new Response(res.body, { status: res.status, headers });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo:1.0`),
    (e) => e instanceof ValidationError && /served as/.test(e.message),
  );
  await assertNothingRecorded(f);
});

Deno.test("pull rejects a manifest whose bytes do not match the digest asked for", async () => {
  await using f = await fixture();
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isManifestGet(req)) return res;
    const doc = await res.json();
    doc.annotations = { ...(doc.annotations ?? {}), injected: "yes" };
    const headers = new Headers(res.headers);
    headers.delete("content-length");
    headers.delete("docker-content-digest");
    return new Response(JSON.stringify(doc), { headers });
  });
  await assert.rejects(
    () => pullToStore(f.store, `${p.host}/vms/demo@${f.digest}`),
    DigestMismatchError,
  );
  await assertNothingRecorded(f);
});

Deno.test("a tag that moves during pull: the pulled digest is the one resolved first", async () => {
  await using f = await fixture();
  const other = await packDummy(f.srcHome, "demo/vm:2.0", { seed: 7 });
  const src = await ContentStore.open(f.srcHome);
  await pushFromStore(src, "demo/vm:2.0", `${f.reg.host}/vms/demo:2.0`);
  let moved = false;
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (isManifestGet(req) && !moved) {
      moved = true;
      const body = await res.arrayBuffer();
      // Retag 1.0 to the other artifact right after answering the first resolve.
      await pushFromStore(src, "demo/vm:2.0", `${f.reg.host}/vms/demo:1.0`);
      return new Response(body, { status: res.status, headers: res.headers });
    }
    return res;
  });
  const res = await pullToStore(f.store, `${p.host}/vms/demo:1.0`);
  assert(moved);
  assert.equal(res.descriptor.digest, f.digest);
  assert.equal((await f.store.resolve(`${p.host}/vms/demo:1.0`)).digest, f.digest);
  const now = await fetch(`${f.reg.url}/v2/vms/demo/manifests/1.0`, {
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  assert.equal(digestOf(new Uint8Array(await now.arrayBuffer())), other.digest);
  await assertStoreConsistent(f.home);
});

Deno.test("Ctrl-C during a blob leaves a resumable ingest that the next pull continues", async () => {
  await using f = await fixture();
  let slow = true;
  const p = f.proxy(async (req, forward) => {
    const res = await forward(req);
    if (!isBlobGet(req, f.big.digest) || !slow) return res;
    const bytes = new Uint8Array(await res.arrayBuffer());
    let off = 0;
    return new Response(
      new ReadableStream({
        async pull(ctl) {
          if (off >= bytes.length) return ctl.close();
          await new Promise((r) => setTimeout(r, 20));
          ctl.enqueue(bytes.slice(off, off + (64 << 10)));
          off += 64 << 10;
        },
      }),
      { status: 200, headers: { "content-length": String(bytes.length) } },
    );
  });
  const ctl = new AbortController();
  await assert.rejects(() =>
    pullToStore(f.store, `${p.host}/vms/demo:1.0`, {
      signal: ctl.signal,
      onEvent: (e) => {
        if (e.type === "blob-progress" && e.digest === f.big.digest && e.bytes >= 512 << 10) {
          ctl.abort();
        }
      },
    })
  );
  await assertNothingRecorded(f);
  const partial = join(f.home, "ingest", f.big.digest.slice(7));
  const kept = (await Deno.stat(partial)).size;
  assert(kept >= 512 << 10 && kept < f.big.size, `partial ingest is ${kept} bytes`);
  slow = false;
  const res = await pullToStore(f.store, `${p.host}/vms/demo:1.0`);
  assert.equal(res.descriptor.digest, f.digest);
  const gets = p.log.filter((l) => l.method === "GET" && l.path.endsWith(f.big.digest));
  assert.equal(gets.at(-1)!.range, `bytes=${kept}-`);
  await assertStoreConsistent(f.home);
});
