/**
 * `ovm run` end to end under QEMU TCG: one demo artifact (busybox base layer
 * + diff layer, default kernel and initrd, an ivshmem device) is built once
 * and booted a few times, 256 MiB / 1 vCPU each.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { locateDiskInTar } from "../../src/disk/mod.ts";
import { digestFile } from "../../src/manifest/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { getInstance, VMM_UID_BASE } from "../../src/runtime/mod.ts";
import { getAdapter } from "../../src/vmm/mod.ts";
import { buildDemoDisks } from "../../examples/demo/build.ts";
import {
  demoHome,
  isVmProcess,
  ovmIn,
  ovmProc,
  ovmWith,
  readState,
  waitFor,
} from "../_helpers/runtime.ts";

const VM = ["--memory", "256M", "--cpus", "1", "--accel", "tcg"];

async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A qemu-img json: filename that reads the instance's whole chain (overlay on the layer blobs). */
function chainJson(overlay: string, layers: { path: string; size: number }[]): string {
  let backing: unknown = null;
  for (const l of layers) {
    backing = {
      driver: "qcow2",
      file: {
        driver: "raw",
        offset: 512,
        size: l.size,
        file: { driver: "file", filename: l.path },
      },
      backing,
    };
  }
  return "json:" + JSON.stringify({
    driver: "qcow2",
    file: { driver: "file", filename: overlay },
    backing,
  });
}

Deno.test({
  name: "ovm run boots the demo artifact from the store",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using demo = await demoHome();
    const { home, artifact } = demo;
    const store = await ContentStore.open(home);

    await t.step(
      "the guest sees files from both layers and its writes land only in the instance overlay",
      async () => {
        const before = await Promise.all(
          artifact.diskDigests.map(async (d) => (await digestFile(store.blobPath(d))).digest),
        );
        const r = await ovmIn(
          home,
          "run",
          ...VM,
          "--name",
          "chain",
          "--net",
          "none",
          artifact.ref,
          "--",
          "sh",
          "-c",
          "cat /etc/ovms-demo/base.txt /etc/ovms-demo/diff.txt; " +
            "echo written-by-guest > /etc/ovms-demo/new.txt; " +
            "echo changed > /etc/ovms-demo/base.txt; sync; exit 7",
        );
        assert.equal(r.code, 7, r.stderr + r.stdout);
        assert.match(r.stdout, /I live in the base layer/);
        assert.match(r.stdout, /I live in the diff layer/);
        assert.match(r.stdout, /OVMS-EXIT: 7/);
        const state = await readState(home, "chain");
        assert.equal(state.state, "stopped");
        assert.equal(state.exitCode, 7);
        assert.equal(state.manifestDigest, artifact.digest);
        // The cached layers are byte for byte what they were.
        const after = await Promise.all(
          artifact.diskDigests.map(async (d) => (await digestFile(store.blobPath(d))).digest),
        );
        assert.deepEqual(after, before);
        assert.deepEqual(after, artifact.diskDigests);
        // The guest's writes are in the overlay: read the chain back on the host.
        const overlay = join(home, "instances", "chain", "vm", "overlay.qcow2");
        const layers = [];
        for (const d of artifact.diskDigests) {
          const path = store.blobPath(d);
          layers.push({ path, size: (await locateDiskInTar(path)).size });
        }
        const raw = join(home, "chain.raw");
        await sh("qemu-img", ["convert", "-O", "raw", chainJson(overlay, layers), raw]);
        assert.equal(
          (await sh("debugfs", ["-R", "cat /etc/ovms-demo/new.txt", raw])).trim(),
          "written-by-guest",
        );
        assert.equal(
          (await sh("debugfs", ["-R", "cat /etc/ovms-demo/base.txt", raw])).trim(),
          "changed",
        );
        // Without the overlay the chain still holds the original file.
        const baseOnly = join(home, "base.raw");
        const base = store.blobPath(artifact.diskDigests[0]);
        await sh("qemu-img", [
          "convert",
          "-O",
          "raw",
          "json:" + JSON.stringify({
            driver: "qcow2",
            file: {
              driver: "raw",
              offset: 512,
              size: (await locateDiskInTar(base)).size,
              file: { driver: "file", filename: base },
            },
          }),
          baseOnly,
        ]);
        assert.equal(
          (await sh("debugfs", ["-R", "cat /etc/ovms-demo/base.txt", baseOnly])).trim(),
          "I live in the base layer",
        );
        assert.equal((await ovmIn(home, "rm", "chain")).code, 0);
      },
    );

    await t.step(
      "a detached VM outlives ovm, writes an ivshmem pattern the host reads, runs sandboxed, and stopping it while paused leaves nothing",
      async () => {
        const guest = "for d in /sys/bus/pci/devices/*; do " +
          'if [ "$(cat $d/device)" = 0x1110 ]; then ' +
          'a=$(sed -n 3p $d/resource | cut -d" " -f1); echo 1 > $d/enable; ' +
          "devmem $a 32 0x534d564f; devmem $((a+4)) 32 0x21444e45; fi; done; " +
          "echo pattern-written; sleep 600";
        // A separate ovm process: it exits after --detach, the VM must not.
        const r = await ovmProc(
          home,
          "run",
          ...VM,
          "--detach",
          "--name",
          "shm",
          "--net",
          "none",
          artifact.ref,
          "--",
          "sh",
          "-c",
          guest,
        );
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), "shm");
        const ps = await ovmIn(home, "ps", "--json");
        const listed = JSON.parse(ps.stdout) as { id: string; state: string; pid: number }[];
        const inst = listed.find((s) => s.id === "shm");
        assert.ok(inst, ps.stdout + ps.stderr);
        assert.equal(inst.state, "running");
        const pid = inst.pid;
        assert.ok(await isVmProcess(pid));

        const status = await Deno.readTextFile(`/proc/${pid}/status`);
        assert.match(status, /^Seccomp:\t2$/m);
        const shmFile = "/dev/shm/ovm-shm-shm0";
        if (Deno.uid() === 0) {
          // Its own unprivileged uid, from the per-instance range; no supplementary groups.
          const uid = Number(/^Uid:\t(\d+)\t(\d+)\t(\d+)\t(\d+)$/m.exec(status)?.[1]);
          assert.ok(uid >= VMM_UID_BASE && uid < VMM_UID_BASE + 0x10000, status);
          assert.match(status, new RegExp(`^Uid:\t${uid}\t${uid}\t${uid}\t${uid}$`, "m"));
          assert.match(status, /^Groups:[\t ]*$/m);
          const st = await Deno.stat(shmFile);
          assert.equal(st.uid, uid);
          assert.equal(st.mode! & 0o777, 0o600);
        }

        const shm = "/dev/shm/ovm-shm-shm0";
        await waitFor(async () => {
          const b = await Deno.readFile(shm).catch(() => new Uint8Array());
          return new TextDecoder().decode(b.subarray(0, 8)) === "OVMSEND!" ? true : undefined;
        }, { what: "the guest's pattern in " + shm, timeoutMs: 90_000 });
        const state = await readState(home, "shm");
        const dev =
          (state.devices as { name: string; hostPath: string; guestLocation: string }[])[0];
        assert.equal(dev.hostPath, shm);
        assert.match(dev.guestLocation, /BAR2/);

        // The guest prints its line after the write: wait for it through `ovm logs`.
        await waitFor(async () => {
          const logs = await ovmIn(home, "logs", "shm");
          return /pattern-written/.test(logs.stdout) ? true : undefined;
        }, { what: "pattern-written in ovm logs" });

        const qmp = state.qmpSocket as string;
        // Paused through the adapter, the VM shows as paused; stop resumes it
        // so the guest can still power off gracefully.
        const vm = (await getInstance(home, "shm")).vm!;
        await getAdapter("qemu").pause(vm);
        const paused = JSON.parse((await ovmIn(home, "ps", "--json")).stdout) as {
          id: string;
          state: string;
        }[];
        assert.equal(paused.find((s) => s.id === "shm")?.state, "paused");
        // `logs -f` follows the console until the VM ends.
        const follow = ovmProc(home, "logs", "-f", "shm");
        const stop = await ovmProc(home, "stop", "shm", "--timeout", "30");
        const followed = await follow;
        assert.equal(followed.code, 0, followed.stderr);
        assert.match(followed.stdout, /pattern-written[\s\S]*OVMS-EXIT: \d+/);
        assert.equal(stop.code, 0, stop.stderr);
        assert.match(stop.stdout, /stopped/);
        assert.equal(await isVmProcess(pid), false);
        await assert.rejects(Deno.lstat(shm), Deno.errors.NotFound);
        await assert.rejects(Deno.lstat(qmp), Deno.errors.NotFound);
        const after = await readState(home, "shm");
        assert.equal(after.state, "stopped");
        assert.match(String(after.reason), /ovm stop.*powered off/);
        // ovms-init stopped the workload and reported how it ended.
        assert.equal(typeof after.exitCode, "number");
      },
    );

    await t.step(
      "a guest serving HTTP is reached through -p, and killing qemu by hand is recorded as an error",
      async () => {
        const port = freePort();
        const r = await ovmIn(
          home,
          "run",
          ...VM,
          "-d",
          "--name",
          "web",
          "-p",
          `${port}:80`,
          artifact.ref,
          "--",
          "httpd",
          "-f",
          "-p",
          "80",
          "-h",
          "/srv",
        );
        assert.equal(r.code, 0, r.stderr);
        const body = await waitFor(async () => {
          try {
            const res = await fetch(`http://127.0.0.1:${port}/index.html`);
            const text = await res.text();
            return res.ok ? text : undefined;
          } catch {
            return undefined;
          }
        }, { what: "the guest's httpd", timeoutMs: 90_000 });
        assert.match(body, /served by busybox httpd inside an OVMS VM/);

        const state = await readState(home, "web");
        const pid = state.pid as number;
        Deno.kill(pid, "SIGKILL");
        // A SIGKILLed QEMU takes a moment to tear down its threads; ps notices once it is gone.
        const web = await waitFor(async () => {
          const ps = await ovmIn(home, "ps", "-a", "--json");
          const w = (JSON.parse(ps.stdout) as { id: string; state: string; reason: string }[])
            .find((s) => s.id === "web")!;
          return w.state === "running" ? undefined : w;
        }, { what: "ps to notice the killed VM", timeoutMs: 20_000 });
        assert.equal(web.state, "error");
        assert.match(web.reason, /pid \d+.*(killed|ended)/);
        await assert.rejects(Deno.lstat("/dev/shm/ovm-web-shm0"), Deno.errors.NotFound);
        assert.equal((await ovmIn(home, "rm", "web")).code, 0);
        assert.equal((await ovmIn(home, "rm", "shm")).code, 0);
        assert.deepEqual(JSON.parse((await ovmIn(home, "ps", "-a", "--json")).stdout), []);
      },
    );

    await t.step(
      "an exported directory runs in the foreground and Ctrl-C stops the VM cleanly",
      async () => {
        const dir = join(home, "exported");
        assert.equal((await ovmIn(home, "export", artifact.ref, dir)).code, 0);
        const ctrlC = new AbortController();
        const r = await ovmWith(
          {
            home,
            signal: ctrlC.signal,
            onStdout: (all) => {
              if (all.includes("ready-for-ctrl-c") && !ctrlC.signal.aborted) ctrlC.abort();
            },
          },
          "run",
          ...VM,
          "--name",
          "fg",
          "--net",
          "none",
          dir,
          "--",
          "sh",
          "-c",
          "echo ready-for-ctrl-c; sleep 600",
        );
        assert.match(r.stdout, /ready-for-ctrl-c/);
        // ovms-init forwarded the stop to the workload and powered off.
        assert.match(r.stdout, /OVMS-EXIT: \d+/);
        const s = await readState(home, "fg");
        assert.equal(s.state, "stopped", JSON.stringify(s));
        assert.match(String(s.reason), /Ctrl-C.*powered off/);
        assert.equal(s.manifestDigest, artifact.digest);
        assert.equal(await isVmProcess(s.pid as number), false);
        await assert.rejects(Deno.lstat("/dev/shm/ovm-fg-shm0"), Deno.errors.NotFound);
        assert.equal(r.code, s.exitCode);
        assert.equal((await ovmIn(home, "rm", "fg")).code, 0);
      },
    );

    await t.step("a raw base layer under a qcow2 diff boots as the same chain", async () => {
      const work = join(home, "rawbase");
      await Deno.mkdir(work);
      const disks = await buildDemoDisks(work);
      const raw = join(work, "base.raw");
      await sh("qemu-img", ["convert", "-O", "raw", disks.base, raw]);
      const a = await loadArtifact(store, artifact.ref);
      const packed = await ovmIn(
        home,
        "pack",
        "--kernel",
        store.blobPath(a.manifest.kernel.ref),
        "--initrd",
        store.blobPath(a.manifest.initrd!.ref),
        "--disk",
        `${raw}:raw`,
        "--disk",
        disks.diff,
        "--args",
        a.manifest.kernel.args,
        "-t",
        "rawbase:1",
      );
      assert.equal(packed.code, 0, packed.stderr);
      const r = await ovmIn(
        home,
        "run",
        ...VM,
        "--name",
        "rawbase",
        "--net",
        "none",
        "rawbase:1",
        "--",
        "sh",
        "-c",
        "cat /etc/ovms-demo/base.txt /etc/ovms-demo/diff.txt",
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /I live in the base layer\r?\nI live in the diff layer/);
      assert.equal((await ovmIn(home, "rm", "rawbase")).code, 0);
    });

    await t.step(
      "a boot that prints nothing within the bound fails with a clear error",
      async () => {
        const r = await ovmIn(
          home,
          "run",
          ...VM,
          "--boot-timeout",
          "0.2",
          "--name",
          "slow",
          artifact.ref,
        );
        assert.equal(r.code, 1);
        assert.match(r.stderr, /printed nothing on its console and did no disk I\/O within/);
        const s = await readState(home, "slow");
        assert.equal(s.state, "error");
        assert.equal(await isVmProcess(s.pid as number), false);
        assert.equal((await ovmIn(home, "rm", "slow")).code, 0);
      },
    );
  },
});
