/**
 * The adapter conformance suite (tests/_helpers/adapter_conformance.ts) run
 * against every backend: QEMU for real (the demo artifact under TCG), Cloud
 * Hypervisor and Firecracker against the contract-checking fake VMMs (every
 * API call validated against the vendor's OpenAPI document), and the
 * descriptor runtime against the Cherrybomb test executable
 * (tests/fixtures/cherrybomb, which boots the VM with qemu underneath).
 */
import { join } from "node:path";
import { QemuAdapter } from "../../src/vmm/qemu/mod.ts";
import { CloudHypervisorAdapter } from "../../src/vmm/cloud_hypervisor/mod.ts";
import { FirecrackerAdapter } from "../../src/vmm/firecracker/mod.ts";
import { builtinDescriptors, CliRuntimeAdapter } from "../../src/vmm/descriptor/mod.ts";
import { buildConfigDisk } from "../../src/system/mod.ts";
import { demoHome } from "../_helpers/runtime.ts";
import { adapterConformance } from "../_helpers/adapter_conformance.ts";
import {
  cherrybombFixture,
  demoSpec,
  fakeBin,
  makeSpec,
  readCallLog,
} from "../_helpers/vmm_runtimes.ts";
import assert from "node:assert/strict";
import type { VmSpec } from "../../src/vmm/adapter.ts";

// A copy the VMM's uid can run, wherever the checkout is.
const FIXTURE = await cherrybombFixture();

/**
 * The demo VM running a workload that never ends: without one, ovms-init
 * powers the VM off ("no entrypoint or cmd") a few seconds after boot, which
 * on a loaded host lands in the middle of the conformance steps.
 */
async function foreverSpec(
  demo: { home: string; artifact: { ref: string } },
  dir: string,
  id: string,
): Promise<VmSpec> {
  const spec = await demoSpec(demo.home, demo.artifact.ref, {
    vmDir: join(dir, "vm"),
    id,
    accel: "tcg",
  });
  await Deno.mkdir(dir, { recursive: true });
  const config = join(dir, "config.img");
  await buildConfigDisk(config, {
    env: [],
    exposedPorts: [],
    cmd: ["/bin/sh", "-c", "echo conformance guest up; while :; do sleep 1; done"],
  });
  spec.extraDisks.push({ path: config, readOnly: true });
  spec.cmdline += " ovms.config=/dev/vdb";
  return spec;
}

Deno.test({
  name: "the QEMU adapter passes the adapter conformance suite (real qemu, TCG)",
  // The guest's console and QMP sockets stay open across steps.
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using demo = await demoHome();
    await adapterConformance(t, {
      adapter: new QemuAdapter(),
      spec: (dir, id) => foreverSpec(demo, dir, id),
      bootTimeoutMs: 90_000,
    });
  },
});

for (const name of ["cloud-hypervisor", "firecracker"]) {
  Deno.test({
    name: `the ${name} adapter passes the adapter conformance suite (contract-checking fake)`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const dir = await Deno.makeTempDir({ prefix: "ovm-conf-fake-" });
      const log = join(dir, "calls.jsonl");
      try {
        await using bin = await fakeBin({ log });
        const adapter = name === "firecracker"
          ? new FirecrackerAdapter({ binary: bin.fc })
          : new CloudHypervisorAdapter({ binary: bin.ch });
        await adapterConformance(t, {
          adapter,
          // The fakes boot nothing: they write a console line on start.
          spec: (d, id) => makeSpec(d, id),
          bootTimeoutMs: 10_000,
        });
        const calls = await readCallLog(log);
        assert.ok(calls.length > 0, "the fake saw the adapter's calls");
        assert.deepEqual(calls.filter((c) => c.violations.length), []);
      } finally {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}

Deno.test({
  name: "the descriptor runtime passes the adapter conformance suite (the Cherrybomb fixture)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using demo = await demoHome();
    const [cherrybomb] = builtinDescriptors();
    await adapterConformance(t, {
      adapter: new CliRuntimeAdapter(cherrybomb, { binary: FIXTURE }),
      spec: (dir, id) => foreverSpec(demo, dir, id),
      bootTimeoutMs: 90_000,
    });
  },
});
