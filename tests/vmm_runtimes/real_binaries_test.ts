/**
 * Real-binary tests of the Cloud Hypervisor and Firecracker adapters: they
 * run when `cloud-hypervisor` / `firecracker` is on PATH (and, for
 * Firecracker, `$OVM_FC_KERNEL` names an uncompressed vmlinux, since the
 * system kernel is a bzImage), and are skipped with a message otherwise. They
 * boot the demo artifact's kernel, initrd and disk chain (no ivshmem: neither
 * VMM has it), wait for console output, pause, resume, snapshot and stop.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { which } from "../../src/process/mod.ts";
import type { VmmAdapter } from "../../src/vmm/adapter.ts";
import { CloudHypervisorAdapter } from "../../src/vmm/cloud_hypervisor/mod.ts";
import { FirecrackerAdapter } from "../../src/vmm/firecracker/mod.ts";
import { demoHome, ovmIn, waitFor } from "../_helpers/runtime.ts";
import { demoSpec } from "../_helpers/vmm_runtimes.ts";

const CH = await which("cloud-hypervisor");
const FC = await which("firecracker");
const FC_KERNEL = Deno.env.get("OVM_FC_KERNEL");
const CB = await which("cherrybomb");
if (!CB) console.log("skipping the real Cherrybomb test: cherrybomb is not on PATH");
if (!CH) console.log("skipping the real Cloud Hypervisor test: cloud-hypervisor is not on PATH");
if (!FC || !FC_KERNEL) {
  console.log(
    "skipping the real Firecracker test: " +
      (!FC ? "firecracker is not on PATH" : "$OVM_FC_KERNEL (a vmlinux) is not set"),
  );
}

async function lifecycle(adapter: VmmAdapter, kernel?: string): Promise<void> {
  await using demo = await demoHome();
  const spec = await demoSpec(demo.home, demo.artifact.ref, {
    vmDir: join(demo.home, "vm"),
    kernel,
  });
  await adapter.prepare(spec);
  const vm = await adapter.start(spec);
  try {
    await waitFor(async () => {
      const st = await Deno.stat(spec.consoleLog).catch(() => undefined);
      return st && st.size > 0 ? true : undefined;
    }, { timeoutMs: 60_000, what: "console output" });
    await adapter.pause(vm.handle);
    assert.equal((await adapter.status(vm.handle)).state, "paused");
    const files = await adapter.snapshot(vm.handle, {
      kind: "ram",
      dest: join(demo.home, "snap"),
      vmDir: spec.vmDir,
    });
    assert.ok(files.vmmVersion.length > 0);
    await adapter.resume(vm.handle);
    assert.equal((await adapter.status(vm.handle)).state, "running");
  } finally {
    await adapter.stop(vm.handle, { timeoutMs: 10_000 });
  }
}

Deno.test({
  name: "a real cloud-hypervisor boots the demo chain, pauses, snapshots, resumes and stops",
  ignore: !CH,
  fn: () => lifecycle(new CloudHypervisorAdapter()),
});

Deno.test({
  name:
    "a real firecracker boots the demo chain flattened to raw, pauses, snapshots, resumes and stops",
  ignore: !FC || !FC_KERNEL,
  fn: () => lifecycle(new FirecrackerAdapter(), FC_KERNEL),
});

Deno.test({
  name: "a real cherrybomb on PATH boots the demo artifact and its console shows in ovm logs",
  ignore: !CB,
  fn: async () => {
    await using demo = await demoHome();
    const run = await ovmIn(
      demo.home,
      "run",
      "--runtime",
      "cherrybomb",
      "--net",
      "none",
      "-d",
      "--name",
      "cb",
      demo.artifact.ref,
    );
    assert.equal(run.code, 0, run.stderr);
    try {
      await waitFor(async () => {
        const r = await ovmIn(demo.home, "logs", "cb");
        return /OVMS-EXIT|ivshmem region at/.test(r.stdout) ? true : undefined;
      }, { timeoutMs: 90_000, what: "console output" });
    } finally {
      await ovmIn(demo.home, "rm", "-f", "cb");
    }
  },
});
