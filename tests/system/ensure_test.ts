import assert from "node:assert/strict";
import { join } from "node:path";
import { digestFile } from "../../src/manifest/mod.ts";
import {
  buildInitrd,
  DEFAULT_KERNEL,
  ensureSystem,
  initrdVersionFor,
  readInitrdMeta,
  readKernelMeta,
  REQUIRED_MODULES,
} from "../../src/system/mod.ts";
import { tempDir } from "../_helpers/cli.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";

Deno.test("ensureSystem fetches the default kernel, builds its initrd, and a second call rebuilds nothing", async () => {
  await using home = await tempDir();
  const first = await ensureSystem(home.path, { cacheDir: TEST_CACHE });
  assert.equal(first.kernel.version, DEFAULT_KERNEL.version);
  assert.equal(first.initrd.version, initrdVersionFor(DEFAULT_KERNEL.version));
  assert.equal(first.initrd.kernelVersion, DEFAULT_KERNEL.version);
  for (const img of [first.kernel, first.initrd]) {
    assert.deepEqual(await digestFile(img.path), { digest: img.digest, size: img.size });
  }
  const kernelMeta = await Deno.readTextFile(join(first.kernel.path, "../kernel.json"));
  const initrdStat = await Deno.stat(first.initrd.path);

  const progress: string[] = [];
  const second = await ensureSystem(home.path, {
    cacheDir: TEST_CACHE,
    onProgress: (m) => progress.push(m),
  });
  assert.deepEqual(second, first);
  assert.deepEqual(progress, [], "the second call reported work");
  assert.equal(await Deno.readTextFile(join(first.kernel.path, "../kernel.json")), kernelMeta);
  const again = await Deno.stat(first.initrd.path);
  assert.equal(again.ino, initrdStat.ino);
  assert.equal(again.mtime?.getTime(), initrdStat.mtime?.getTime());
});

Deno.test("the kernel metadata records its source and every needed module is present or built in", async () => {
  await using home = await tempDir();
  await ensureSystem(home.path, { cacheDir: TEST_CACHE });
  const k = await readKernelMeta(home.path, DEFAULT_KERNEL.version);
  assert.ok(k);
  assert.equal(k.source.type, "debian");
  assert.equal(k.source.sha256, DEFAULT_KERNEL.sha256);
  const names = new Set([...k.modules.map((m) => m.name), ...k.builtin]);
  for (const m of REQUIRED_MODULES) assert.ok(names.has(m), `module ${m} missing`);
  // Load order: every module comes after its dependencies.
  const seen = new Set<string>(k.builtin);
  for (const m of k.modules) {
    for (const d of m.depends) assert.ok(seen.has(d), `${m.name} loads before its dependency ${d}`);
    seen.add(m.name);
  }
});

Deno.test("building the initrd twice from the same inputs gives the same digest", async () => {
  await using home = await tempDir();
  const set = await ensureSystem(home.path, { cacheDir: TEST_CACHE });
  const a = await buildInitrd(home.path, DEFAULT_KERNEL.version, { version: "repro-a" });
  const b = await buildInitrd(home.path, DEFAULT_KERNEL.version, { version: "repro-b" });
  assert.equal(a.digest, b.digest);
  assert.equal(a.digest, set.initrd.digest);
  assert.deepEqual(a.inputs, b.inputs);
  const meta = await readInitrdMeta(home.path, "repro-a");
  assert.equal(meta?.digest, a.digest);
});

Deno.test("the initrd is a newc cpio with init, busybox and the modules, owned by root with mtime 0", async () => {
  await using home = await tempDir();
  const set = await ensureSystem(home.path, { cacheDir: TEST_CACHE });
  const gz = await Deno.readFile(set.initrd.path);
  const cpio = new Uint8Array(
    await new Response(new Blob([gz]).stream().pipeThrough(new DecompressionStream("gzip")))
      .arrayBuffer(),
  );
  const list = await new Deno.Command("cpio", {
    args: ["-itv", "--quiet"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { TZ: "UTC" },
  }).spawn();
  const w = list.stdin.getWriter();
  await w.write(cpio);
  await w.close();
  const out = await list.output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const names = lines.map((l) => l.split(/\s+/).at(-1)!.replace(/ -> .*/, ""));
  const plain = lines.map((l) => l.replace(/ -> .*/, "").split(/\s+/).at(-1)!);
  for (const want of ["init", "bin/busybox", "dev/console", "etc/ovms/modules"]) {
    assert.ok(plain.includes(want), `${want} missing from the initrd`);
  }
  assert.ok(
    plain.some((n) => n.endsWith("/virtio_blk.ko")),
    "virtio_blk.ko missing from the initrd",
  );
  assert.deepEqual(plain, [...plain].sort(), "entries are not sorted");
  for (const l of lines) {
    const cols = l.split(/\s+/);
    assert.equal(cols[2], "root", l);
    assert.equal(cols[3], "root", l);
    assert.match(l, /1970/, l);
  }
  assert.ok(names.length > 10);
});
