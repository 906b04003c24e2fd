/**
 * What `ovm run` refuses before any VMM starts: layers that name their own
 * backing file, formats it cannot run, bad flags. No VM boots here.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { diskTarStream } from "../../src/disk/mod.ts";
import { manifestFromValue, MediaTypes } from "../../src/manifest/mod.ts";
import { InstanceStore, parsePublish } from "../../src/runtime/mod.ts";
import { ContentStore, writeArtifact } from "../../src/store/mod.ts";
import { ovmIn } from "../_helpers/runtime.ts";

async function sh(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd}: ${new TextDecoder().decode(out.stderr)}`);
}

/** Stores an artifact around `disk` without `ovm pack`'s checks (as a hostile registry could). */
async function storeRaw(
  home: string,
  disk: string,
  format: "qcow2" | "raw" | "ovfms",
  tag: string,
  devices: unknown[] = [],
): Promise<void> {
  const store = await ContentStore.open(home);
  const kernel = await store.writeBlob(new TextEncoder().encode("not a kernel"));
  const { stream, size } = await diskTarStream(disk, `disk.${format === "raw" ? "raw" : "qcow2"}`);
  const layer = await store.ingest(stream, { expectedSize: size });
  const manifest = manifestFromValue({
    schemaVersion: 1,
    mediaType: MediaTypes.manifest,
    name: "evil",
    version: "1",
    kernel: { ref: kernel.digest, args: "console=ttyS0" },
    diskLayers: [{ ref: layer.digest, format, size: 64 * 1024 * 1024 }],
    devices,
  });
  await store.tag(tag, await writeArtifact(store, manifest));
}

async function qemuPids(): Promise<Set<number>> {
  const out = new Set<number>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const exe = await Deno.readLink(`/proc/${e.name}/exe`).catch(() => "");
    if (exe.includes("qemu-system")) out.add(Number(e.name));
  }
  return out;
}

Deno.test("a qcow2 layer whose header names /etc/shadow as backing file is refused before qemu starts", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-evil-" });
  try {
    const disk = join(home, "evil.qcow2");
    await sh("qemu-img", [
      "create",
      "-q",
      "-f",
      "qcow2",
      "-u",
      "-b",
      "/etc/shadow",
      "-F",
      "raw",
      disk,
      "64M",
    ]);
    await storeRaw(home, disk, "qcow2", "evil:1");
    const before = await qemuPids();
    const r = await ovmIn(home, "run", "--accel", "tcg", "--net", "none", "evil:1");
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /names its own backing file "\/etc\/shadow"; refused/);
    const after = await qemuPids();
    assert.deepEqual([...after].filter((p) => !before.has(p)), []);
    // Nothing is left behind: no instance, no overlay.
    const left = [];
    try {
      for await (const e of Deno.readDir(join(home, "instances"))) left.push(e.name);
    } catch { /* never created */ }
    assert.deepEqual(left, []);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a layer in the reserved ovfms format is refused with a hint", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-ovfms-" });
  try {
    const disk = join(home, "d.qcow2");
    await sh("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]);
    await storeRaw(home, disk, "ovfms", "odd:1");
    const r = await ovmIn(home, "run", "--accel", "tcg", "odd:1");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /format "ovfms", which ovm cannot run/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("a shared-memory file that already exists is a conflict, not overwritten", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-shm-" });
  const shm = "/dev/shm/ovm-shmclash-shm0";
  try {
    const disk = join(home, "d.qcow2");
    await sh("qemu-img", ["create", "-q", "-f", "qcow2", disk, "64M"]);
    await storeRaw(home, disk, "qcow2", "clash:1", [
      { type: "ivshmem", name: "shm0", size: 1 << 20, mmio_addr: "0x0" },
    ]);
    await Deno.writeTextFile(shm, "someone else's");
    const r = await ovmIn(home, "run", "--accel", "tcg", "--name", "shmclash", "clash:1");
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /Shared-memory file "\/dev\/shm\/ovm-shmclash-shm0" already exists/);
    assert.equal(await Deno.readTextFile(shm), "someone else's");
    assert.deepEqual(JSON.parse((await ovmIn(home, "ps", "-a", "--json")).stdout), []);
  } finally {
    await Deno.remove(shm).catch(() => {});
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("run rejects bad flags with exit code 2", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-flags-" });
  try {
    for (
      const [args, msg] of [
        [["-p", "80"], /Invalid -p "80"/],
        [["-p", "70000:80"], /Invalid -p/],
        [["--net", "tap"], /Invalid --net "tap"/],
        [["--net", "none", "-p", "8080:80"], /cannot be used with --net none/],
        [["--accel", "hvf"], /Invalid --accel "hvf"/],
        [["--cpus", "0"], /Invalid --cpus "0"/],
        [["--memory", "lots"], /Invalid --memory "lots"/],
        [["--name", "Bad_Name"], /Invalid instance name "Bad_Name"/],
      ] as const
    ) {
      const r = await ovmIn(home, "run", ...args, "nothing:1");
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
    }
    const missing = await ovmIn(home, "run", "--accel", "tcg", "nothing:1");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /No artifact "nothing:1"/);
    for (const verb of ["stop", "logs", "rm"]) {
      const r = await ovmIn(home, verb, "ghost");
      assert.equal(r.code, 1, verb);
      assert.match(r.stderr, /No instance "ghost"/);
    }
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("port specs default to loopback and tcp", () => {
  assert.deepEqual(parsePublish("8080:80"), {
    hostIp: "127.0.0.1",
    hostPort: 8080,
    guestPort: 80,
    protocol: "tcp",
  });
  assert.deepEqual(parsePublish("0.0.0.0:5353:53/udp"), {
    hostIp: "0.0.0.0",
    hostPort: 5353,
    guestPort: 53,
    protocol: "udp",
  });
});

Deno.test("an instance whose ovm died while starting it is recorded as an error", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-orphan-" });
  try {
    const gone = new Deno.Command("true").spawn();
    await gone.status;
    const instances = new InstanceStore(home);
    await instances.create("orphan");
    await instances.write({
      schemaVersion: 1,
      id: "orphan",
      ref: "x:1",
      manifestDigest: `sha256:${"0".repeat(64)}`,
      name: "x",
      version: "1",
      adapter: "qemu",
      state: "starting",
      kernelDigest: `sha256:${"1".repeat(64)}`,
      accel: "tcg",
      memoryBytes: 1 << 28,
      cpus: 1,
      network: { mode: "none", publish: [] },
      devices: [],
      detached: true,
      createdAt: new Date().toISOString(),
      ownerPid: gone.pid,
    });
    const r = await ovmIn(home, "ps", "-a", "--json");
    const [s] = JSON.parse(r.stdout);
    assert.equal(s.state, "error");
    assert.match(s.reason, /exited while starting/);
    assert.equal((await ovmIn(home, "rm", "orphan")).code, 0);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
