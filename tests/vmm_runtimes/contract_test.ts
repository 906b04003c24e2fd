/**
 * Contract tests of the Cloud Hypervisor and Firecracker adapters. Neither
 * binary exists here, so a fake executable on PATH serves the API on the
 * socket the adapter gives it; every request the adapter sends is validated
 * against the official API document (tests/testdata/vendor-specs/, copied
 * from upstream) and every answer satisfies the same document. Real-binary tests are
 * in real_binaries_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CloudHypervisorAdapter } from "../../src/vmm/cloud_hypervisor/mod.ts";
import { FirecrackerAdapter } from "../../src/vmm/firecracker/mod.ts";
import type { VmSpec } from "../../src/vmm/adapter.ts";
import { ValidationError, VmmError } from "../../src/errors.ts";
import { pidAlive } from "../../src/process/mod.ts";
import { HttpUnixClient } from "../../src/vmm/http_unix.ts";
import { ApiContract } from "../_helpers/vmm_contract.ts";
import {
  BASE_BYTE,
  fakeBin,
  type FakeOptions,
  type LoggedCall,
  makeSpec,
  readCallLog,
  readDiskBytes,
  TOP_BYTE,
  TOP_OFFSET,
} from "../_helpers/vmm_runtimes.ts";

/** Runs `fn` with fake VMM binaries (configured by `options`) and a fresh call log. */
async function withFakes(
  fn: (ctx: { dir: string; log: string; ch: string; fc: string }) => Promise<void>,
  options: Omit<FakeOptions, "log"> = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-contract-" });
  const log = join(dir, "calls.jsonl");
  try {
    await using bin = await fakeBin({ ...options, log });
    await fn({ dir, log, ch: bin.ch, fc: bin.fc });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

// deno-lint-ignore no-explicit-any
type Body = Record<string, any>;

function assertNoViolations(calls: LoggedCall[]): void {
  const bad = calls.filter((c) => c.violations.length);
  assert.deepEqual(
    bad.map((c) => `${c.method} ${c.path}: ${c.violations.map((v) => v.message).join("; ")}`),
    [],
  );
}

/** Kills what a failed assertion left running. */
function cleanup(pids: number[]): void {
  for (const pid of pids) {
    if (pidAlive(pid)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
}

Deno.test("the contract checker refuses a request the official documents do not allow", async () => {
  const ch = await ApiContract.load("cloud-hypervisor.yaml");
  assert.deepEqual(ch.checkRequest("PUT", "/vm.create", { payload: { kernel: "/k" } }), []);
  assert.match(
    ch.checkRequest("PUT", "/vm.create", { payload: { kernal: "/k" } }).join(),
    /must NOT have additional properties "kernal"/,
  );
  assert.match(
    ch.checkRequest("PUT", "/vm.create", { cpus: { boot_vcpus: 0, max_vcpus: 1 } }).join(),
    /payload/,
  );
  assert.match(ch.checkRequest("PUT", "/vm.start", undefined).join(), /not an operation/);
  const fc = await ApiContract.load("firecracker.yaml");
  assert.deepEqual(
    fc.checkRequest("PUT", "/drives/root", { drive_id: "root", is_root_device: false }),
    [],
  );
  assert.match(
    fc.checkRequest("PUT", "/drives/root", { drive_id: "root" }).join(),
    /is_root_device/,
  );
  assert.match(fc.checkRequest("PATCH", "/vm", { state: "Stopped" }).join(), /allowed values/);
  assert.match(fc.checkResponse("GET", "/", 200, { id: "x" }).join(), /app_name/);
});

Deno.test("the Cloud Hypervisor adapter's whole lifecycle follows the official OpenAPI document", async () => {
  await withFakes(async ({ dir, log, ch }) => {
    const adapter = new CloudHypervisorAdapter({ binary: ch });
    assert.deepEqual(await adapter.available(), { ok: true, version: "53.0-fake" });
    const spec = await makeSpec(dir);
    const pids: number[] = [];
    try {
      await adapter.prepare(spec);
      // The chain ovm built: layer copies linked by backing names, under the overlay.
      assert.deepEqual(await readDiskBytes(spec.rootDisk!.overlay, 0, 4), Array(4).fill(BASE_BYTE));
      assert.deepEqual(
        await readDiskBytes(spec.rootDisk!.overlay, TOP_OFFSET, 4),
        Array(4).fill(TOP_BYTE),
      );
      const vm = await adapter.start(spec);
      pids.push(vm.handle.pid);
      assert.equal(vm.handle.adapter, "cloud-hypervisor");
      assert.match(await Deno.readTextFile(spec.consoleLog), /guest booted/);
      assert.equal((await adapter.status(vm.handle)).state, "running");
      await adapter.pause(vm.handle);
      assert.equal((await adapter.status(vm.handle)).state, "paused");
      const snapDir = join(dir, "snap");
      const files = await adapter.snapshot(vm.handle, {
        kind: "ram",
        dest: snapDir,
        vmDir: spec.vmDir,
      });
      assert.equal(files.vmmVersion, "v53.0-fake");
      assert.equal(files.memoryBytes, spec.memoryBytes);
      assert.equal((await Deno.stat(files.memory)).size, spec.memoryBytes);
      await adapter.resume(vm.handle);
      assert.equal((await adapter.stop(vm.handle, { timeoutMs: 5000 })).how, "poweroff");
      await vm.exited;

      // Restore into a second instance from the snapshot's files.
      const spec2 = await makeSpec(join(dir, "second"), "t2");
      spec2.memory = { path: files.memory, share: false, create: false };
      await adapter.prepare(spec2);
      const vm2 = await adapter.restore(spec2, { kind: "ram", source: snapDir });
      pids.push(vm2.handle.pid);
      assert.equal((await adapter.status(vm2.handle)).state, "running");
      assert.equal((await adapter.stop(vm2.handle, { force: true })).how, "quit");
      await vm2.exited;

      const calls = await readCallLog(log);
      assertNoViolations(calls);
      const seq = calls.map((c) => `${c.method} ${c.path}`);
      for (
        const step of [
          "PUT /vm.create",
          "PUT /vm.boot",
          "GET /vm.info",
          "PUT /vm.pause",
          "PUT /vm.snapshot",
          "PUT /vm.resume",
          "PUT /vm.power-button",
          "PUT /vm.restore",
          "PUT /vm.shutdown",
          "PUT /vmm.shutdown",
        ]
      ) assert.ok(seq.includes(step), `${step} was sent: ${seq.join(", ")}`);
      const create = calls.find((c) => c.path === "/vm.create")!.body as Body;
      assert.deepEqual(create.payload, {
        kernel: spec.kernel,
        initramfs: spec.initrd,
        cmdline: spec.cmdline,
      });
      assert.deepEqual(create.disks[0], {
        id: "root",
        path: spec.rootDisk!.overlay,
        readonly: false,
        image_type: "Qcow2",
        backing_files: true,
      });
      assert.equal(create.disks[1].backing_files, undefined, "no backing files for other disks");
      assert.deepEqual(create.serial, { mode: "File", file: spec.consoleLog });
      assert.deepEqual(create.memory, { size: 64 << 20, shared: true });
      const restore = calls.find((c) => c.path === "/vm.restore")!.body as Body;
      assert.equal(restore.source_url, `file://${join(spec2.vmDir, "ch-restore")}`);
      // The restored VM uses the second instance's files.
      const restoredConfig = JSON.parse(
        await Deno.readTextFile(join(spec2.vmDir, "ch-restore", "config.json")),
      );
      assert.equal(restoredConfig.disks[0].path, spec2.rootDisk!.overlay);
    } finally {
      cleanup(pids);
    }
  });
});

Deno.test("the Firecracker adapter's whole lifecycle follows the official Swagger document", async () => {
  await withFakes(async ({ dir, log, fc }) => {
    const adapter = new FirecrackerAdapter({ binary: fc });
    assert.deepEqual(await adapter.available(), { ok: true, version: "1.17.0-fake" });
    const spec = await makeSpec(dir);
    const pids: number[] = [];
    try {
      await adapter.prepare(spec);
      // Raw only: the chain flattened to one sparse per-instance file.
      const raw = join(spec.vmDir, "root.raw");
      const st = await Deno.stat(raw);
      assert.equal(st.size, 1 << 20);
      assert.ok(st.blocks! * 512 < st.size, "the raw copy is sparse");
      assert.deepEqual(await readDiskBytes(raw, 0, 4), Array(4).fill(BASE_BYTE));
      assert.deepEqual(await readDiskBytes(raw, TOP_OFFSET, 4), Array(4).fill(TOP_BYTE));

      const vm = await adapter.start(spec);
      pids.push(vm.handle.pid);
      assert.match(await Deno.readTextFile(spec.consoleLog), /guest booted/);
      assert.equal((await adapter.status(vm.handle)).state, "running");
      await adapter.pause(vm.handle);
      assert.equal((await adapter.status(vm.handle)).state, "paused");
      const snapDir = join(dir, "snap");
      const files = await adapter.snapshot(vm.handle, {
        kind: "ram",
        dest: snapDir,
        vmDir: spec.vmDir,
      });
      assert.equal(files.vmmVersion, "1.17.0-fake");
      assert.equal(files.memoryBytes, 64 << 20);
      assert.equal(files.deviceState, join(snapDir, "device-state"));
      await adapter.resume(vm.handle);
      assert.equal((await adapter.stop(vm.handle, { timeoutMs: 5000 })).how, "poweroff");
      await vm.exited;

      const spec2 = await makeSpec(join(dir, "second"), "t2");
      spec2.memory = { path: files.memory, share: false, create: false };
      await adapter.prepare(spec2);
      const vm2 = await adapter.restore(spec2, { kind: "ram", source: snapDir });
      pids.push(vm2.handle.pid);
      assert.equal((await adapter.status(vm2.handle)).state, "running");
      assert.equal((await adapter.stop(vm2.handle, { force: true })).how, "killed");
      await vm2.exited;

      const calls = await readCallLog(log);
      assertNoViolations(calls);
      const seq = calls.map((c) => `${c.method} ${c.path}`);
      const boot = seq.slice(0, seq.indexOf("PUT /actions") + 1);
      assert.deepEqual(boot, [
        "PUT /boot-source",
        "PUT /machine-config",
        "PUT /serial",
        "PUT /drives/root",
        "PUT /drives/extra0",
        "PUT /actions",
      ]);
      for (
        const step of [
          "GET /",
          "PATCH /vm",
          "PUT /snapshot/create",
          "PUT /snapshot/load",
          "PATCH /drives/root",
        ]
      ) assert.ok(seq.includes(step), `${step} was sent: ${seq.join(", ")}`);
      const byPath = (p: string) => calls.find((c) => `${c.method} ${c.path}` === p)!.body!;
      assert.deepEqual(byPath("PUT /boot-source"), {
        kernel_image_path: spec.kernel,
        initrd_path: spec.initrd,
        boot_args: spec.cmdline,
      });
      assert.deepEqual(byPath("PUT /machine-config"), { vcpu_count: 1, mem_size_mib: 64 });
      assert.deepEqual(byPath("PUT /drives/root"), {
        drive_id: "root",
        path_on_host: raw,
        is_root_device: false,
        is_read_only: false,
      });
      assert.deepEqual(byPath("PUT /snapshot/create"), {
        snapshot_type: "Full",
        snapshot_path: join(snapDir, "device-state"),
        mem_file_path: join(snapDir, "memory"),
      });
      assert.deepEqual(byPath("PUT /snapshot/load"), {
        snapshot_path: join(snapDir, "device-state"),
        mem_backend: { backend_type: "File", backend_path: files.memory },
        resume_vm: false,
      });
      assert.deepEqual(byPath("PATCH /drives/root"), {
        drive_id: "root",
        path_on_host: join(spec2.vmDir, "root.raw"),
      });
    } finally {
      cleanup(pids);
    }
  });
});

Deno.test("a VMM API error is surfaced with its message and the step that failed", async () => {
  await withFakes(async ({ dir, ch }) => {
    const spec = await makeSpec(dir);
    const adapter = new CloudHypervisorAdapter({ binary: ch });
    await adapter.prepare(spec);
    const err = await adapter.start(spec).then(() => undefined, (e) => e);
    assert.ok(err instanceof VmmError, String(err));
    assert.equal(err.adapter, "cloud-hypervisor");
    assert.equal(err.step, "vm.boot");
    assert.match(err.message, /HTTP 404: Error booting VM: InvalidPayload \(injected\)/);
  }, { fail: "PUT /vm.boot 404 Error booting VM: InvalidPayload (injected)" });

  await withFakes(async ({ dir, fc }) => {
    const spec = await makeSpec(dir);
    const adapter = new FirecrackerAdapter({ binary: fc });
    await adapter.prepare(spec);
    const err = await adapter.start(spec).then(() => undefined, (e) => e);
    assert.ok(err instanceof VmmError, String(err));
    assert.equal(err.step, "PUT /actions");
    assert.match(err.message, /HTTP 400: Cannot start microvm: kernel not found \(injected\)/);
  }, { fail: "PUT /actions 400 Cannot start microvm: kernel not found (injected)" });
});

Deno.test("a VMM binary that exits at once fails the start with its stderr", async () => {
  await withFakes(async ({ dir, ch, fc }) => {
    for (
      const adapter of [
        new CloudHypervisorAdapter({ binary: ch }),
        new FirecrackerAdapter({ binary: fc }),
      ]
    ) {
      const spec = await makeSpec(join(dir, adapter.name));
      await adapter.prepare(spec);
      const err = await adapter.start(spec).then(() => undefined, (e) => e);
      assert.ok(err instanceof VmmError, String(err));
      assert.equal(err.step, "start");
      assert.match(err.message, /exited at once with code 1/);
      assert.match(err.hint ?? "", /Error: failed to open \/dev\/kvm: Permission denied/);
    }
  }, { exitAtOnce: "Error: failed to open /dev/kvm: Permission denied" });
});

Deno.test("ivshmem devices and user networking are refused clearly by Cloud Hypervisor and Firecracker", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const adapter of [new CloudHypervisorAdapter(), new FirecrackerAdapter()]) {
      const spec: VmSpec = await makeSpec(join(dir, adapter.name));
      spec.devices = [{ type: "ivshmem", name: "shm0", size: 1 << 20, mmio_addr: "0x10000000" }];
      await assert.rejects(
        adapter.prepare(spec),
        (e: Error) =>
          e instanceof ValidationError &&
          /Device type "ivshmem" is not supported by/.test(e.message) &&
          /shm0/.test((e as ValidationError).hint ?? ""),
      );
      spec.devices = [];
      spec.network = { mode: "user", publish: [] };
      await assert.rejects(adapter.prepare(spec), /Network mode "user" is not supported/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Firecracker refuses a bzImage kernel before starting anything", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const spec = await makeSpec(dir);
    const img = new Uint8Array(0x400);
    new DataView(img.buffer).setUint32(0x202, 0x53726448, true); // "HdrS"
    await Deno.writeFile(spec.kernel, img);
    await assert.rejects(new FirecrackerAdapter().prepare(spec), /is a bzImage; Firecracker boots/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a VMM whose API socket is gone gives a VmmError naming the step", async () => {
  const dir = await Deno.makeTempDir();
  try {
    using api = new HttpUnixClient(join(dir, "gone.sock"), { adapter: "firecracker" });
    const err = await api.request("GET", "/", { step: "GET /" }).then(() => undefined, (e) => e);
    assert.ok(err instanceof VmmError);
    assert.equal(err.step, "GET /");
    assert.match(
      err.message,
      /firecracker: GET \/: the API on ".*gone\.sock" did not answer GET \//,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bridge NICs reach Cloud Hypervisor and Firecracker through their APIs, and a restore takes the clone's TAP", async () => {
  const bridged = async (dir: string, id: string, tap: string, mac: string) => {
    const spec = await makeSpec(dir, id);
    spec.network = { mode: "bridge", publish: [], nics: [{ tap, mac }] };
    return spec;
  };
  await withFakes(async ({ dir, log, ch, fc }) => {
    const pids: number[] = [];
    try {
      // Cloud Hypervisor: vm.create's `net`, and the restore config rewritten to the new TAP.
      const chA = new CloudHypervisorAdapter({ binary: ch });
      const spec = await bridged(join(dir, "ch1"), "n1", "ovt00000aaa0", "02:4f:0a:59:00:02");
      await chA.prepare(spec);
      const vm = await chA.start(spec);
      pids.push(vm.handle.pid);
      await chA.pause(vm.handle);
      const snap = join(dir, "ch-snap");
      const files = await chA.snapshot(vm.handle, { kind: "ram", dest: snap, vmDir: spec.vmDir });
      await chA.stop(vm.handle, { force: true });
      await vm.exited;
      const spec2 = await bridged(join(dir, "ch2"), "n2", "ovt00000bbb0", "02:4f:0a:59:00:03");
      spec2.memory = { path: files.memory, share: false, create: false };
      await chA.prepare(spec2);
      const vm2 = await chA.restore(spec2, { kind: "ram", source: snap });
      pids.push(vm2.handle.pid);
      await chA.stop(vm2.handle, { force: true });
      await vm2.exited;
      const chCalls = await readCallLog(log);
      assertNoViolations(chCalls);
      const create = chCalls.find((c) => c.path === "/vm.create")!.body as Body;
      assert.deepEqual(create.net, [{ id: "net0", tap: "ovt00000aaa0", mac: "02:4f:0a:59:00:02" }]);
      const restored = JSON.parse(
        await Deno.readTextFile(join(spec2.vmDir, "ch-restore", "config.json")),
      );
      assert.equal(restored.net[0].tap, "ovt00000bbb0");
      // The guest keeps the MAC it had until ovms-init applies its new identity.
      assert.equal(restored.net[0].mac, "02:4f:0a:59:00:02");
      await Deno.writeTextFile(log, "");

      // Firecracker: PUT /network-interfaces before boot, network_overrides on load.
      const fcA = new FirecrackerAdapter({ binary: fc });
      const fspec = await bridged(join(dir, "fc1"), "n3", "ovt00000ccc0", "02:4f:0a:59:00:04");
      await fcA.prepare(fspec);
      const fvm = await fcA.start(fspec);
      pids.push(fvm.handle.pid);
      await fcA.pause(fvm.handle);
      const fsnap = join(dir, "fc-snap");
      const ffiles = await fcA.snapshot(fvm.handle, {
        kind: "ram",
        dest: fsnap,
        vmDir: fspec.vmDir,
      });
      await fcA.stop(fvm.handle, { force: true });
      await fvm.exited;
      const fspec2 = await bridged(join(dir, "fc2"), "n4", "ovt00000ddd0", "02:4f:0a:59:00:05");
      fspec2.memory = { path: ffiles.memory, share: false, create: false };
      await fcA.prepare(fspec2);
      const fvm2 = await fcA.restore(fspec2, { kind: "ram", source: fsnap });
      pids.push(fvm2.handle.pid);
      await fcA.stop(fvm2.handle, { force: true });
      await fvm2.exited;
      const fcCalls = await readCallLog(log);
      assertNoViolations(fcCalls);
      const seq = fcCalls.map((c) => `${c.method} ${c.path}`);
      assert.ok(
        seq.indexOf("PUT /network-interfaces/eth0") < seq.indexOf("PUT /actions"),
        seq.join(", "),
      );
      const put = fcCalls.find((c) => c.path === "/network-interfaces/eth0")!.body as Body;
      assert.deepEqual(put, {
        iface_id: "eth0",
        host_dev_name: "ovt00000ccc0",
        guest_mac: "02:4f:0a:59:00:04",
      });
      const load = fcCalls.find((c) => c.path === "/snapshot/load")!.body as Body;
      assert.deepEqual(load.network_overrides, [{
        iface_id: "eth0",
        host_dev_name: "ovt00000ddd0",
      }]);
    } finally {
      cleanup(pids);
    }
  });
});
