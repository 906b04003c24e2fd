/**
 * `ovm run --runtime cloud-hypervisor|firecracker` end to end through the
 * runtime (state.json, ps, logs, stop) with the contract-checking fake
 * VMMs on PATH: every API call the whole CLI path makes follows the
 * official documents.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ovmIn, readState } from "../_helpers/runtime.ts";
import { fakeBin, packFakeArtifact, readCallLog } from "../_helpers/vmm_runtimes.ts";
import { pidAlive, processStartTime } from "../../src/process/mod.ts";

for (const runtime of ["cloud-hypervisor", "firecracker"]) {
  Deno.test(`ovm run --runtime ${runtime} starts, lists, logs and stops an instance through the VMM API`, async () => {
    const home = await Deno.makeTempDir({ prefix: "ovm-run-fake-" });
    const log = join(home, "calls.jsonl");
    await using bin = await fakeBin({ log });
    let pid: number | undefined;
    try {
      await packFakeArtifact(home, runtime);
      const run = await ovmIn(
        home,
        "run",
        "--runtime",
        runtime,
        "--runtime-path",
        runtime === "firecracker" ? bin.fc : bin.ch,
        "--net",
        "none",
        "-d",
        "--name",
        "f1",
        "fake/vm:1",
      );
      assert.equal(run.code, 0, run.stderr);
      assert.doesNotMatch(run.stderr, /prefers/);
      const state = await readState(home, "f1");
      assert.equal(state.adapter, runtime);
      assert.equal(state.state, "running");
      pid = state.pid as number;
      const ps = await ovmIn(home, "ps", "--json");
      assert.match(ps.stdout, /"f1"/);
      const logs = await ovmIn(home, "logs", "f1");
      assert.match(logs.stdout, /fake .* guest booted/);
      const stop = await ovmIn(home, "stop", "f1");
      assert.equal(stop.code, 0, stop.stderr);
      assert.equal((await readState(home, "f1")).state, "stopped");
      // Gone or a zombie not yet reaped by this (parent) test process.
      assert.equal(await processStartTime(pid), undefined);
      const calls = await readCallLog(log);
      assert.ok(calls.length >= 3);
      assert.deepEqual(calls.filter((c) => c.violations.length), []);
    } finally {
      if (pid && pidAlive(pid)) Deno.kill(pid, "SIGKILL");
      await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  });
}
