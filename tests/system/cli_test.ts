import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULT_KERNEL, initrdVersionFor } from "../../src/system/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";

Deno.test("ovm system ensure prints the kernel and initrd, and a second run rebuilds nothing", async () => {
  await using home = await tempDir();
  // Share the suite's download cache so the kernel package is fetched once per run.
  await Deno.mkdir(TEST_CACHE, { recursive: true });
  await Deno.symlink(TEST_CACHE, join(home.path, "cache"));
  const first = await ovm(home.path, "system", "ensure", "--json");
  assertExit(first, 0);
  const set = JSON.parse(first.stdout);
  assert.equal(set.kernel.version, DEFAULT_KERNEL.version);
  assert.equal(set.initrd.version, initrdVersionFor(DEFAULT_KERNEL.version));
  assert.match(first.stderr, /building initrd/);

  const second = await ovm(home.path, "system", "ensure", "--json");
  assertExit(second, 0);
  assert.deepEqual(JSON.parse(second.stdout), set);
  assert.equal(second.stderr, "", "the second run reported work");

  const ls = await ovm(home.path, "system", "ls", "--json");
  assertExit(ls, 0);
  const rows = JSON.parse(ls.stdout) as { kind: string; version: string }[];
  assert.deepEqual(rows.map((r) => `${r.kind} ${r.version}`), [
    `kernel ${set.kernel.version}`,
    `initrd ${set.initrd.version}`,
  ]);
});

Deno.test("ovm system rm refuses a version an instance or an initrd uses, and removes it otherwise", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const file = join(tmp.path, "vmlinux");
  await Deno.writeFile(file, crypto.getRandomValues(new Uint8Array(16384)));
  assertExit(await ovm(home, "system", "kernel", "add", file, "--version", "1.0-test"), 0);
  assertExit(await ovm(home, "system", "initrd", "build", "--kernel", "1.0-test"), 0);
  const initrd = initrdVersionFor("1.0-test");

  const inst = join(home, "instances", "web-1");
  await Deno.mkdir(inst, { recursive: true });
  await Deno.writeTextFile(
    join(inst, "state.json"),
    JSON.stringify({ kernelVersion: "1.0-test", initrdVersion: initrd }),
  );
  const refused = await ovm(home, "system", "rm", initrd);
  assertExit(refused, 1);
  assert.match(refused.stderr, /in use by instance "web-1"/);

  await Deno.remove(inst, { recursive: true });
  const kernelFirst = await ovm(home, "system", "rm", "1.0-test");
  assertExit(kernelFirst, 1);
  assert.match(kernelFirst.stderr, new RegExp(`used by initrd "${initrd}"`));

  assertExit(await ovm(home, "system", "rm", initrd), 0);
  assertExit(await ovm(home, "system", "rm", "1.0-test"), 0);
  const ls = await ovm(home, "system", "ls", "--json");
  assert.deepEqual(JSON.parse(ls.stdout), []);
  const gone = await ovm(home, "system", "rm", "1.0-test");
  assertExit(gone, 1);
  assert.match(gone.stderr, /"1.0-test" is not installed/);
});

Deno.test("ovm system kernel add without a source is a usage error", async () => {
  await using home = await tempDir();
  assertExit(await ovm(home.path, "system", "kernel", "add"), 2);
  const r = await ovm(home.path, "system", "kernel", "add", "nonsense");
  assertExit(r, 2);
  assert.match(r.stderr, /Unknown kernel source "nonsense"/);
});
