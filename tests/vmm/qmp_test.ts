/**
 * The QMP client against a real QEMU with no guest (`-machine none`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { QmpClient } from "../../src/vmm/qemu/qmp.ts";

Deno.test("the QMP client negotiates, runs commands, reports errors and delivers events", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ovm-qmp-" });
  const sock = join(dir, "qmp.sock");
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-machine",
      "none",
      "-nodefaults",
      "-display",
      "none",
      "-qmp",
      `unix:${sock},server=on,wait=off`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    for (let i = 0; i < 100; i++) {
      if (await Deno.stat(sock).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await using qmp = await QmpClient.connect(sock);
    assert.match(qmp.version, /^\d+\.\d+\.\d+$/);
    const status = await qmp.execute<{ status: string; running: boolean }>("query-status");
    assert.equal(typeof status.running, "boolean");
    await assert.rejects(qmp.execute("no-such-command"), /CommandNotFound/);
    const stopped = qmp.waitEvent(["STOP"], { timeoutMs: 5000 });
    await qmp.execute("stop");
    assert.equal((await stopped).event, "STOP");
    const shutdown = qmp.waitEvent(["SHUTDOWN"], { timeoutMs: 5000 });
    await qmp.execute("quit");
    assert.equal((await shutdown).event, "SHUTDOWN");
    await qmp.closed;
    assert.equal((await child.status).code, 0);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
