/**
 * `ovm snapshot` and restore on Cloud Hypervisor and Firecracker, end to end
 * through the CLI with the contract-checking fake VMMs: run → snapshot →
 * the artifact carries a ramsnap and a record naming the VMM and its
 * version → `ovm run <snapshot>` restores through the VMM's API (every call
 * checked against the official OpenAPI document) → stop. Also: a snapshot
 * is refused on another runtime, with both named.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ovmIn, readState } from "../_helpers/runtime.ts";
import {
  BASE_BYTE,
  fakeBin,
  packFakeArtifact,
  readCallLog,
  readDiskBytes,
  TOP_BYTE,
  TOP_OFFSET,
} from "../_helpers/vmm_runtimes.ts";
import { pidAlive } from "../../src/process/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { readQcow2Header } from "../../src/disk/mod.ts";
import { checkOptions, dropTemplate } from "../../src/runtime/mod.ts";
import type { StartOptions } from "../../src/runtime/mod.ts";
import { RESTORE_ANNOTATION, type RestoreRecord } from "../../src/runtime/mod.ts";

const VERSIONS: Record<string, string> = {
  "cloud-hypervisor": "v53.0-fake",
  firecracker: "1.17.0-fake",
};

for (const runtime of ["cloud-hypervisor", "firecracker"]) {
  Deno.test(`ovm snapshot of a ${runtime} instance restores through the VMM API, and only on ${runtime}`, async () => {
    const home = await Deno.makeTempDir({ prefix: "ovm-snap-fake-" });
    const log = join(home, "calls.jsonl");
    await using bin = await fakeBin({ log });
    const binPath = runtime === "firecracker" ? bin.fc : bin.ch;
    const pids: number[] = [];
    let ramsnap: string | undefined;
    try {
      await packFakeArtifact(home, runtime);
      const runArgs = ["--runtime", runtime, "--runtime-path", binPath, "--net", "none", "-d"];
      const run = await ovmIn(
        home,
        "run",
        ...runArgs,
        "--memory",
        "64M",
        "--name",
        "s1",
        "fake/vm:1",
      );
      assert.equal(run.code, 0, run.stderr);
      pids.push((await readState(home, "s1")).pid as number);

      const snap = await ovmIn(home, "snapshot", "s1", "-t", "fake/snap:1");
      assert.equal(snap.code, 0, snap.stderr);
      assert.equal((await readState(home, "s1")).state, "running");

      const store = await ContentStore.open(home);
      const base = await loadArtifact(store, "fake/vm:1");
      const art = await loadArtifact(store, "fake/snap:1");
      assert.ok(art.manifest.ramSnapshot, "the snapshot has a ramSnapshot");
      ramsnap = art.manifest.ramSnapshot.ref;
      const record: RestoreRecord = JSON.parse(art.manifest.annotations![RESTORE_ANNOTATION]);
      assert.equal(record.vmm, runtime);
      assert.equal(record.vmmVersion, VERSIONS[runtime]);
      assert.equal(record.memoryBytes, 64 << 20);
      assert.match(record.cmdline, /ovms\.net=none/);
      assert.deepEqual(record.diskChain, art.manifest.diskLayers.map((l) => l.ref));
      const top = art.manifest.diskLayers.at(-1)!;
      if (runtime === "firecracker") {
        // The flattened disk is the whole chain: one self-contained layer.
        assert.equal(art.manifest.diskLayers.length, 1);
      } else {
        assert.deepEqual(
          art.manifest.diskLayers.slice(0, -1).map((l) => l.ref),
          base.manifest.diskLayers.map((l) => l.ref),
        );
      }
      // The captured disk names no backing file (a layer must stand alone).
      const layerTar = store.blobPath(top.ref);
      const raw = await Deno.readFile(layerTar);
      const img = join(home, "layer.qcow2");
      await Deno.writeFile(img, raw.subarray(512));
      assert.equal((await readQcow2Header(img)).backingFile ?? undefined, undefined);
      if (runtime === "firecracker") {
        // It holds the whole disk the guest saw: both layers' bytes.
        assert.equal((await readDiskBytes(img, 0, 1))[0], BASE_BYTE);
        assert.equal((await readDiskBytes(img, TOP_OFFSET, 1))[0], TOP_BYTE);
      }

      // Another runtime is refused, naming both.
      const other = runtime === "firecracker" ? "cloud-hypervisor" : "firecracker";
      const wrong = await ovmIn(
        home,
        "run",
        "--runtime",
        other,
        "--net",
        "none",
        "-d",
        "fake/snap:1",
      );
      assert.notEqual(wrong.code, 0);
      assert.match(wrong.stderr, new RegExp(`runtime is "${other}".*recorded "${runtime}"`));
      const qemu = await ovmIn(home, "run", "--runtime", "qemu", "-d", "fake/snap:1");
      assert.notEqual(qemu.code, 0);
      assert.match(qemu.stderr, new RegExp(`runtime is "qemu".*recorded "${runtime}"`));

      const restored = await ovmIn(home, "run", ...runArgs, "--name", "r1", "fake/snap:1");
      assert.equal(restored.code, 0, restored.stderr);
      const state = await readState(home, "r1");
      assert.equal(state.adapter, runtime);
      assert.equal(state.state, "running");
      pids.push(state.pid as number);
      for (const id of ["r1", "s1"]) {
        const stop = await ovmIn(home, "stop", id);
        assert.equal(stop.code, 0, stop.stderr);
      }
      const calls = await readCallLog(log);
      const want = runtime === "firecracker" ? "PUT /snapshot/load" : "PUT /vm.restore";
      assert.ok(calls.some((c) => `${c.method} ${c.path}`.endsWith(want.split(" ")[1])), want);
      assert.deepEqual(calls.filter((c) => c.violations.length), []);
    } finally {
      for (const pid of pids) if (pidAlive(pid)) Deno.kill(pid, "SIGKILL");
      if (ramsnap) await dropTemplate(ramsnap);
      await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  });
}

Deno.test("a QEMU snapshot asked to run on cloud-hypervisor or firecracker is refused, naming both", () => {
  const record = { recordVersion: 1, vmm: "qemu", memoryBytes: 64 << 20 } as RestoreRecord;
  for (const runtime of ["cloud-hypervisor", "firecracker"]) {
    assert.throws(
      () => checkOptions(record, { runtime } as StartOptions),
      new RegExp(`runtime is "${runtime}", the snapshot recorded "qemu"`),
    );
  }
  assert.doesNotThrow(() => checkOptions(record, { runtime: "qemu" } as StartOptions));
});
