/**
 * The CRI path, as kubelet drives it: containerd's CRI plugin with a runtime
 * handler `ovm` (runtime_type io.containerd.ovm.v2), and a gRPC client of
 * `runtime.v1.RuntimeService` on containerd's socket running RunPodSandbox →
 * CreateContainer → StartContainer → ContainerStats → ContainerStatus →
 * StopPodSandbox → RemovePodSandbox. Host networking (no CNI); the sandbox runs no VM (spec
 * 13.5), the container is a VM whose output lands in the CRI log file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TEST_IMAGE, TestContainerd } from "../_helpers/containerd.ts";
import { CRI_CONFIG, CriClient } from "../_helpers/cri.ts";
import { waitFor } from "../_helpers/runtime.ts";

Deno.test({
  name: "kubelet's CRI calls run a Pod's container as an ovm VM (runtime handler ovm)",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using c = await TestContainerd.start({ cri: CRI_CONFIG });
  using cri = new CriClient(c.socket);
  const v = await cri.call("Version", { version: "v1" });
  assert.equal(v.runtime_name, "containerd");
  const logs = join(c.dir, "pod-logs");
  await Deno.mkdir(logs);
  const sandboxConfig = {
    metadata: { name: "hello", uid: "uid-hello-1", namespace: "default", attempt: 0 },
    hostname: "hello-vm",
    log_directory: logs,
    linux: {
      security_context: { namespace_options: { network: "NODE", pid: "POD", ipc: "POD" } },
    },
  };
  const { pod_sandbox_id: pod } = await cri.call("RunPodSandbox", {
    config: sandboxConfig,
    runtime_handler: "ovm",
  });
  try {
    const { container_id: ctr } = await cri.call("CreateContainer", {
      pod_sandbox_id: pod,
      config: {
        metadata: { name: "hello", attempt: 0 },
        image: { image: TEST_IMAGE },
        command: ["/bin/sh", "-c"],
        // Up long enough for a ContainerStats call while it runs.
        args: ['echo "hello from $(hostname)"; echo oops >&2; sleep 10; exit 5'],
        log_path: "hello.log",
        linux: { resources: { memory_limit_in_bytes: 256 << 20 } },
      },
      sandbox_config: sandboxConfig,
    });
    await cri.call("StartContainer", { container_id: ctr });
    await waitFor(
      async () =>
        /stdout F hello/.test(await Deno.readTextFile(join(logs, "hello.log")).catch(() => "")) ||
        undefined,
      { timeoutMs: 180_000, what: "the container's first output" },
    );
    // CRI decodes the shim's cgroup v2 metrics of the VMM process.
    const { stats } = await cri.call("ContainerStats", { container_id: ctr });
    assert.ok(Number(stats.cpu.usage_core_nano_seconds.value) > 0, JSON.stringify(stats.cpu));
    assert.ok(
      Number(stats.memory.working_set_bytes.value) > 16 << 20,
      JSON.stringify(stats.memory),
    );
    const status = await waitFor(async () => {
      const s = (await cri.call("ContainerStatus", { container_id: ctr })).status;
      return s.state === "CONTAINER_EXITED" ? s : undefined;
    }, { timeoutMs: 180_000, what: "the container to exit" });
    assert.equal(status.exit_code, 5);
    // CRI's log format: "<time> <stream> <F|P> <line>".
    const log = await Deno.readTextFile(join(logs, "hello.log"));
    assert.match(log, /^\S+ stdout F hello from hello-vm$/m);
    assert.match(log, /^\S+ stderr F oops$/m);
    await cri.call("RemoveContainer", { container_id: ctr });
  } finally {
    await cri.call("StopPodSandbox", { pod_sandbox_id: pod });
    await cri.call("RemovePodSandbox", { pod_sandbox_id: pod });
  }
  const listed = await cri.call("ListPodSandbox", {});
  assert.deepEqual(listed.items, []);
  assert.deepEqual(await c.shimPids(), []);
});
