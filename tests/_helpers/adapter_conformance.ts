/**
 * @module
 * One conformance suite for every `VmmAdapter`: what a backend's
 * capabilities promise is what its verbs do. Start, status, logs (the
 * console), pause/resume, snapshot (the files, cmdline, machine facts and
 * self-contained disk the artifact records), stop (twice), a one-shot
 * restore and a two-phase restore (prepare, load kept paused, resume) — or,
 * for what a backend lacks, a refusal before anything runs. Each backend's
 * test file supplies the adapter and a spec factory.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readQcow2Header } from "../../src/disk/mod.ts";
import { OvmError } from "../../src/errors.ts";
import { pidAlive } from "../../src/process/mod.ts";
import { encodeRamsnap } from "../../src/snapshot/mod.ts";
import type { SnapshotFiles, StartedVm, VmmAdapter, VmSpec } from "../../src/vmm/adapter.ts";
import { waitFor } from "./runtime.ts";

export interface Backend {
  adapter: VmmAdapter;
  /** A fresh spec for a VM with id `id` in directory `dir` (no devices, no network). */
  spec(dir: string, id: string): Promise<VmSpec>;
  /** How long the guest may take to print its first console line. */
  bootTimeoutMs: number;
}

/** Registers the suite's steps under `t` for `backend`. */
export async function adapterConformance(t: Deno.TestContext, backend: Backend): Promise<void> {
  const { adapter } = backend;
  const caps = adapter.capabilities;
  const dir = await Deno.makeTempDir({ prefix: `ovm-conf-${adapter.name}-` });
  const pids: number[] = [];
  const track = (vm: StartedVm) => (pids.push(vm.handle.pid), vm);
  try {
    await t.step("its capabilities are coherent", () => {
      assert.equal(caps.restoreKinds.length === 0, caps.restoreFrom.length === 0);
      if (caps.preparedRestore) {
        assert.equal(typeof adapter.prepareRestore, "function");
        assert.ok(caps.restoreFrom.includes("template"));
      }
      assert.ok(caps.network.length > 0 && caps.diskFormats.length > 0);
    });

    await t.step("a network mode it lacks is refused before anything runs", async () => {
      const spec = await backend.spec(join(dir, "refused"), "refused");
      spec.network = { mode: "tap" as never, publish: [] };
      await assert.rejects(adapter.prepare(spec), (e) => e instanceof OvmError);
    });

    let files: SnapshotFiles | undefined;
    const template = join(dir, "template");
    await t.step("start, status, logs, pause/resume, snapshot, stop", async () => {
      const spec = await backend.spec(join(dir, "a"), "conf-a");
      await adapter.prepare(spec);
      const vm = track(await adapter.start(spec));
      try {
        assert.equal(vm.handle.adapter, adapter.name);
        await waitFor(async () => {
          const st = await Deno.stat(spec.consoleLog).catch(() => undefined);
          return st && st.size > 0 ? true : undefined;
        }, { timeoutMs: backend.bootTimeoutMs, what: `${adapter.name}'s console output` });
        assert.equal((await adapter.status(vm.handle)).state, "running");
        if (caps.pause) {
          await adapter.pause(vm.handle);
          assert.equal((await adapter.status(vm.handle)).state, "paused");
          await adapter.resume(vm.handle);
          assert.equal((await adapter.status(vm.handle)).state, "running");
        } else {
          await assert.rejects(adapter.pause(vm.handle), (e) => e instanceof OvmError);
        }
        const snapOptions = {
          kind: "ram" as const,
          dest: join(dir, "snap"),
          vmDir: spec.vmDir,
          overlay: spec.rootDisk?.overlay,
        };
        await Deno.mkdir(snapOptions.dest);
        if (!caps.snapshotKinds.includes("ram")) {
          await assert.rejects(
            adapter.snapshot(vm.handle, snapOptions),
            (e) => e instanceof OvmError,
          );
        } else {
          files = await adapter.snapshot(vm.handle, snapOptions);
          assert.equal(files.memoryBytes, spec.memoryBytes);
          assert.equal(files.cmdline, spec.cmdline);
          assert.ok(files.machine.length > 0 && files.vmmVersion.length > 0);
          assert.ok((await Deno.stat(files.deviceState)).size > 0);
          assert.ok(files.disk, "a VM with a root disk snapshots it");
          assert.equal(
            (await readQcow2Header(files.disk.path)).backingFile ?? undefined,
            undefined,
          );
          // What becomes the snapshot's template (the runtime's sparse copy, here whole).
          await Deno.mkdir(template);
          await copyRange(files.memory, join(template, "memory"), files);
          await Deno.copyFile(files.deviceState, join(template, "device-state"));
          await adapter.resume(vm.handle);
          assert.equal((await adapter.status(vm.handle)).state, "running");
        }
      } finally {
        const how = (await adapter.stop(vm.handle, { timeoutMs: 5000 })).how;
        assert.ok(["poweroff", "quit", "killed"].includes(how), how);
      }
      await vm.exited;
      assert.equal((await adapter.status(vm.handle)).state, "stopped");
      assert.equal((await adapter.stop(vm.handle)).how, "already-stopped");
    });

    if (caps.restoreFrom.includes("template")) {
      await t.step("a one-shot restore runs the guest from the template", async () => {
        assert.ok(files, "the snapshot step produced files");
        const spec = await backend.spec(join(dir, "b"), "conf-b");
        spec.cmdline = files.cmdline;
        spec.memory = { path: join(template, "memory"), share: false, create: false };
        await adapter.prepare(spec);
        const vm = track(await adapter.restore(spec, { kind: "ram", source: template }));
        assert.equal((await adapter.status(vm.handle)).state, "running");
        await adapter.stop(vm.handle, { force: true });
        await vm.exited;
      });
    } else {
      await t.step("a template restore is refused", async () => {
        const spec = await backend.spec(join(dir, "b"), "conf-b");
        spec.memory = { path: join(dir, "none"), share: false, create: false };
        await adapter.prepare(spec);
        await assert.rejects(
          adapter.restore(spec, { kind: "ram", source: dir }),
          (e) => e instanceof OvmError,
        );
      });
    }

    if (caps.preparedRestore) {
      await t.step("a two-phase restore loads paused, then resumes", async () => {
        assert.ok(files);
        const spec = await backend.spec(join(dir, "c"), "conf-c");
        spec.cmdline = files.cmdline;
        spec.memory = { path: join(template, "memory"), share: false, create: false };
        await adapter.prepare(spec);
        const prepared = await adapter.prepareRestore!(spec, {
          kind: "ram",
          source: template,
          paused: true,
        });
        track(prepared.vm);
        try {
          assert.ok(adapter.restoresFrom(files.vmmVersion, prepared.version), prepared.version);
          assert.ok(!adapter.restoresFrom(`9${files.vmmVersion}`, prepared.version));
          await prepared.load({ resume: false });
          assert.equal((await prepared.status()).state, "paused");
          await prepared.resume();
          assert.equal((await prepared.status()).state, "running");
          prepared.close();
          assert.equal((await adapter.status(prepared.vm.handle)).state, "running");
        } finally {
          prepared.close();
          await adapter.stop(prepared.vm.handle, { force: true });
        }
        await prepared.vm.exited;
      });
    }

    if (caps.restoreFrom.includes("ramsnap")) {
      await t.step(
        "a restore from a ramsnap blob hands the decoded memory to the VMM",
        async () => {
          const spec = await backend.spec(join(dir, "d"), "conf-d");
          const mem = join(dir, "mem.bin");
          {
            // Sparse: the guest RAM is all zeros.
            using f = await Deno.open(mem, { write: true, createNew: true });
            await f.truncate(spec.memoryBytes);
          }
          await Deno.writeTextFile(join(dir, "dev.bin"), "device state");
          const blob = join(dir, "ram.ramsnap");
          const stream = encodeRamsnap([
            { name: "memory", path: mem, size: spec.memoryBytes },
            { name: "device-state", path: join(dir, "dev.bin"), size: 12 },
          ], { metadata: {} });
          using out = await Deno.open(blob, { write: true, create: true });
          await stream.pipeTo(out.writable);
          await adapter.prepare(spec);
          const vm = track(await adapter.restore(spec, { kind: "ram", source: blob }));
          assert.equal((await adapter.status(vm.handle)).state, "running");
          await adapter.stop(vm.handle, { force: true });
          await vm.exited;
          for (const f of vm.handle.runtimeFiles) {
            await assert.rejects(Deno.stat(f), Deno.errors.NotFound);
          }
        },
      );
    }

    if (!caps.preparedRestore) {
      await t.step("no two-phase restore is offered", () => {
        assert.equal(adapter.prepareRestore, undefined);
      });
    }
  } finally {
    for (const pid of pids) if (pidAlive(pid)) Deno.kill(pid, "SIGKILL");
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Copies the RAM section (`files.memory` from `memoryOffset`, `memoryBytes` long) to `dst`. */
async function copyRange(src: string, dst: string, files: SnapshotFiles): Promise<void> {
  using inp = await Deno.open(src, { read: true });
  using out = await Deno.open(dst, { write: true, createNew: true });
  await inp.seek(files.memoryOffset ?? 0, Deno.SeekMode.Start);
  const buf = new Uint8Array(1 << 20);
  let left = files.memoryBytes;
  while (left > 0) {
    const n = await inp.read(buf.subarray(0, Math.min(buf.byteLength, left)));
    if (n === null) break;
    let w = 0;
    while (w < n) w += await out.write(buf.subarray(w, n));
    left -= n;
  }
  await out.truncate(files.memoryBytes);
}
