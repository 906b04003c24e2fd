/**
 * RAM snapshots end to end under QEMU TCG: one counting guest (256 MiB,
 * 1 vCPU) boots once; it is snapshotted, restored (through `ovm run`, a warm
 * pool, and after a push/pull through the loopback registry) and must go on
 * counting where it was; broken or mismatched snapshots are refused with
 * nothing left behind.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { digestFile, type Manifest } from "../../src/manifest/mod.ts";
import { loadArtifact, writeArtifact } from "../../src/store/mod.ts";
import { getInstance, startInstance, stopInstance } from "../../src/runtime/mod.ts";
import { getAdapter } from "../../src/vmm/mod.ts";
import { WarmPool } from "../../src/runtime/mod.ts";
import { dropTemplate, SNAPSHOT_CACHE } from "../../src/runtime/mod.ts";
import { pullToStore } from "../../src/oci/mod.ts";
import {
  assertNoDecodeLeft,
  cacheEntries,
  counterHome,
  counts,
  dropTemplates,
  lastCount,
} from "../_helpers/snapshot.ts";
import { isVmProcess, ovmIn, waitFor } from "../_helpers/runtime.ts";
import { startRegistry } from "../_helpers/registry.ts";

const VM = { memoryBytes: 256 << 20, cpus: 1, accel: "tcg" as const, net: "none" as const };

/** Waits until instance `id` printed a count above `n`; returns its counts. */
async function countsAbove(home: string, id: string, n: number): Promise<number[]> {
  await waitFor(async () => ((await lastCount(home, id)) ?? 0) > n ? true : undefined, {
    timeoutMs: 60_000,
    what: `instance ${id} to count past ${n}`,
  });
  return await counts(home, id);
}

async function instanceIds(home: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(join(home, "instances"))) out.push(e.name);
  } catch { /* none */ }
  return out.sort();
}

/** A copy of the snapshot artifact with its manifest changed by `edit`, tagged `tag`. */
async function variant(
  store: Awaited<ReturnType<typeof counterHome>>["store"],
  ref: string,
  tag: string,
  edit: (m: Manifest) => Manifest,
): Promise<void> {
  const a = await loadArtifact(store, ref);
  const d = await writeArtifact(store, edit(structuredClone(a.manifest)), {
    subject: a.oci.subject ? { ...a.oci.subject } : undefined,
  });
  await store.tag(tag, d);
}

Deno.test({
  name: "a counting guest is snapshotted and every restore goes on counting where it was",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using h = await counterHome();
    const { home, store } = h;
    const source = await startInstance(store, h.ref, { ...VM, detach: true });
    const src = source.state.id;
    await countsAbove(home, src, 3);

    // The count the guest had printed when it was snapshotted lies between
    // these two (the source resumes before the command returns).
    let beforeSnap = 0;
    let snapCount = 0;
    await t.step("ovm snapshot makes an artifact and the source resumes", async () => {
      beforeSnap = (await lastCount(home, src))!;
      const r = await ovmIn(home, "snapshot", src, "-t", "test/counter:snap");
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^test\/counter:snap sha256:[0-9a-f]{64}/);
      snapCount = (await lastCount(home, src))!;
      const a = await loadArtifact(store, "test/counter:snap");
      assert.ok(a.manifest.ramSnapshot);
      assert.equal(a.oci.subject?.digest, (await store.resolve(h.ref)).digest);
      assert.equal(a.manifest.diskLayers.length, 3, "the overlay became a diff layer");
      assert.ok(a.manifest.annotations?.["ovms.snapshot.restore"]);
      assert.ok(a.manifest.annotations?.["ovms.system.initrd.version"]);
      await countsAbove(home, src, snapCount + 2);
    });

    await t.step("ovm run on the snapshot continues the count, not from 1", async () => {
      const r = await ovmIn(home, "run", "-d", "--name", "restored", "test/counter:snap");
      assert.equal(r.code, 0, r.stderr);
      const seen = await countsAbove(home, "restored", snapCount + 3);
      assert.ok(
        seen[0] >= beforeSnap && seen[0] <= snapCount + 2,
        `first count ${seen[0]}, snapshot at ${snapCount}`,
      );
      for (let i = 1; i < seen.length; i++) assert.equal(seen[i], seen[i - 1] + 1);
    });

    await t.step(
      "a restored instance is snapshotted again as a RAM diff layer and keeps running",
      async () => {
        const before = (await lastCount(home, "restored"))!;
        const r = await ovmIn(home, "snapshot", "restored", "-t", "test/counter:chained");
        assert.equal(r.code, 0, r.stderr);
        const chained = await loadArtifact(store, "test/counter:chained");
        assert.equal(
          chained.manifest.ramSnapshot?.layers?.length,
          2,
          "base + diff (chain_test.ts)",
        );
        await countsAbove(home, "restored", before + 2);
        await stopInstance(home, "restored", { force: true });
      },
    );

    const a = await loadArtifact(store, "test/counter:snap");
    const hex = a.manifest.ramSnapshot!.ref.slice(7);
    const template = join(SNAPSHOT_CACHE, hex, "memory");

    await t.step("two clones from a warm pool run at once; the template is unchanged", async () => {
      const before = (await digestFile(template)).digest;
      await using pool = new WarmPool(home, { size: 2 });
      const digest = await pool.fill("test/counter:snap");
      assert.equal(pool.ready(digest), 2);
      const one = await startInstance(store, "test/counter:snap", { pool, name: "clone-1" });
      const two = await startInstance(store, "test/counter:snap", { pool, name: "clone-2" });
      assert.notEqual(one.state.pid, two.state.pid);
      const c1 = await countsAbove(home, "clone-1", snapCount + 4);
      const c2 = await countsAbove(home, "clone-2", snapCount + 4);
      for (const c of [c1, c2]) assert.ok(c[0] >= beforeSnap && c[0] <= snapCount + 2);
      assert.ok(await isVmProcess(one.state.pid!) && await isVmProcess(two.state.pid!));
      // Each has its own overlay and its own vmgenid.
      const argv1 = one.state.vm!.argv.join(" "), argv2 = two.state.vm!.argv.join(" ");
      assert.notEqual(argv1.match(/guid=([0-9a-f-]+)/)![1], argv2.match(/guid=([0-9a-f-]+)/)![1]);
      await stopInstance(home, "clone-1", { force: true });
      await stopInstance(home, "clone-2", { force: true });
      await pool.close();
      assert.equal((await digestFile(template)).digest, before);
    });

    await t.step("a pool left behind by a killed process is reaped by the next pool", async () => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("./testdata/pool_child.ts", import.meta.url).pathname,
          home,
          "test/counter:snap",
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      let orphan = 0;
      try {
        const reader = child.stdout.getReader();
        const { value } = await reader.read();
        assert.match(new TextDecoder().decode(value), /ready/);
        reader.releaseLock();
        for await (const e of Deno.readDir(join(home, "pool"))) {
          orphan =
            JSON.parse(await Deno.readTextFile(join(home, "pool", e.name, "owner.json"))).pid;
        }
      } finally {
        child.kill("SIGKILL");
        await child.status;
        await child.stdout.cancel().catch(() => {});
      }
      assert.ok(orphan > 0 && await isVmProcess(orphan), "the pooled QEMU outlived its owner");
      await using pool = new WarmPool(home, { size: 0 });
      await pool.fill("test/counter:snap");
      await waitFor(async () => !(await isVmProcess(orphan)) || undefined, {
        what: "the orphaned pooled QEMU to be killed",
        timeoutMs: 10_000,
      });
      assert.deepEqual(await Array.fromAsync(Deno.readDir(join(home, "pool"))), []);
    });

    await t.step(
      "a snapshot recorded with another initrd version is refused, naming both",
      async () => {
        await variant(store, "test/counter:snap", "test/counter:other-initrd", (m) => {
          m.annotations!["ovms.system.initrd.version"] = "init1-other";
          return m;
        });
        const ids = await instanceIds(home);
        const r = await ovmIn(home, "run", "-d", "test/counter:other-initrd");
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /initrd "init1-other"/);
        const current = a.manifest.annotations!["ovms.system.initrd.version"];
        assert.ok(r.stderr.includes(`"${current}"`), r.stderr);
        assert.deepEqual(await instanceIds(home), ids);
      },
    );

    await t.step(
      "a truncated ramsnap and an oversized one are refused with nothing left behind",
      async () => {
        await Deno.remove(join(SNAPSHOT_CACHE, hex), { recursive: true });
        const blob = await Deno.readFile(store.blobPath(a.manifest.ramSnapshot!.ref));
        const cut = await store.writeBlob(blob.subarray(0, Math.floor(blob.byteLength / 2)));
        await variant(store, "test/counter:snap", "test/counter:truncated", (m) => {
          m.ramSnapshot!.ref = cut.digest;
          return m;
        });
        // The same bytes, but the record says the guest had 64 MiB: the
        // memory section is over that cap (an lz4 bomb as far as ovm knows).
        await variant(store, "test/counter:snap", "test/counter:bomb", (m) => {
          const rec = JSON.parse(m.annotations!["ovms.snapshot.restore"]);
          rec.memoryBytes = 64 << 20;
          m.annotations!["ovms.snapshot.restore"] = JSON.stringify(rec);
          return m;
        });
        const ids = await instanceIds(home);
        const cache = await cacheEntries();
        for (const tag of ["test/counter:truncated", "test/counter:bomb"]) {
          const r = await ovmIn(home, "run", "-d", tag);
          assert.notEqual(r.code, 0, tag);
          assert.match(r.stderr, /RAM snapshot .* is invalid/, r.stderr);
          assert.deepEqual(await instanceIds(home), ids, "no instance left");
          await assertNoDecodeLeft(cache, [hex, cut.digest.slice(7)]);
        }
      },
    );

    await t.step(
      "a paused instance's snapshot restores running, and the source stays paused",
      async () => {
        const qemu = getAdapter("qemu");
        await qemu.pause(source.state.vm!);
        const r = await ovmIn(home, "snapshot", src, "-t", "test/counter:paused");
        assert.equal(r.code, 0, r.stderr);
        assert.equal((await getInstance(home, src)).state, "paused");
        const at = (await lastCount(home, src))!;
        const run = await ovmIn(home, "run", "-d", "--name", "from-paused", "test/counter:paused");
        assert.equal(run.code, 0, run.stderr);
        const seen = await countsAbove(home, "from-paused", at + 2);
        assert.ok(seen[0] > 1 && seen[0] <= at + 2, `first ${seen[0]}, snapshot at ${at}`);
        await stopInstance(home, "from-paused", { force: true });
        await qemu.resume(source.state.vm!);
        await countsAbove(home, src, at + 2);
      },
    );

    await t.step(
      "an mlock_required snapshot is locked by the restoring process; detached runs are refused",
      async () => {
        const r = await ovmIn(home, "snapshot", src, "-t", "test/counter:locked", "--mlock");
        assert.equal(r.code, 0, r.stderr);
        const locked = await loadArtifact(store, "test/counter:locked");
        assert.equal(locked.manifest.ramSnapshot!.mlock_required, true);
        const ids = await instanceIds(home);
        const detached = await ovmIn(home, "run", "-d", "test/counter:locked");
        assert.equal(detached.code, 2, detached.stderr);
        assert.match(detached.stderr, /mlock_required/);
        assert.deepEqual(await instanceIds(home), ids);
        const vmLck = async () =>
          Number((await Deno.readTextFile("/proc/self/status")).match(/VmLck:\s+(\d+)/)![1]);
        const before = await vmLck();
        const fg = await startInstance(store, "test/counter:locked", { name: "locked" });
        assert.ok((await vmLck()) - before >= 256 * 1024, "the template is locked in this process");
        await countsAbove(home, "locked", 1);
        await stopInstance(home, "locked", { force: true });
        await fg.vm.exited;
        await dropTemplate(locked.manifest.ramSnapshot!.ref);
        assert.ok((await vmLck()) <= before);
      },
    );

    await t.step("a snapshot pushed, deleted locally, gc'd and pulled back restores", async () => {
      await using reg = await startRegistry();
      const remote = `${reg.host}/snap/counter:1`;
      const r = await ovmIn(
        home,
        "snapshot",
        src,
        "-t",
        "test/counter:snap2",
        "--push",
        remote,
        "--stop",
      );
      assert.equal(r.code, 0, r.stderr);
      const at = (await lastCount(home, src))!;
      const snap2 = await loadArtifact(store, "test/counter:snap2");
      await Deno.remove(join(SNAPSHOT_CACHE, snap2.manifest.ramSnapshot!.ref.slice(7)), {
        recursive: true,
      }).catch(() => {});
      // Every snapshot and the base go; only the pulled copy will be back.
      for (const { name } of await store.listRefs()) await store.untag(name);
      await ovmIn(home, "rm", "-f", src);
      await ovmIn(home, "rm", "-f", "restored");
      await ovmIn(home, "rm", "-f", "clone-1");
      await ovmIn(home, "rm", "-f", "clone-2");
      await ovmIn(home, "rm", "-f", "from-paused");
      await ovmIn(home, "rm", "-f", "locked");
      await ovmIn(home, "rm", "-f", "chained");
      await dropTemplates(store); // before gc forgets which blobs they belong to
      await store.gc();
      assert.equal(await store.has(snap2.manifest.ramSnapshot!.ref), false);
      await pullToStore(store, remote, { home });
      const run = await ovmIn(home, "run", "-d", "--name", "pulled", remote);
      assert.equal(run.code, 0, run.stderr);
      const seen = await countsAbove(home, "pulled", at + 2);
      assert.ok(seen[0] > 1 && seen[0] <= at + 2, `first ${seen[0]}, snapshot at ${at}`);
      await stopInstance(home, "pulled", { force: true });
    });
  },
});
