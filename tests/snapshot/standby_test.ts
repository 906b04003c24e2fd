/**
 * Standby and resume (spec 8.7) under QEMU TCG: a guest that writes a mark
 * to its root disk is put on standby and resumed twice (the second standby
 * is a snapshot of a restored VM: a chain layer); it keeps its instance id,
 * its console log goes on where it stopped, and the mark is read back from
 * the disk after the guest dropped its page cache.
 */
import assert from "node:assert/strict";
import { getInstance, instancePaths } from "../../src/runtime/mod.ts";
import { startInstance } from "../../src/runtime/mod.ts";
import { loadArtifact, ramLayers } from "../../src/store/mod.ts";
import { counterHome, lastCount } from "../_helpers/snapshot.ts";
import { isVmProcess, ovmIn, waitFor } from "../_helpers/runtime.ts";

const VM = { memoryBytes: 256 << 20, cpus: 1, accel: "tcg" as const, net: "none" as const };

/** Counts; at 3 writes a mark to its root disk; every 5th count reads it back from the disk. */
const DISK_COUNTER = `#!/bin/sh
i=0
while true; do
  i=$((i+1))
  if [ $i -eq 3 ]; then echo "mark-3" > /root/mark; sync; fi
  if [ $((i % 5)) -eq 0 ]; then
    sync; echo 3 > /proc/sys/vm/drop_caches
    echo "count $i disk $(cat /root/mark 2>/dev/null || echo none)"
  else
    echo "count $i"
  fi
  usleep 200000
done
`;

async function countPast(home: string, id: string, n: number): Promise<number> {
  return await waitFor(async () => {
    const c = (await lastCount(home, id)) ?? 0;
    return c > n ? c : undefined;
  }, { timeoutMs: 90_000, what: `instance ${id} to count past ${n}` });
}

Deno.test({
  name: "standby and resume keep the instance's id, disk and console, twice over",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using h = await counterHome({ script: DISK_COUNTER, tag: "test/disk:1" });
    const { home, store } = h;
    const id = `standby-${crypto.randomUUID().slice(0, 8)}`;
    await startInstance(store, h.ref, { ...VM, detach: true, name: id });
    await countPast(home, id, 6);

    for (const round of [1, 2]) {
      await t.step(`standby ${round}: snapshot + stop, the instance stays`, async () => {
        const pid = (await getInstance(home, id)).pid!;
        const r = await ovmIn(home, "standby", id, "--json");
        assert.equal(r.code, 0, r.stderr);
        const out = JSON.parse(r.stdout);
        assert.equal(out.instance, id);
        const st = await getInstance(home, id);
        assert.equal(st.state, "stopped");
        assert.equal(st.standby?.digest, out.digest);
        assert.ok(!(await isVmProcess(pid)), "the VM is gone");
        const a = await loadArtifact(store, out.digest);
        assert.equal(ramLayers(a.manifest).length, round, `round ${round}: RAM layers`);
      });

      await t.step(`resume ${round}: the same id, the console and the disk go on`, async () => {
        const log = instancePaths(home, id).consoleLog;
        const before = await Deno.readTextFile(log);
        const last = (await lastCount(home, id))!;
        const r = await ovmIn(home, "resume", id);
        assert.equal(r.code, 0, r.stderr);
        const st = await getInstance(home, id);
        assert.equal(st.state, "running");
        assert.equal(st.standby, undefined);
        const now = await countPast(home, id, last + 6);
        const text = await Deno.readTextFile(log);
        assert.ok(text.startsWith(before), "the console log kept what it had");
        const counts = [...text.slice(before.length).matchAll(/count (\d+)/g)].map((m) => +m[1]);
        assert.ok(
          counts[0] >= last && counts[0] <= last + 3,
          `goes on at ${counts[0]} after ${last}`,
        );
        const disk = [...text.slice(before.length).matchAll(/disk (\S+)/g)].map((m) => m[1]);
        assert.ok(disk.length > 0 && disk.every((d) => d === "mark-3"), `disk reads ${disk}`);
        assert.ok(now > last);
      });
    }

    await t.step("resume refuses a running instance and one never put on standby", async () => {
      const running = await ovmIn(home, "resume", id);
      assert.equal(running.code, 1, running.stderr);
      assert.match(running.stderr, /is running, not on standby/);
      await ovmIn(home, "stop", "-f", id);
      const stopped = await ovmIn(home, "resume", id);
      assert.equal(stopped.code, 2, stopped.stderr);
      assert.match(stopped.stderr, /is stopped, not on standby/);
    });
  },
});
