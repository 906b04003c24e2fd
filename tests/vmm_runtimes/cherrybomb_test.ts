/**
 * Cherrybomb end to end: `ovm run --runtime cherrybomb` drives the test
 * executable in tests/fixtures/cherrybomb (which accepts exactly the spec's
 * flags and boots the VM with qemu underneath); its argv is checked flag by
 * flag against the built-in descriptor's mapping.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { demoHome, ovmIn, readState, waitFor } from "../_helpers/runtime.ts";
import { loadArtifact } from "../../src/store/mod.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { processStartTime } from "../../src/process/mod.ts";
import { vmmUser } from "../../src/runtime/mod.ts";
import { cherrybombFixture } from "../_helpers/vmm_runtimes.ts";

// A copy the VMM's uid can run, wherever the checkout is.
const FIXTURE = await cherrybombFixture();

function readArgv(path: string): string[] {
  const raw = Deno.readTextFileSync(path);
  return raw.split("\0").slice(0, -1);
}

Deno.test("ovm run --runtime cherrybomb boots the demo artifact with the spec's flags and its console shows in ovm logs", async () => {
  await using demo = await demoHome();
  const { home } = demo;
  const run = await ovmIn(
    home,
    "run",
    "--runtime",
    "cherrybomb",
    "--runtime-path",
    FIXTURE,
    "--net",
    "none",
    "-d",
    "--name",
    "cb",
    demo.artifact.ref,
  );
  assert.equal(run.code, 0, run.stderr);
  // The demo prefers qemu: an explicit --runtime outside the hint warns and proceeds.
  assert.match(run.stderr, /prefers "qemu", not "cherrybomb"/);
  const state = await readState(home, "cb");
  assert.equal(state.adapter, "cherrybomb");
  const vmDir = join(home, "instances", "cb", "vm");
  try {
    // The guest's console (through the fixture's qemu) reaches `ovm logs`.
    const logs = await waitFor(async () => {
      const r = await ovmIn(home, "logs", "cb");
      return /ivshmem region at|OVMS-EXIT/.test(r.stdout) ? r.stdout : undefined;
    }, { timeoutMs: 90_000, what: "console output in ovm logs" });
    // The fixture turned --ivshmem into a device the demo workload finds and writes.
    assert.match(logs, /ivshmem region at .*: wrote OVMS/);

    const argvFile = join(vmDir, "cherrybomb.argv");
    const argv = readArgv(argvFile);
    // Run as root, ovm starts the binary as the instance's own unprivileged user (spec 7.7).
    const user = vmmUser(home, "cb");
    if (user) assert.equal((await Deno.stat(argvFile)).uid, user.uid);
    // Files in the VM directory (the binary's working directory) are named relative to it.
    const inVm = (p: string) => p.startsWith("/") ? p : join(vmDir, p);
    const store = await ContentStore.open(home);
    const m = (await loadArtifact(store, demo.artifact.ref)).manifest;
    assert.equal(argv[0], "--kernel");
    assert.ok(Deno.statSync(inVm(argv[1])).isFile, "--kernel names a real file");
    let i = 2;
    if (m.initrd) {
      assert.equal(argv[i], "--initrd");
      assert.ok(Deno.statSync(inVm(argv[i + 1])).isFile);
      i += 2;
    }
    // One --disk per layer, base first, as real files in the VM directory...
    for (const [n, l] of m.diskLayers.entries()) {
      assert.equal(argv[i], "--disk");
      assert.equal(inVm(argv[i + 1]), join(vmDir, `layer-${n}.${l.format}`));
      i += 2;
    }
    // ...then the writable overlay, then the config disk.
    assert.equal(argv[i], "--disk");
    assert.equal(inVm(argv[i + 1]), join(vmDir, "overlay.qcow2"));
    i += 2;
    assert.equal(argv[i], "--disk");
    const config = join(home, "instances", "cb", "config.tar");
    // The config disk itself, or the copy the unprivileged binary may read.
    assert.deepEqual(
      await Deno.readFile(inVm(argv[i + 1])),
      await Deno.readFile(config),
    );
    i += 2;
    for (const d of m.devices) {
      assert.deepEqual(argv.slice(i, i + 6), [
        "--ivshmem",
        d.name,
        "--size",
        String(d.size),
        "--addr",
        d.mmio_addr,
      ]);
      i += 6;
    }
    assert.equal(argv[i], "--cmdline");
    assert.ok(argv[i + 1].startsWith(m.kernel.args.trim()));
    assert.match(argv[i + 1], /ovms\.net=none/);
    assert.equal(argv.length, i + 2, `no other flags: ${JSON.stringify(argv)}`);

    const stop = await ovmIn(home, "stop", "cb");
    assert.equal(stop.code, 0, stop.stderr);
    // Gone or a zombie not yet reaped by this (parent) test process.
    assert.equal(await processStartTime(state.pid as number), undefined);
  } finally {
    await ovmIn(home, "rm", "-f", "cb");
  }
});

Deno.test("ovm run --runtime cherrybomb of a snapshot artifact passes the decoded RAM image with --ram-snapshot", async () => {
  const { encodeRamsnap } = await import("../../src/snapshot/mod.ts");
  const { writeArtifact } = await import("../../src/store/mod.ts");
  await using demo = await demoHome();
  const { home } = demo;
  const store = await ContentStore.open(home);
  const base = await loadArtifact(store, demo.artifact.ref);
  // A RAM image with a recognisable pattern, as a ramsnap blob (spec 8).
  const mem = join(home, "mem.img");
  const pattern = new Uint8Array(1 << 20).map((_, i) => (i * 7) & 0xff);
  await Deno.writeFile(mem, pattern);
  await Deno.writeFile(join(home, "dev.state"), new TextEncoder().encode("device state"));
  const blob = await store.ingest(
    encodeRamsnap([
      { name: "memory", path: mem, size: pattern.length },
      { name: "device-state", path: join(home, "dev.state"), size: 12 },
    ]),
  );
  const manifest = {
    ...base.manifest,
    ramSnapshot: {
      ref: blob.digest,
      compression: "lz4" as const,
      preload_hint: true,
      mlock_required: false,
    },
  };
  const desc = await writeArtifact(store, manifest, { subject: base.descriptor });
  await store.tag("demo/busybox:cb-snap", desc);

  const run = await ovmIn(
    home,
    "run",
    "--runtime",
    "cherrybomb",
    "--runtime-path",
    FIXTURE,
    "--net",
    "none",
    "-d",
    "--name",
    "cbr",
    "demo/busybox:cb-snap",
  );
  assert.equal(run.code, 0, run.stderr);
  assert.doesNotMatch(run.stderr, /boots it cold/);
  try {
    const vmDir = join(home, "instances", "cbr", "vm");
    const argv = readArgv(join(vmDir, "cherrybomb.argv"));
    const i = argv.indexOf("--ram-snapshot");
    assert.ok(i > 0, `--ram-snapshot given: ${JSON.stringify(argv)}`);
    const image = argv[i + 1].startsWith("/") ? argv[i + 1] : join(vmDir, argv[i + 1]);
    // preload_hint: the decoded image is on tmpfs, byte for byte the RAM that was saved.
    assert.ok((await Deno.realPath(image)).startsWith("/dev/shm/"), image);
    assert.deepEqual(await Deno.readFile(image), pattern);
    const stop = await ovmIn(home, "stop", "cbr");
    assert.equal(stop.code, 0, stop.stderr);
    assert.equal(await Deno.stat(image).catch(() => null), null, "the decoded image is removed");
  } finally {
    await ovmIn(home, "rm", "-f", "cbr");
  }
});
