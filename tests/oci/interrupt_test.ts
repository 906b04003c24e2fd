/**
 * A failed or interrupted transfer under concurrency: several large blobs in
 * flight through a fault-injecting proxy in front of a real docker-registry,
 * a fault in one of them (or the caller's abort). The call must return only
 * after every blob transfer it started has stopped — no file of the store or
 * of `ingest/` still open, no event after the return — and leave in
 * `ingest/` exactly what a resume may use (spec section 4): a non-empty,
 * correct prefix of each interrupted sibling, nothing of the failed blob,
 * nothing for a blob that had received no byte.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ContentStore } from "../../src/store/mod.ts";
import { type Descriptor, digestHex, digestOf, MediaTypes } from "../../src/manifest/mod.ts";
import {
  type CopyEvent,
  openRepository,
  pullToStore,
  pushFromStore,
  resetCapabilities,
} from "../../src/oci/mod.ts";
import { DigestMismatchError, RegistryError } from "../../src/errors.ts";
import {
  assertStoreConsistent,
  type FaultProxy,
  type RunningRegistry,
  startProxy,
  startRegistry,
} from "../_helpers/registry.ts";

const LAYER = 6 << 20;
/** What each held sibling delivers before it stalls. */
const HOLD = 1 << 20;
const TIMEOUT = 120_000;

interface Layer {
  desc: Descriptor;
  bytes: Uint8Array<ArrayBuffer>;
}

/** Pseudo-random (incompressible, distinct per seed) bytes. */
function fill(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  const v = new Uint32Array(b.buffer);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < v.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    v[i] = x >>> 0;
  }
  return b;
}

function layer(seed: number): Layer {
  const bytes = fill(LAYER, seed);
  return {
    bytes,
    desc: {
      mediaType: "application/vnd.oci.image.layer.v1.tar",
      digest: digestOf(bytes),
      size: LAYER,
    },
  };
}

/** The store and ingest files this process has open under `dir`. */
function openFilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${e.name}`);
      if (target.startsWith(`${dir}/`)) out.push(target);
    } catch { /* closed meanwhile */ }
  }
  return out;
}

/** `ingest/` as name → bytes. */
function ingestFiles(home: string): Map<string, Uint8Array> {
  const dir = join(home, "ingest");
  return new Map(
    [...Deno.readDirSync(dir)].map((e) => [e.name, Deno.readFileSync(join(dir, e.name))]),
  );
}

/** A promise with its resolver. */
function signal(): { promise: Promise<void>; fire: () => void } {
  let fire!: () => void;
  const promise = new Promise<void>((r) => fire = r);
  return { promise, fire };
}

/** Streams `body` until `n` bytes went out, then stalls until the client goes away. */
function stallAfter(
  body: ReadableStream<Uint8Array>,
  n: number,
  gone: Promise<void>,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let sent = 0;
  return new ReadableStream({
    async pull(ctl) {
      if (sent >= n) {
        await gone;
        return;
      }
      const { done, value } = await reader.read();
      if (done) return ctl.close();
      const part = value.subarray(0, n - sent);
      sent += part.byteLength;
      ctl.enqueue(part);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

interface Fixture extends AsyncDisposable {
  reg: RunningRegistry;
  home: string;
  store: ContentStore;
  config: Descriptor;
  /** S0: answers nothing until the client goes; S1, S2: stall after HOLD bytes; F: the fault. */
  s0: Layer;
  s1: Layer;
  s2: Layer;
  f: Layer;
  ref: string;
  proxies: FaultProxy[];
  /**
   * Aborted first at teardown: a stalled proxy handler waits for the client
   * to go or for this, so a client that never lets go fails the test instead
   * of hanging the proxy's shutdown.
   */
  teardown: AbortSignal;
  /** A stalled handler's wait: the client went away, or teardown. */
  gone(req: Request): Promise<void>;
}

/** An OCI image of four 6 MiB layers in a real registry, and an empty ovm home. */
async function fixture(): Promise<Fixture> {
  resetCapabilities();
  const reg = await startRegistry();
  const home = await Deno.makeTempDir({ prefix: "ovm-home-" });
  const proxies: FaultProxy[] = [];
  const teardown = new AbortController();
  const dispose = async () => {
    teardown.abort();
    for (const p of proxies) await p[Symbol.asyncDispose]();
    await reg[Symbol.asyncDispose]();
    await Deno.remove(home, { recursive: true });
  };
  try {
    const [s0, s1, s2, f] = [layer(1), layer(2), layer(3), layer(4)];
    const configBytes = new TextEncoder().encode(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [] },
      }),
    );
    const config = {
      mediaType: MediaTypes.ociConfig,
      digest: digestOf(configBytes),
      size: configBytes.byteLength,
    };
    const repo = openRepository(`${reg.host}/img/big:1`);
    for (
      const [desc, bytes] of [
        [config, configBytes],
        ...[s0, s1, s2, f].map((l) => [l.desc, l.bytes]),
      ] as [Descriptor, Uint8Array<ArrayBuffer>][]
    ) {
      await repo.pushBlob(desc, () => Promise.resolve(new Response(bytes).body!));
    }
    const manifest = new TextEncoder().encode(JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config,
      layers: [s0.desc, s1.desc, s2.desc, f.desc],
    }));
    await repo.pushManifest("1", manifest, MediaTypes.ociManifest);
    return {
      reg,
      home,
      store: await ContentStore.open(home),
      config,
      s0,
      s1,
      s2,
      f,
      ref: "img/big:1",
      proxies,
      teardown: teardown.signal,
      gone: (req) =>
        new Promise<void>((r) => {
          const s = AbortSignal.any([req.signal, teardown.signal]);
          if (s.aborted) return r();
          s.addEventListener("abort", () => r(), { once: true });
        }),
      [Symbol.asyncDispose]: dispose,
    };
  } catch (e) {
    await dispose();
    throw e;
  }
}

const blobOf = (req: Request) =>
  req.method === "GET"
    ? /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(new URL(req.url).pathname)?.[1]
    : undefined;

/**
 * A proxy where S0 answers nothing, S1 and S2 stall after HOLD bytes, and F
 * calls `onF` once S1 and S2 have each reached the client's ingest with HOLD
 * bytes (seen through the pull's own progress events).
 */
function stallingProxy(
  fx: Fixture,
  held: Promise<void>,
  onF: (res: Response) => Promise<Response>,
): FaultProxy {
  const p = startProxy(fx.reg.host, async (req, forward) => {
    const digest = blobOf(req);
    if (digest === fx.s0.desc.digest) {
      // Headers never come: the client has opened its ingest and received nothing.
      await fx.gone(req);
      return new Response(null, { status: 503 });
    }
    const res = await forward(req);
    if (digest === fx.s1.desc.digest || digest === fx.s2.desc.digest) {
      return new Response(stallAfter(res.body!, HOLD, fx.gone(req)), {
        status: res.status,
        headers: res.headers,
      });
    }
    if (digest === fx.f.desc.digest) {
      await held;
      return await onF(res);
    }
    return res;
  });
  fx.proxies.push(p);
  return p;
}

/** Resolves once the events show every one of `digests` with exactly HOLD bytes received. */
function heldWatcher(digests: string[]): { onEvent: (e: CopyEvent) => void; held: Promise<void> } {
  const s = signal();
  const at = new Map<string, number>();
  return {
    held: s.promise,
    onEvent(e) {
      if (e.type === "blob-progress") at.set(e.digest, e.bytes);
      if (digests.every((d) => at.get(d) === HOLD)) s.fire();
    },
  };
}

interface Outcome {
  error: unknown;
  /** Taken synchronously when the call settled. */
  openFiles: string[];
  ingest: Map<string, Uint8Array>;
  eventsAtReturn: number;
}

async function settle(call: Promise<unknown>, home: string, events: unknown[]): Promise<Outcome> {
  return await call.then(
    () => {
      throw new Error("the transfer was expected to fail");
    },
    (error) => ({
      error,
      openFiles: openFilesUnder(home),
      ingest: ingestFiles(home),
      eventsAtReturn: events.length,
    }),
  );
}

/** Asserts `ingest/` holds exactly a HOLD-byte correct prefix of each of `layers`. */
function assertResumable(ingest: Map<string, Uint8Array>, layers: Layer[]): void {
  assert.deepEqual(
    [...ingest.keys()].sort(),
    layers.map((l) => digestHex(l.desc.digest as `sha256:${string}`)).sort(),
    "ingest/ must hold exactly the interrupted siblings that had received bytes",
  );
  for (const l of layers) {
    const got = ingest.get(digestHex(l.desc.digest as `sha256:${string}`))!;
    assert.equal(got.byteLength, HOLD, `partial of ${l.desc.digest}`);
    assert.deepEqual(got, l.bytes.subarray(0, HOLD), `partial of ${l.desc.digest} is a prefix`);
  }
}

/** A second pull, straight from the registry, resumes the kept partials and leaves ingest empty. */
async function assertResumes(fx: Fixture, partials: Layer[]): Promise<void> {
  const log = startProxy(fx.reg.host, (req, forward) => forward(req));
  fx.proxies.push(log);
  const events: CopyEvent[] = [];
  await pullToStore(fx.store, `${log.host}/${fx.ref}`, {
    any: true,
    concurrency: 8,
    onEvent: (e) => events.push(e),
  });
  for (const l of partials) {
    const start = events.find((e) => e.type === "blob-start" && e.digest === l.desc.digest);
    assert.equal(
      start && start.type === "blob-start" && start.offset,
      HOLD,
      `${l.desc.digest} resumed`,
    );
    assert.ok(
      log.log.some((r) => r.path.endsWith(l.desc.digest) && r.range === `bytes=${HOLD}-`),
      `a Range request for ${l.desc.digest}`,
    );
  }
  assert.deepEqual([...ingestFiles(fx.home).keys()], []);
  for (const l of [fx.s0, fx.s1, fx.s2, fx.f]) assert.ok(await fx.store.has(l.desc.digest));
  await assertStoreConsistent(fx.home);
}

Deno.test({
  name:
    "a pull with a corrupt blob returns only after its siblings stopped, leaving just their resumable partials",
  timeout: TIMEOUT,
  async fn() {
    await using fx = await fixture();
    const w = heldWatcher([fx.s1.desc.digest, fx.s2.desc.digest]);
    const p = stallingProxy(fx, w.held, async (res) => {
      const bytes = new Uint8Array(await res.arrayBuffer());
      bytes[bytes.length >> 1] ^= 0xff;
      return new Response(bytes, { status: 200, headers: res.headers });
    });
    const events: CopyEvent[] = [];
    const out = await settle(
      pullToStore(fx.store, `${p.host}/${fx.ref}`, {
        any: true,
        concurrency: 8,
        onEvent: (e) => {
          events.push(e);
          w.onEvent(e);
        },
      }),
      fx.home,
      events,
    );
    assert.ok(
      out.error instanceof DigestMismatchError && out.error.expected === fx.f.desc.digest,
      `expected the digest mismatch of F, got ${out.error}`,
    );
    assert.deepEqual(
      out.openFiles,
      [],
      "no store or ingest file may still be open after the return",
    );
    // S0 had received nothing (nothing to resume), F was corrupt (discarded).
    assertResumable(out.ingest, [fx.s1, fx.s2]);
    assert.deepEqual(await fx.store.listRefs(), []);
    for (const l of [fx.s0, fx.s1, fx.s2, fx.f]) {
      assert.equal(await fx.store.has(l.desc.digest), false);
    }
    await assertResumes(fx, [fx.s1, fx.s2]);
    assert.equal(
      events.length,
      out.eventsAtReturn,
      "no event of the failed pull after it returned",
    );
  },
});

Deno.test({
  name:
    "an interrupted pull (the caller's abort) stops every blob in flight and keeps each started partial",
  timeout: TIMEOUT,
  async fn() {
    await using fx = await fixture();
    const w = heldWatcher([fx.s1.desc.digest, fx.s2.desc.digest, fx.f.desc.digest]);
    // Here F is one more held sibling; the caller aborts once all three hold.
    const p = stallingProxy(fx, Promise.resolve(), (res) =>
      Promise.resolve(
        new Response(stallAfter(res.body!, HOLD, fx.gone(new Request("http://x/"))), {
          status: res.status,
          headers: res.headers,
        }),
      ));
    const ctl = new AbortController();
    w.held.then(() => ctl.abort(new DOMException("interrupted by the test", "AbortError")));
    const events: CopyEvent[] = [];
    const out = await settle(
      pullToStore(fx.store, `${p.host}/${fx.ref}`, {
        any: true,
        concurrency: 8,
        signal: ctl.signal,
        onEvent: (e) => {
          events.push(e);
          w.onEvent(e);
        },
      }),
      fx.home,
      events,
    );
    assert.ok(
      out.error instanceof DOMException && out.error.name === "AbortError",
      `expected the caller's abort, got ${out.error}`,
    );
    assert.deepEqual(out.openFiles, []);
    assertResumable(out.ingest, [fx.s1, fx.s2, fx.f]);
    await assertResumes(fx, [fx.s1, fx.s2, fx.f]);
    assert.equal(events.length, out.eventsAtReturn);
  },
});

Deno.test({
  name:
    "a push with one refused upload returns only after the sibling uploads stopped reading the store",
  timeout: TIMEOUT,
  async fn() {
    await using fx = await fixture();
    // The same image, pulled whole into the local store, is what is pushed.
    await pullToStore(fx.store, `${fx.reg.host}/${fx.ref}`, { any: true, localRef: "img/big:1" });
    await using dst = await startRegistry();
    const fired = signal();
    const got = new Map<string, number>();
    const siblings = [fx.s0.desc.digest, fx.s1.desc.digest, fx.s2.desc.digest];
    const p = startProxy(dst.host, async (req, forward) => {
      const u = new URL(req.url);
      const digest = u.searchParams.get("digest");
      if (req.method === "PUT" && digest && siblings.includes(digest)) {
        // Take HOLD bytes of the body, then stall until the client goes.
        const reader = req.body!.getReader();
        let n = 0;
        while (n < HOLD) {
          const r = await reader.read();
          if (r.done) break;
          n += r.value.byteLength;
        }
        got.set(digest, n);
        if (siblings.every((d) => (got.get(d) ?? 0) >= HOLD)) fired.fire();
        await fx.gone(req);
        await reader.cancel().catch(() => {});
        return new Response(null, { status: 503 });
      }
      if (req.method === "PUT" && digest === fx.f.desc.digest) {
        await fired.promise;
        await req.body?.cancel();
        return Response.json({
          errors: [{ code: "BLOB_UPLOAD_INVALID", message: "refused by the test" }],
        }, {
          status: 400,
        });
      }
      return await forward(req);
    });
    fx.proxies.push(p);
    const events: CopyEvent[] = [];
    const out = await settle(
      pushFromStore(fx.store, "img/big:1", `${p.host}/img/big:1`, {
        concurrency: 8,
        onEvent: (e) => events.push(e),
      }),
      fx.home,
      events,
    );
    assert.ok(
      out.error instanceof RegistryError && /HTTP 400/.test(out.error.message),
      `expected the refused upload, got ${out.error}`,
    );
    assert.deepEqual(out.openFiles, [], "no store blob may still be read after the return");
    const dstRepo = openRepository(`${dst.host}/img/big:1`);
    assert.equal(await dstRepo.headManifest("1"), undefined, "no manifest without its blobs");
    assert.equal(await dstRepo.blobExists(fx.f.desc.digest), false);
    assert.equal(events.length, out.eventsAtReturn);
  },
});
