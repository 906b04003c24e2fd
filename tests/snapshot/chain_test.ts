/**
 * Snapshot chains end to end under QEMU TCG (spec 8.6): a guest is booted
 * and snapshotted; a restore of it writes 8 MiB of random bytes into a tmpfs
 * and is snapshotted again — that snapshot's RAM is a diff layer over the
 * first, holding about the 8 MiB the guest wrote — and a restore of the
 * chain sees the bytes (their sha256, read back from the file) and counts on
 * from where the second snapshot was taken. Bad chains are refused before
 * any VM starts, naming the layer.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Manifest } from "../../src/manifest/mod.ts";
import { MediaTypes } from "../../src/manifest/mod.ts";
import { loadArtifact, ramLayers, writeArtifact } from "../../src/store/mod.ts";
import {
  dropTemplate,
  MAX_RAM_LAYERS,
  PARENT_ANNOTATION,
  snapshotInstance,
  startInstance,
  stopInstance,
  WarmPool,
} from "../../src/runtime/mod.ts";
import { encodeRamDiff, encodeRamsnap, readRamDiff } from "../../src/snapshot/mod.ts";
import {
  assertNoDecodeLeft,
  blobHashes,
  cacheEntries,
  counterHome,
  lastCount,
  writerScript,
} from "../_helpers/snapshot.ts";
import { killAll, waitFor } from "../_helpers/runtime.ts";
import { startRegistry } from "../_helpers/registry.ts";
import { pullToStore, pushFromStore } from "../../src/oci/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { ensureSystem } from "../../src/system/mod.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";

const VM = { memoryBytes: 256 << 20, cpus: 1, accel: "tcg" as const, net: "none" as const };
const WRITE_AT = 25;
/** Instance ids name host files in /dev/shm: unique per run, so parallel suites never meet. */
const RUN = crypto.randomUUID().slice(0, 8);
const SRC = `chain-src-${RUN}`,
  R1 = `chain-r1-${RUN}`,
  R2 = `chain-r2-${RUN}`,
  R3 = `chain-r3-${RUN}`;
const MIB = 8;

async function countPast(home: string, id: string, n: number): Promise<number> {
  return await waitFor(async () => {
    const c = (await lastCount(home, id)) ?? 0;
    return c > n ? c : undefined;
  }, { timeoutMs: 90_000, what: `instance ${id} to count past ${n}` });
}

async function hashAfter(home: string, id: string, skip: number): Promise<string> {
  return await waitFor(async () => (await blobHashes(home, id))[skip], {
    timeoutMs: 90_000,
    what: `instance ${id} to print the sha256 of its blob`,
  });
}

async function instanceIds(home: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(join(home, "instances"))) out.push(e.name);
  } catch { /* none */ }
  return out.sort();
}

async function writeStream(path: string, s: ReadableStream<Uint8Array>): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  for await (const chunk of s) {
    let off = 0;
    while (off < chunk.length) off += await f.write(chunk.subarray(off));
  }
}

Deno.test({
  name: "a restored guest is snapshotted as a diff layer of what it wrote, and its chain restores",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using h = await counterHome({ script: writerScript(WRITE_AT, MIB), tag: "test/w:1" });
    const { home, store } = h;
    await startInstance(store, h.ref, { ...VM, detach: true, name: SRC });
    await countPast(home, SRC, 3);
    await snapshotInstance(home, SRC, { tag: "test/w:s1", after: "stop" });
    const s1 = await loadArtifact(store, "test/w:s1");
    assert.equal(ramLayers(s1.manifest).length, 1);

    let written = "";
    let atSnap2 = 0;
    await t.step("the restored guest writes, and its snapshot is a diff layer", async () => {
      await startInstance(store, "test/w:s1", { detach: true, name: R1 });
      written = await hashAfter(home, R1, 0);
      atSnap2 = (await lastCount(home, R1))!;
      assert.ok(atSnap2 >= WRITE_AT, `r1 is at ${atSnap2}`);
      await snapshotInstance(home, R1, { tag: "test/w:s2" });
      // The source goes on running.
      await countPast(home, R1, atSnap2 + 2);
      const s2 = await loadArtifact(store, "test/w:s2");
      const layers = ramLayers(s2.manifest);
      assert.deepEqual(layers.slice(0, 1), ramLayers(s1.manifest));
      assert.equal(layers.length, 2);
      assert.equal(s2.manifest.ramSnapshot!.ref, layers[1]);
      assert.equal(s2.oci.subject?.digest, s1.descriptor.digest, "subject: the parent snapshot");
      assert.equal(s2.oci.annotations?.[PARENT_ANNOTATION], s1.descriptor.digest);
      const types = s2.oci.layers.filter((l) => layers.includes(l.digest)).map((l) => l.mediaType);
      assert.deepEqual(types, [MediaTypes.ramSnapshot, MediaTypes.ramDiff]);

      // The diff holds what the guest wrote (random: incompressible), and
      // little else: not the 256 MiB of the guest, not the parent's pages.
      const diff = await readRamDiff(store.blobPath(layers[1]), { memoryBytes: VM.memoryBytes });
      const blobBytes = (await store.stat(layers[1])).size;
      assert.ok(diff.pageBytes >= MIB << 20, `pages: ${diff.pageBytes}`);
      assert.ok(diff.pageBytes <= (MIB + 8) << 20, `pages: ${diff.pageBytes} for ${MIB} MiB`);
      assert.ok(blobBytes >= MIB << 20 && blobBytes <= diff.pageBytes + (1 << 20), `${blobBytes}`);
      assert.equal(diff.header.base, s1.manifest.ramSnapshot!.ref);
    });

    await t.step("the chain restores: the guest sees its bytes and counts on", async () => {
      // Built from the layers this time, not from the template the snapshot left.
      const s2 = await loadArtifact(store, "test/w:s2");
      await dropTemplate(s2.manifest.ramSnapshot!.ref);
      await startInstance(store, "test/w:s2", { detach: true, name: R2 });
      const first = await countPast(home, R2, 0);
      assert.ok(first >= atSnap2 && first <= atSnap2 + 15, `r2 starts at ${first}, not 1`);
      assert.equal(await hashAfter(home, R2, 0), written, "the blob's bytes survived");
    });

    await t.step("a snapshot of the chain's restore adds a third layer", async () => {
      await snapshotInstance(home, R2, { tag: "test/w:s3", after: "stop" });
      const s3 = await loadArtifact(store, "test/w:s3");
      const s2 = await loadArtifact(store, "test/w:s2");
      assert.deepEqual(ramLayers(s3.manifest).slice(0, 2), ramLayers(s2.manifest));
      assert.equal(ramLayers(s3.manifest).length, 3);
      const at = (await lastCount(home, R2))!;
      await startInstance(store, "test/w:s3", { detach: true, name: R3 });
      const first = await countPast(home, R3, 0);
      assert.ok(first >= at - 1 && first <= at + 15, `r3 starts at ${first}, r2 was at ${at}`);
      await stopInstance(home, R1, { force: true });
      await stopInstance(home, R3, { force: true });
    });

    await t.step(
      "a pushed chain uploads only its new layers; pulled into a fresh home, it restores",
      async () => {
        await using reg = await startRegistry();
        const s1 = await loadArtifact(store, "test/w:s1");
        const s2 = await loadArtifact(store, "test/w:s2");
        const s3 = await loadArtifact(store, "test/w:s3");
        const base = await pushFromStore(store, "test/w:s1", `${reg.host}/chain/w:s1`, { home });
        const next = await pushFromStore(store, "test/w:s2", `${reg.host}/chain/w:s2`, { home });
        const top = ramLayers(s2.manifest)[1];
        const diffBytes = (await store.stat(top)).size;
        const baseRam = (await store.stat(s1.manifest.ramSnapshot!.ref)).size;
        assert.ok(
          base.transferred >= baseRam,
          `the first push carries the base (${base.transferred})`,
        );
        assert.ok(
          next.transferred >= diffBytes && next.transferred < diffBytes + (2 << 20),
          `the second push sent ${next.transferred} bytes for a ${diffBytes}-byte diff layer`,
        );

        const fresh = await Deno.makeTempDir({ prefix: "ovm-chain-fresh-" });
        try {
          // A fresh home with the same system (kernel and initrd versions), as on another host.
          await ensureSystem(fresh, { cacheDir: TEST_CACHE });
          const other = await ContentStore.open(fresh);
          const p2 = await pullToStore(other, `${reg.host}/chain/w:s2`, { home: fresh });
          assert.ok(p2.transferred >= baseRam + diffBytes);
          await pushFromStore(store, "test/w:s3", `${reg.host}/chain/w:s3`, { home });
          const p3 = await pullToStore(other, `${reg.host}/chain/w:s3`, { home: fresh });
          const top3 = (await store.stat(s3.manifest.ramSnapshot!.ref)).size;
          assert.ok(
            p3.transferred < top3 + (2 << 20),
            `pulling the third layer fetched ${p3.transferred} bytes (layer: ${top3})`,
          );
          // No template from this host's earlier restores: built from the pulled layers.
          for (const l of ramLayers(s3.manifest)) await dropTemplate(l);
          const id = `chain-pulled-${RUN}`;
          await startInstance(other, `${reg.host}/chain/w:s3`, { detach: true, name: id });
          await countPast(fresh, id, 0);
          await stopInstance(fresh, id, { force: true });
          for (const l of ramLayers(s3.manifest)) await dropTemplate(l);
        } finally {
          await killAll(fresh);
          await Deno.remove(fresh, { recursive: true }).catch(() => {});
        }
      },
    );

    await t.step("bad chains are refused before any VM starts, naming the layer", async () => {
      const s2 = await loadArtifact(store, "test/w:s2");
      const [baseRef, diffRef] = ramLayers(s2.manifest);
      const diffPath = store.blobPath(diffRef);
      const work = await Deno.makeTempDir({ prefix: "ovm-chain-bad-" });
      try {
        // Another full snapshot of the same size: a base the diff is not on.
        const mem = join(work, "mem");
        await Deno.writeFile(mem, new Uint8Array());
        await Deno.truncate(mem, VM.memoryBytes);
        const dev = join(work, "dev");
        await Deno.writeFile(dev, new Uint8Array(16));
        const other = join(work, "other.lz4");
        await writeStream(
          other,
          encodeRamsnap([
            { name: "memory", path: mem, size: VM.memoryBytes },
            { name: "device-state", path: dev, size: 16 },
          ]),
        );
        const otherBase = await store.writeBlob(await Deno.readFile(other));
        // Diffs for another memory size, and from another machine type.
        const pages = join(work, "pages");
        await Deno.writeFile(pages, new Uint8Array(4096));
        const craft = async (memoryBytes: number, machine: string) => {
          const out = join(work, `diff-${memoryBytes}-${machine}`);
          await writeStream(
            out,
            await encodeRamDiff({ ranges: [[0, 4096]], pages, deviceState: dev, work }, {
              base: baseRef,
              memoryBytes,
              metadata: { restore: { machine } },
            }),
          );
          return (await store.writeBlob(await Deno.readFile(out))).digest;
        };
        const bigger = await craft(512 << 20, "q35");
        const otherMachine = await craft(VM.memoryBytes, "pc-i440fx");
        const full = await Deno.readFile(diffPath);
        const cut = (await store.writeBlob(full.subarray(0, full.byteLength - 100))).digest;
        // A layer the store does not hold (a partial pull): written, then removed.
        const gone = await store.writeBlob(crypto.getRandomValues(new Uint8Array(64)));
        const missing = gone.digest;

        const cases: [string, string[], RegExp][] = [
          [
            "missing",
            [missing, diffRef],
            /RAM layer 1 of 2 \(sha256:[0-9a-f]+\) is not in the store/,
          ],
          ["other-base", [otherBase.digest, diffRef], /RAM layer 2 of 2 .*a diff on sha256:/],
          ["loop", [baseRef, diffRef, diffRef], /loop: layer 3 .* is also layer 2/],
          ["memory", [baseRef, bigger], /RAM layer 2 of 2 .*guest of 536870912 bytes/],
          ["machine", [baseRef, otherMachine], /RAM layer 2 of 2 .*machine type "pc-i440fx"/],
          ["truncated", [baseRef, cut], /RAM layer 2 of 2 .*truncated/],
        ];
        for (const [name, layers, expected] of cases) {
          const m: Manifest = structuredClone(s2.manifest);
          m.ramSnapshot!.ref = layers.at(-1)!;
          m.ramSnapshot!.layers = layers;
          const d = await writeArtifact(store, m, { subject: s2.oci.subject });
          await store.tag(`test/w:bad-${name}`, d);
          if (name === "missing") await Deno.remove(store.blobPath(missing));
          const ids = await instanceIds(home);
          const cache = await cacheEntries();
          await assert.rejects(
            startInstance(store, `test/w:bad-${name}`, { detach: true }),
            (e: Error) => {
              assert.match(e.message, expected, `${name}: ${e.message}`);
              return true;
            },
          );
          assert.deepEqual(await instanceIds(home), ids, `${name}: no instance left`);
          await assertNoDecodeLeft(cache, [layers.at(-1)!.slice(7)]);
        }
        // A runtime that maps one ramsnap blob itself cannot take a chain.
        const ids = await instanceIds(home);
        await assert.rejects(
          startInstance(store, "test/w:s2", { detach: true, runtime: "cherrybomb" }),
          /restores a single RAM snapshot blob; this one is a chain of 2 RAM layers/,
        );
        assert.deepEqual(await instanceIds(home), ids);
      } finally {
        await Deno.remove(work, { recursive: true });
      }
    });
  },
});

/** Counts like the counter guest and writes each count into its ivshmem region's first word. */
const IVSHMEM_COUNTER = `#!/bin/sh
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
    addr=$(sed -n 3p "$d/resource" | cut -d' ' -f1)
    echo 1 > "$d/enable"
  fi
done
i=0
while true; do
  i=$((i+1))
  devmem "$addr" 32 $i
  echo "count $i"
  usleep 200000
done
`;

/** The first u32 (little endian) of a host file. */
async function firstWord(path: string): Promise<number> {
  using f = await Deno.open(path, { read: true });
  const b = new Uint8Array(4);
  await f.read(b);
  return new DataView(b.buffer).getUint32(0, true);
}

Deno.test({
  name:
    "a VM with an ivshmem device is snapshotted, restored and chained; each restore writes its own region",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using h = await counterHome({
      script: IVSHMEM_COUNTER,
      tag: "test/shm:1",
      devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20, mmio_addr: "0x10000000" }],
    });
    const { home, store } = h;
    const src = `shm-src-${RUN}`, r1 = `shm-r1-${RUN}`, r2 = `shm-r2-${RUN}`;
    await startInstance(store, h.ref, { ...VM, detach: true, name: src });
    await countPast(home, src, 3);
    await snapshotInstance(home, src, { tag: "test/shm:s1", after: "stop" });
    for (const [from, id, tag] of [["test/shm:s1", r1, "test/shm:s2"], ["test/shm:s2", r2, ""]]) {
      const started = await startInstance(store, from, { detach: true, name: id });
      const region = started.state.devices[0].hostPath!;
      const first = await countPast(home, id, 0);
      assert.ok(first > 3, `${id} goes on counting (${first})`);
      // The guest writes its counts through the BAR the PCI state mapped,
      // into this instance's own region.
      const at = await countPast(home, id, first + 2);
      const word = await firstWord(region);
      assert.ok(
        word >= first && word <= at + 1,
        `${id}: region holds ${word}, counts ${first}..${at}`,
      );
      if (tag) await snapshotInstance(home, id, { tag, after: "stop" });
      else await stopInstance(home, id, { force: true });
    }
    const s2 = await loadArtifact(store, "test/shm:s2");
    assert.equal(ramLayers(s2.manifest).length, 2);
  },
});

Deno.test({
  name:
    `a chain of ${MAX_RAM_LAYERS} layers restores from a warm pool, and the next snapshot is flattened`,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using h = await counterHome({ tag: "test/deep:1" });
    const { home, store } = h;
    let id = `deep-0-${RUN}`;
    await startInstance(store, h.ref, { ...VM, detach: true, name: id });
    let at = await countPast(home, id, 3);
    await snapshotInstance(home, id, { tag: "test/deep:s0", after: "stop" });
    for (let k = 1; k <= MAX_RAM_LAYERS; k++) {
      id = `deep-${k}-${RUN}`;
      await startInstance(store, `test/deep:s${k - 1}`, { detach: true, name: id });
      at = await countPast(home, id, at + 1);
      await snapshotInstance(home, id, { tag: `test/deep:s${k}`, after: "stop" });
      const a = await loadArtifact(store, `test/deep:s${k}`);
      const layers = ramLayers(a.manifest);
      if (k < MAX_RAM_LAYERS) {
        assert.equal(layers.length, k + 1, `s${k} lists its chain`);
      } else {
        // A ninth layer would exceed the cap: one full ramsnap instead.
        assert.equal(layers.length, 1, `s${k} is flattened`);
        assert.equal(a.manifest.ramSnapshot!.layers, undefined);
        const ram = a.oci.layers.find((l) => l.digest === layers[0])!;
        assert.equal(ram.mediaType, MediaTypes.ramSnapshot);
      }
    }
    // The longest chain, from a warm pool (its template built once, when the pool fills).
    const deepest = `test/deep:s${MAX_RAM_LAYERS - 1}`;
    const top = (await loadArtifact(store, deepest)).manifest.ramSnapshot!.ref;
    await dropTemplate(top);
    {
      await using pool = new WarmPool(home, { size: 1 });
      const digest = await pool.fill(deepest);
      assert.equal(pool.ready(digest), 1);
      const pooled = `deep-pool-${RUN}`;
      await startInstance(store, deepest, { pool, name: pooled, detach: true });
      await countPast(home, pooled, 3);
      await stopInstance(home, pooled, { force: true });
    }
    // The flattened snapshot restores, and chaining starts over from it.
    id = `deep-flat-${RUN}`;
    await startInstance(store, `test/deep:s${MAX_RAM_LAYERS}`, { detach: true, name: id });
    at = await countPast(home, id, at);
    await snapshotInstance(home, id, { tag: "test/deep:again", after: "stop" });
    assert.equal(ramLayers((await loadArtifact(store, "test/deep:again")).manifest).length, 2);
  },
});
