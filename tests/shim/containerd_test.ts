/**
 * The ovm shim under a real containerd 1.6 (its own root, state, config and
 * sockets in a temp dir): `ctr image import` of an OCI archive built with
 * umoci from busybox-static, then `ctr run --runtime io.containerd.ovm.v2`
 * boots a VM under QEMU TCG from the image's rootfs. Output, exit codes,
 * kill, a VM that dies, cleanup, and the faults (containerd restarted, shim
 * killed, an unsupported spec field).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TEST_IMAGE, TestContainerd } from "../_helpers/containerd.ts";
import { readState, waitFor } from "../_helpers/runtime.ts";
import { taskInstanceId } from "../../src/shim/mod.ts";
import { pidAlive } from "../../src/process/mod.ts";

const RT = ["--runtime", "io.containerd.ovm.v2", "--memory-limit", String(256 << 20)];
const LOOP = 'echo started; trap "echo got term; exit 42" TERM INT; while true; do sleep 1; done';

function bundleOf(c: TestContainerd, id: string): string {
  return join(c.dir, "state", "io.containerd.runtime.v2.task", "default", id);
}

async function leftovers(c: TestContainerd, id: string): Promise<string[]> {
  const found: string[] = [];
  const inst = join(c.home, "instances", taskInstanceId(bundleOf(c, id), "default", id));
  if (await Deno.stat(inst).then(() => true, () => false)) found.push(inst);
  for (const d of ["state/s", `state/io.containerd.runtime.v2.task/default/${id}`]) {
    const p = join(c.dir, d);
    try {
      for await (const e of Deno.readDir(p)) found.push(join(p, e.name));
    } catch { /* gone */ }
  }
  const mi = await Deno.readTextFile("/proc/self/mountinfo");
  found.push(...mi.split("\n").map((l) => l.split(" ")[4]).filter((m) => m?.includes(`/${id}/`)));
  found.push(...(await c.shimPids(id)).map((p) => `shim pid ${p}`));
  return found;
}

function startDetached(c: TestContainerd, id: string): Promise<string> {
  return c.runDetached(id, LOOP);
}

async function waitStopped(c: TestContainerd, id: string): Promise<void> {
  await waitFor(async () => (await c.taskStatus(id)) === "STOPPED" || undefined, {
    timeoutMs: 60_000,
    what: `task ${id} to stop`,
  });
}

Deno.test({
  name: "containerd runs tasks as ovm VMs through the shim",
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using c = await TestContainerd.start();

  await t.step("ctr run: stdout and stderr arrive apart, the exit code propagates", async () => {
    const r = await c.ctr(
      "run",
      "--rm",
      ...RT,
      TEST_IMAGE,
      "t-run",
      "/bin/sh",
      "-c",
      'echo "out $(id -u) $PWD $HOME"; echo err-line >&2; exit 3',
    );
    assert.equal(r.code, 3, `${r.stderr}\n${await c.logTail()}`);
    // The image's User and WorkingDir reach the spec (containerd) and the VM (ovms-init).
    assert.equal(r.stdout, "out 1000 /work /home/app\n");
    assert.match(r.stderr, /^err-line$/m);
    // Kernel and init messages are not the workload's output.
    assert.doesNotMatch(r.stdout + r.stderr, /OVMS-EXIT|reboot:|ovms-init/);
    assert.deepEqual(await leftovers(c, "t-run"), []);
  });

  await t.step(
    "stdin: the workload reads what is piped into ctr run, then end of file",
    async () => {
      const r = await c.ctrWithStdin(
        "first line\nsecond\nthird\n",
        "run",
        "--rm",
        ...RT,
        TEST_IMAGE,
        "t-stdin",
        "/bin/sh",
        "-c",
        // cat ends only at end of file: ctr's stdin closing (CloseIO) must reach the guest.
        'read x; echo "got $x"; cat; echo done',
      );
      assert.equal(r.code, 0, `${r.stderr}\n${await c.logTail()}`);
      assert.equal(r.stdout, "got first line\nsecond\nthird\ndone\n");
      assert.deepEqual(await leftovers(c, "t-stdin"), []);
    },
  );

  await t.step(
    "the OCI process's args, env and cwd and the CPU and memory limits reach the VM",
    async () => {
      const r = await c.ctr(
        "run",
        "--rm",
        "--runtime",
        "io.containerd.ovm.v2",
        "--memory-limit",
        String(200 << 20),
        "--cpus",
        "2",
        "--env",
        "GREETING=hi there",
        "--cwd",
        "/tmp",
        TEST_IMAGE,
        "t-env",
        "/bin/sh",
        "-c",
        'echo "cpus $(busybox nproc)"; busybox grep MemTotal /proc/meminfo; /app/entry.sh "a b"',
      );
      assert.equal(r.code, 7, r.stderr);
      assert.match(r.stdout, /^cpus 2$/m);
      const kib = Number(/^MemTotal:\s+(\d+) kB$/m.exec(r.stdout)?.[1]);
      assert.ok(kib > 150 * 1024 && kib <= 200 * 1024, `MemTotal ${kib} kB for a 200 MiB limit`);
      assert.match(r.stdout, /^ARGV: a b$/m);
      assert.match(r.stdout, /^CWD: \/tmp$/m);
      assert.match(r.stdout, /^UID: 1000 GID: 1000$/m);
      assert.match(r.stdout, /^ENV-GREETING: hi there$/m);
    },
  );

  await t.step("ctr run -d, task ls, metrics, kill: SIGTERM stops it gracefully", async () => {
    const log = await startDetached(c, "t-kill");
    assert.equal(await c.taskStatus("t-kill"), "RUNNING");
    // Stats: the VMM process's CPU time and memory, as cgroup v2 metrics ctr decodes.
    const m = JSON.parse((await c.ctrOk("task", "metrics", "--format", "json", "t-kill")).stdout);
    assert.ok(m.cpu.usage_usec > 0, JSON.stringify(m));
    assert.equal(m.memory.usage_limit, 256 << 20);
    assert.ok(m.memory.usage > 16 << 20 && m.memory.usage < 1 << 30, `usage ${m.memory.usage}`);
    await c.ctrOk("task", "kill", "--signal", "SIGTERM", "t-kill");
    await waitStopped(c, "t-kill");
    assert.match(await Deno.readTextFile(log), /got term/);
    const d = await c.ctr("task", "delete", "t-kill");
    assert.match(d.stderr, /exit code 42/);
    await c.ctrOk("container", "rm", "t-kill");
    assert.deepEqual(await leftovers(c, "t-kill"), []);
  });

  await t.step("SIGKILL kills the VM at once", async () => {
    const log = await startDetached(c, "t-sigkill");
    await c.ctrOk("task", "kill", "--signal", "SIGKILL", "t-sigkill");
    await waitStopped(c, "t-sigkill");
    assert.doesNotMatch(await Deno.readTextFile(log), /got term/);
    const d = await c.ctr("task", "delete", "t-sigkill");
    assert.match(d.stderr, /exit code 137/);
    await c.ctrOk("container", "rm", "t-sigkill");
    assert.deepEqual(await leftovers(c, "t-sigkill"), []);
  });

  await t.step("a task whose VM dies is reported exited", async () => {
    await startDetached(c, "t-die");
    const s = await readState(c.home, taskInstanceId(bundleOf(c, "t-die"), "default", "t-die"));
    Deno.kill(s.pid as number, "SIGKILL");
    await waitStopped(c, "t-die");
    const d = await c.ctr("task", "delete", "t-die");
    assert.match(d.stderr, /exit code 255/);
    await c.ctrOk("container", "rm", "t-die");
    assert.deepEqual(await leftovers(c, "t-die"), []);
  });

  await t.step(
    "containerd restarted while a task runs: the shim survives, containerd reconnects",
    async () => {
      const log = await startDetached(c, "t-restart");
      const shims = await c.shimPids("t-restart");
      assert.equal(shims.length, 1);
      await c.stopDaemon();
      await c.startDaemon();
      assert.ok(pidAlive(shims[0]));
      assert.equal(await c.taskStatus("t-restart"), "RUNNING");
      await c.ctrOk("task", "kill", "t-restart");
      await waitStopped(c, "t-restart");
      assert.match(await Deno.readTextFile(log), /got term/);
      await c.ctrOk("task", "delete", "t-restart");
      await c.ctrOk("container", "rm", "t-restart");
      assert.deepEqual(await leftovers(c, "t-restart"), []);
    },
  );

  await t.step("a killed shim: containerd sees the task exit, the VM and files go", async () => {
    await startDetached(c, "t-shimkill");
    const s = await readState(
      c.home,
      taskInstanceId(bundleOf(c, "t-shimkill"), "default", "t-shimkill"),
    );
    const [shim] = await c.shimPids("t-shimkill");
    Deno.kill(shim, "SIGKILL");
    // containerd runs the shim's `delete`, which kills the VM and removes the task.
    await waitFor(async () => (await c.taskStatus("t-shimkill")) === undefined || undefined, {
      timeoutMs: 60_000,
      what: "the task to disappear",
    });
    await waitFor(() => !pidAlive(s.pid as number) || undefined, { what: "the VM to end" });
    await c.ctrOk("container", "rm", "t-shimkill");
    assert.deepEqual(await leftovers(c, "t-shimkill"), []);
  });

  await t.step("an unsupported spec field is a clear error through ctr", async () => {
    const r = await c.ctr(
      "run",
      "--rm",
      "--mount",
      `type=bind,src=${c.bin},dst=/host,options=rbind:ro`,
      ...RT,
      TEST_IMAGE,
      "t-bad",
      "/bin/true",
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /mounts\["\/host"\] is not supported by the ovm shim: bind mounts of host directories/,
    );
    await waitFor(async () => (await leftovers(c, "t-bad")).length === 0 || undefined, {
      what: "t-bad to leave nothing",
    });
    await c.ctr("container", "rm", "t-bad");
  });
});
