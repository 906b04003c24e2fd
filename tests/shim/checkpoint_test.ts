/**
 * containerd's checkpoint and restore of an ovm task under a real containerd
 * 1.6: `ctr containers checkpoint --task` of a counting VM becomes an OVMS RAM snapshot,
 * exported into the directory containerd tars into its checkpoint image; the
 * VM goes on. `ctr containers restore --live` of that image creates a task
 * from it, and its VM counts on from where the checkpoint was taken (not
 * from 1), its stdout still the workload's own lines.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TEST_IMAGE, TestContainerd } from "../_helpers/containerd.ts";
import { waitFor } from "../_helpers/runtime.ts";
import { dropTemplates } from "../_helpers/snapshot.ts";
import { taskInstanceId } from "../../src/shim/mod.ts";
import { instancePaths } from "../../src/runtime/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";

const COUNT = 'i=0; while true; do i=$((i+1)); echo "n $i"; sleep 0.2; done';

function counts(text: string): number[] {
  return [...text.matchAll(/^(?:@o\|)?n (\d+)$/gm)].map((m) => Number(m[1]));
}

Deno.test({
  name: "ctr containers checkpoint --task snapshots the VM and restore --live goes on from it",
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using c = await TestContainerd.start();
  const store = await ContentStore.open(c.home);
  try {
    const log = join(c.dir, "cp.log");
    let image = "";
    let atCheckpoint = 0;
    await t.step("a running task is checkpointed and goes on", async () => {
      await c.ctrOk(
        "run",
        "-d",
        "--log-uri",
        `file://${log}`,
        "--runtime",
        "io.containerd.ovm.v2",
        "--memory-limit",
        String(256 << 20),
        TEST_IMAGE,
        "t-cp",
        "/bin/sh",
        "-c",
        COUNT,
      );
      await waitFor(
        async () => counts(await Deno.readTextFile(log).catch(() => "")).length >= 5 || undefined,
        {
          timeoutMs: 120_000,
          what: "t-cp to count",
        },
      );
      // `containers checkpoint --task` (not `task checkpoint`) records the image and runtime in
      // the checkpoint index, which `containers restore` needs.
      image = "checkpoint/t-cp:1";
      await c.ctrOk("containers", "checkpoint", "--task", "t-cp", image);
      atCheckpoint = counts(await Deno.readTextFile(log)).at(-1)!;
      // The VM resumed: it counts on.
      await waitFor(
        async () => counts(await Deno.readTextFile(log)).at(-1)! > atCheckpoint + 3 || undefined,
        { what: "t-cp to count on after the checkpoint" },
      );
      assert.equal(await c.taskStatus("t-cp"), "RUNNING");
      await c.ctrOk("task", "kill", "--signal", "SIGKILL", "t-cp");
      await waitFor(async () => (await c.taskStatus("t-cp")) === "STOPPED" || undefined, {
        what: "t-cp to stop",
      });
      await c.ctrOk("task", "delete", "t-cp");
      await c.ctrOk("container", "rm", "t-cp");
    });

    await t.step("ctr containers restore --live restores the VM where it was", async () => {
      await c.ctrOk("containers", "restore", "--live", "t-cp", image);
      const bundle = join(c.dir, "state/io.containerd.runtime.v2.task/default/t-cp");
      const consoleLog = instancePaths(c.home, taskInstanceId(bundle, "default", "t-cp"))
        .consoleLog;
      const seen = await waitFor(async () => {
        const n = counts(await Deno.readTextFile(consoleLog).catch(() => ""));
        return n.length >= 3 ? n : undefined;
      }, { timeoutMs: 120_000, what: "the restored VM to count" });
      // It goes on from the checkpoint (it was paused there), not from a fresh boot's 1.
      assert.ok(
        seen[0] > 3 && seen[0] <= atCheckpoint + 3,
        `first count ${seen[0]}, checkpoint at ${atCheckpoint}`,
      );
      assert.equal(await c.taskStatus("t-cp"), "RUNNING");
      // The shim removed its export from what containerd unpacked (containerd keeps the rest).
      const unpacked: string[] = [];
      for await (const e of Deno.readDir(join(c.dir, "xdg"))) {
        for await (const f of Deno.readDir(join(c.dir, "xdg", e.name))) unpacked.push(f.name);
      }
      assert.deepEqual(unpacked, []);
      await c.ctrOk("task", "kill", "--signal", "SIGKILL", "t-cp");
      await waitFor(async () => (await c.taskStatus("t-cp")) === "STOPPED" || undefined, {
        what: "the restored t-cp to stop",
      });
      await c.ctrOk("task", "delete", "t-cp");
      await c.ctrOk("container", "rm", "t-cp");
    });
  } finally {
    await dropTemplates(store);
  }
});
