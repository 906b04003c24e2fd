/**
 * containerd tasks on ovm's bridge networks: a real containerd 1.6 runs
 * INSIDE a network namespace the test creates (so every bridge, TAP and
 * nftables rule the shim makes lives there, never on the host), `ctr run`
 * boots a plain image under QEMU TCG with `io.ovms.net=bridge=NAME`, and
 * the guest's HTTP server answers at its leased address from inside the
 * namespace. Deleting the task, or containerd's `delete` after the shim was
 * killed, gives back the lease and the TAP; a bad value is refused at Create.
 * Through CRI, the annotation comes from the Pod (`pod_annotations`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { TEST_IMAGE, TestContainerd } from "../_helpers/containerd.ts";
import { CRI_CONFIG, CriClient } from "../_helpers/cri.ts";
import { linkNames, type Netns, netns, ok, waitFor } from "../_helpers/netns.ts";
import { readState } from "../_helpers/runtime.ts";
import { taskInstanceId } from "../../src/shim/mod.ts";
import { tapName } from "../../src/net/mod.ts";
import { pidAlive } from "../../src/process/mod.ts";

const RT = ["--runtime", "io.containerd.ovm.v2", "--memory-limit", String(256 << 20)];
/** busybox httpd on 8080 (the workload runs as uid 1000) serving the app user's home. */
const WEB = 'echo "hello from task $(busybox hostname)" > "$HOME/index.html"; echo started; ' +
  'exec busybox httpd -f -p 8080 -h "$HOME"';

function instanceOf(c: TestContainerd, id: string): string {
  const bundle = join(c.dir, "state", "io.containerd.runtime.v2.task", "default", id);
  return taskInstanceId(bundle, "default", id);
}

async function leases(ns: Netns, home: string, network: string): Promise<unknown[]> {
  const out = ok(await ns.ovm(home, ["network", "inspect", network, "--json"]));
  return JSON.parse(out).leases;
}

/** Starts a detached task running WEB; waits for its first line; returns its leased address. */
async function startWeb(c: TestContainerd, id: string, annotations: string[]): Promise<string> {
  await c.runDetached(id, WEB, { annotations });
  const state = await readState(c.home, instanceOf(c, id)) as {
    network: { mode: string; addresses: { address: string }[] };
  };
  assert.equal(state.network.mode, "bridge");
  return state.network.addresses[0].address;
}

/** GET from inside the namespace, or undefined when nothing answers. */
async function get(ns: Netns, url: string): Promise<string | undefined> {
  const r = await ns.exec("curl", ["-sS", "--max-time", "5", url]);
  return r.code === 0 ? r.stdout : undefined;
}

Deno.test({
  name: "containerd tasks join ovm bridge networks inside a network namespace",
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using ns = await netns("ovmshn");
  // The node's default (what 'ovm shim install --net bridge=pods' writes into the launcher).
  await using c = await TestContainerd.start({ netns: ns.name, shimNet: "bridge=pods" });
  ok(await ns.ovm(c.home, ["network", "create", "--subnet", "10.89.7.0/24", "pods"]));
  ok(await ns.ovm(c.home, ["network", "create", "--subnet", "10.89.8.0/24", "web"]));

  await t.step(
    "io.ovms.net=bridge=web: the guest's server answers at its lease; delete gives it back",
    async () => {
      const addr = await startWeb(c, "t-web", ["io.ovms.net=bridge=web"]);
      assert.equal(addr, "10.89.8.2");
      const inst = instanceOf(c, "t-web");
      let body: string | undefined;
      await waitFor("the guest's httpd", async () => {
        body = await get(ns, `http://${addr}:8080/`);
        return body !== undefined;
      }, 60_000);
      assert.match(body!, /^hello from task /);
      assert.ok((await linkNames(ns)).includes(tapName(c.home, inst, 0)));
      assert.equal((await leases(ns, c.home, "web")).length, 1);
      // The shim's log names the address (ovm ps in the shim's home shows it too).
      const shimLog = await Deno.readTextFile(
        join(c.dir, "state", "io.containerd.runtime.v2.task", "default", "t-web", "shim.log"),
      ).catch(() => "");
      assert.match(shimLog, /network bridge, address 10\.89\.8\.2 on network web/);
      const ps = ok(await ns.ovm(c.home, ["ps"]));
      assert.match(ps, new RegExp(`^${inst}\\s.*10\\.89\\.8\\.2`, "m"));

      await c.ctrOk("task", "kill", "--signal", "SIGKILL", "t-web");
      await waitFor("t-web to stop", async () => (await c.taskStatus("t-web")) === "STOPPED");
      await c.ctr("task", "delete", "t-web");
      await c.ctrOk("container", "rm", "t-web");
      assert.deepEqual(await leases(ns, c.home, "web"), []);
      assert.deepEqual(await linkNames(ns), ["pods", "web"]);
      assert.equal(await get(ns, `http://${addr}:8080/`), undefined);
    },
  );

  await t.step(
    "no annotation: the node's default network; a killed shim's delete releases it",
    async () => {
      const addr = await startWeb(c, "t-dflt", []);
      assert.equal(addr, "10.89.7.2");
      await waitFor(
        "the guest's httpd",
        async () => (await get(ns, `http://${addr}:8080/`)) !== undefined,
        60_000,
      );
      const inst = instanceOf(c, "t-dflt");
      const vm = (await readState(c.home, inst)).pid as number;
      const [shim] = await c.shimPids("t-dflt");
      Deno.kill(shim, "SIGKILL");
      // containerd runs the shim's `delete` (inside the namespace), which removes the instance.
      await waitFor(
        "the task to disappear",
        async () => (await c.taskStatus("t-dflt")) === undefined,
        60_000,
      );
      await waitFor("the VM to end", () => Promise.resolve(!pidAlive(vm)));
      await c.ctrOk("container", "rm", "t-dflt");
      assert.deepEqual(await leases(ns, c.home, "pods"), []);
      assert.deepEqual(await linkNames(ns), ["pods", "web"]);
    },
  );

  await t.step(
    "a bad io.ovms.net is refused at Create, naming the value and the forms",
    async () => {
      const r = await c.ctr(
        "run",
        "--rm",
        "--annotation",
        "io.ovms.net=bridge=a=b",
        ...RT,
        TEST_IMAGE,
        "t-badnet",
        "/bin/true",
      );
      assert.equal(r.code, 1);
      assert.match(r.stderr, /Invalid network "bridge=a=b" \(annotation io\.ovms\.net\)/);
      assert.match(r.stderr, /bridge\[=NETWORK\]/);
      await c.ctr("container", "rm", "t-badnet");
      // Nothing was made for it.
      assert.deepEqual(await linkNames(ns), ["pods", "web"]);
    },
  );

  await t.step("a network the shim's home does not have fails Start, naming it", async () => {
    const r = await c.ctr(
      "run",
      "--rm",
      "--annotation",
      "io.ovms.net=bridge=nope",
      ...RT,
      TEST_IMAGE,
      "t-nonet",
      "/bin/true",
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /No network "nope"/);
    await c.ctr("task", "delete", "t-nonet");
    await c.ctr("container", "rm", "t-nonet");
    assert.deepEqual(await linkNames(ns), ["pods", "web"]);
    const ps = JSON.parse(ok(await ns.ovm(c.home, ["ps", "--all", "--json"])));
    assert.deepEqual(ps, []);
  });
});

Deno.test({
  name: "a Pod's io.ovms.net annotation puts its container's VM on that bridge (CRI)",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using ns = await netns("ovmshc");
  await using c = await TestContainerd.start({ cri: CRI_CONFIG, netns: ns.name });
  ok(await ns.ovm(c.home, ["network", "create", "--subnet", "10.89.9.0/24", "pods"]));
  using cri = new CriClient(c.socket);
  const logs = join(c.dir, "pod-logs");
  await Deno.mkdir(logs);
  const sandboxConfig = {
    metadata: { name: "web", uid: "uid-web-1", namespace: "default", attempt: 0 },
    hostname: "web-vm",
    log_directory: logs,
    annotations: { "io.ovms.net": "bridge=pods" },
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
        metadata: { name: "web", attempt: 0 },
        image: { image: TEST_IMAGE },
        command: ["/bin/sh", "-c"],
        args: [WEB],
        log_path: "web.log",
        linux: { resources: { memory_limit_in_bytes: 256 << 20 } },
      },
      sandbox_config: sandboxConfig,
    });
    await cri.call("StartContainer", { container_id: ctr });
    await waitFor(
      "the container's first output",
      async () =>
        /stdout F started/.test(await Deno.readTextFile(join(logs, "web.log")).catch(() => "")),
      180_000,
    );
    await waitFor(
      "the Pod's httpd on its lease",
      async () => (await get(ns, "http://10.89.9.2:8080/")) === "hello from task web-vm\n",
      60_000,
    );
    assert.equal((await leases(ns, c.home, "pods")).length, 1);
    await cri.call("StopContainer", { container_id: ctr, timeout: 2 });
    await cri.call("RemoveContainer", { container_id: ctr });
  } finally {
    await cri.call("StopPodSandbox", { pod_sandbox_id: pod });
    await cri.call("RemovePodSandbox", { pod_sandbox_id: pod });
  }
  assert.deepEqual(await leases(ns, c.home, "pods"), []);
  assert.deepEqual(await linkNames(ns), ["pods"]);
});
