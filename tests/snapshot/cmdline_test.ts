/**
 * The QEMU command lines behind snapshots and restores, read as plain argv
 * (no VM starts).
 */
import assert from "node:assert/strict";
import { buildQemuCommand, ramPath } from "../../src/vmm/qemu/mod.ts";
import type { VmSpec } from "../../src/vmm/mod.ts";

function spec(over: Partial<VmSpec> = {}): VmSpec {
  return {
    id: "s1",
    kernel: "/store/k",
    cmdline: "console=ttyS0",
    memoryBytes: 256 * 1024 * 1024,
    cpus: 1,
    accel: "tcg",
    extraDisks: [],
    devices: [],
    network: { mode: "none", publish: [] },
    vmDir: "/inst/vm",
    consoleLog: "/inst/vm/console.log",
    detach: false,
    ...over,
  };
}

function after(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));
}

Deno.test("a cold boot keeps guest RAM in a shared /dev/shm file that is removed with the VM", () => {
  const cmd = buildQemuCommand(spec({ vmgenid: "00000000-0000-4000-8000-000000000001" }));
  assert.ok(
    after(cmd.args, "-object").includes(
      `memory-backend-file,id=ram0,size=256M,share=on,mem-path=${ramPath("s1")}`,
    ),
  );
  assert.deepEqual(after(cmd.args, "-machine"), ["q35,memory-backend=ram0"]);
  assert.deepEqual(cmd.runtimeFiles, ["/dev/shm/ovm-s1-ram"]);
  assert.ok(
    after(cmd.args, "-device").includes(
      "vmgenid,id=vmgenid0,guid=00000000-0000-4000-8000-000000000001",
    ),
  );
  assert.ok(!cmd.args.includes("-incoming"));
});

Deno.test("a restore maps the snapshot template privately and waits for the device state", () => {
  const template = "/dev/shm/ovm/snapshots/ab/memory";
  const cmd = buildQemuCommand(
    spec({ memory: { path: template, share: false, create: false } }),
    { incoming: true },
  );
  assert.ok(
    after(cmd.args, "-object").includes(
      `memory-backend-file,id=ram0,size=256M,share=off,mem-path=${template}`,
    ),
  );
  assert.deepEqual(after(cmd.args, "-incoming"), ["defer"]);
  assert.ok(!cmd.args.includes("-S"));
  // The template is the snapshot's, shared by clones: never a runtime file of one VM.
  assert.deepEqual(cmd.runtimeFiles, []);
  const pooled = buildQemuCommand(
    spec({ memory: { path: template, share: false, create: false } }),
    { incoming: true, paused: true },
  );
  assert.ok(pooled.args.includes("-S"));
});
