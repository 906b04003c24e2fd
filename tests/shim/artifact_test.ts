/**
 * An OVMS artifact named by the `io.ovms.artifact` annotation runs through the
 * shim under a real containerd: a counting guest is snapshotted with
 * `ovm snapshot` in the shim's home, and `ctr run --annotation` restores it —
 * the count goes on from the snapshot, not from 1 — with the VM's console as
 * the task's output. A missing artifact is a clear error through ctr.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TEST_IMAGE, TestContainerd } from "../_helpers/containerd.ts";
import { serveProcess } from "../_helpers/api.ts";
import { ovmIn, readState, waitFor } from "../_helpers/runtime.ts";
import { taskInstanceId } from "../../src/shim/mod.ts";
import { dropTemplates, lastCount, packCounter, pooledQemus } from "../_helpers/snapshot.ts";
import { ContentStore } from "../../src/store/mod.ts";

// Unique: guest RAM files in /dev/shm are named by instance id, across homes.
const SRC = `shim-src-${crypto.randomUUID().slice(0, 8)}`;

Deno.test({
  name: "an OVMS snapshot named by io.ovms.artifact is restored through the shim",
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using c = await TestContainerd.start();
  const store = await ContentStore.open(c.home);
  try {
    const ref = await packCounter(store);
    let snapCount = 0;
    await t.step("a counting guest is snapshotted in the shim's home", async () => {
      const r = await ovmIn(c.home, "run", "-d", "--name", SRC, "--memory", "256M", ref);
      assert.equal(r.code, 0, r.stderr);
      await waitFor(async () => ((await lastCount(c.home, SRC)) ?? 0) > 3 || undefined, {
        timeoutMs: 120_000,
        what: "the source to count",
      });
      const s = await ovmIn(c.home, "snapshot", SRC, "-t", "test/counter:warm");
      assert.equal(s.code, 0, s.stderr);
      snapCount = (await lastCount(c.home, SRC))!;
      assert.equal((await ovmIn(c.home, "rm", "-f", SRC)).code, 0);
    });

    await t.step("ctr run --annotation io.ovms.artifact restores it and counts on", async () => {
      const log = join(c.dir, "art.log");
      await c.ctrOk(
        "run",
        "-d",
        "--log-uri",
        `file://${log}`,
        "--runtime",
        "io.containerd.ovm.v2",
        "--annotation",
        "io.ovms.artifact=test/counter:warm",
        TEST_IMAGE,
        "t-art",
        "/bin/true",
      );
      const seen = await waitFor(async () => {
        const all = [...(await Deno.readTextFile(log).catch(() => "")).matchAll(/count (\d+)/g)]
          .map((m) => Number(m[1]));
        return all.length >= 3 ? all : undefined;
      }, { timeoutMs: 60_000, what: "the restored guest to count" });
      assert.ok(
        seen[0] > 1 && seen[0] <= snapCount + 2,
        `first count ${seen[0]}, snap ${snapCount}`,
      );
      await c.ctrOk("task", "kill", "--signal", "SIGKILL", "t-art");
      await waitFor(async () => (await c.taskStatus("t-art")) === "STOPPED" || undefined, {
        what: "t-art to stop",
      });
      await c.ctrOk("task", "delete", "t-art");
      await c.ctrOk("container", "rm", "t-art");
    });

    await t.step(
      "with the node's ovm serve and a warm pool, the task takes a pooled VM",
      async () => {
        const serve = await serveProcess(
          c.home,
          c.ovmSocket,
          "--warm-snapshot",
          "test/counter:warm",
          "--warm-pool",
          "1",
        );
        try {
          await waitFor(() => /warm pool of 1 ready/.test(serve.stderr()) || undefined, {
            timeoutMs: 120_000,
            what: "the warm pool",
          });
          const waiting = await pooledQemus(c.home);
          assert.equal(waiting.length, 1, "one pooled QEMU waits");
          const log = join(c.dir, "pool.log");
          await c.ctrOk(
            "run",
            "-d",
            "--log-uri",
            `file://${log}`,
            "--runtime",
            "io.containerd.ovm.v2",
            "--annotation",
            "io.ovms.artifact=test/counter:warm",
            TEST_IMAGE,
            "t-pool",
            "/bin/true",
          );
          const bundle = join(c.dir, "state/io.containerd.runtime.v2.task/default/t-pool");
          const s = await readState(c.home, taskInstanceId(bundle, "default", "t-pool"));
          assert.equal(s.pid, waiting[0], "the task's VM is the QEMU the pool had waiting");
          await waitFor(
            async () => /count \d+/.test(await Deno.readTextFile(log).catch(() => "")) || undefined,
            { what: "the pooled guest to count" },
          );
          await c.ctrOk("task", "kill", "t-pool");
          await waitFor(async () => (await c.taskStatus("t-pool")) === "STOPPED" || undefined, {
            what: "t-pool to stop",
          });
          await c.ctrOk("task", "delete", "t-pool");
          await c.ctrOk("container", "rm", "t-pool");
        } finally {
          await serve.stop("SIGTERM");
        }
      },
    );

    await t.step("an artifact the node does not have is a clear error", async () => {
      const r = await c.ctr(
        "run",
        "--rm",
        "--runtime",
        "io.containerd.ovm.v2",
        "--annotation",
        "io.ovms.artifact=test/absent:1",
        TEST_IMAGE,
        "t-absent",
        "/bin/true",
      );
      assert.equal(r.code, 1);
      assert.match(
        r.stderr,
        /artifact "test\/absent:1" \(annotation io\.ovms\.artifact\) is not in the shim's store/,
      );
      await c.ctr("container", "rm", "t-absent");
    });
  } finally {
    await dropTemplates(store);
  }
});
