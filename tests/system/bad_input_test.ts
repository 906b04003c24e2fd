import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AlreadyExistsError,
  DigestMismatchError,
  NotFoundError,
  ValidationError,
} from "../../src/errors.ts";
import {
  addKernel,
  buildInitrd,
  DEFAULT_KERNEL,
  ensureSystem,
  initCmdline,
  parseConsole,
  parseKernelSource,
  removeSystemVersion,
} from "../../src/system/mod.ts";
import { listFiles, tempDir } from "../_helpers/cli.ts";

/** Files under `$OVM_HOME/system` and the cache: a failed add must leave none. */
async function leftovers(home: string): Promise<string[]> {
  return [
    ...(await listFiles(join(home, "system"))),
    ...(await listFiles(join(home, "cache", "downloads"))),
  ];
}

Deno.test("an unknown kernel version is a not-found error naming it", async () => {
  await using home = await tempDir();
  await assert.rejects(
    () => buildInitrd(home.path, "9.9.9-nope"),
    (e) => e instanceof NotFoundError && e.message.includes('"9.9.9-nope"'),
  );
  await assert.rejects(
    () => ensureSystem(home.path, { kernelVersion: "9.9.9-nope" }),
    (e) => e instanceof NotFoundError && e.message.includes('"9.9.9-nope"'),
  );
  await assert.rejects(
    () => removeSystemVersion(home.path, "9.9.9-nope"),
    (e) => e instanceof NotFoundError && e.message.includes('"9.9.9-nope"'),
  );
  await assert.rejects(() => buildInitrd(home.path, "../etc"), ValidationError);
});

Deno.test("an unknown Debian kernel package is a not-found error", async () => {
  await using home = await tempDir();
  await assert.rejects(
    () => addKernel(home.path, "linux-image-0.0.0-0-nope-amd64"),
    (e) => e instanceof NotFoundError && e.message.includes("linux-image-0.0.0-0-nope-amd64"),
  );
  assert.deepEqual(await leftovers(home.path), []);
});

Deno.test("a download whose digest does not match the pinned one is refused and leaves nothing behind", async () => {
  await using home = await tempDir();
  const body = crypto.getRandomValues(new Uint8Array(64 * 1024));
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response(body),
  );
  const url = `http://127.0.0.1:${server.addr.port}/vmlinux`;
  await assert.rejects(
    () => addKernel(home.path, url, { version: "6.2-test", sha256: "ab".repeat(32) }),
    (e) => e instanceof DigestMismatchError && e.expected === `sha256:${"ab".repeat(32)}`,
  );
  assert.deepEqual(await leftovers(home.path), []);
  await assert.rejects(() => addKernel(home.path, url, { version: "6.2-test" }), ValidationError);
});

Deno.test("a kernel package without the needed modules is refused, naming them", async () => {
  await using tmp = await tempDir();
  const pkg = join(tmp.path, "pkg");
  await Deno.mkdir(join(pkg, "DEBIAN"), { recursive: true });
  await Deno.mkdir(join(pkg, "boot"));
  await Deno.mkdir(join(pkg, "lib/modules/9.9.0-bare"), { recursive: true });
  await Deno.writeTextFile(
    join(pkg, "DEBIAN/control"),
    "Package: linux-image-9.9.0-bare\nVersion: 1\nArchitecture: amd64\n" +
      "Maintainer: test <t@example.org>\nDescription: a kernel without modules\n",
  );
  await Deno.writeFile(
    join(pkg, "boot/vmlinuz-9.9.0-bare"),
    crypto.getRandomValues(new Uint8Array(16384)),
  );
  await Deno.writeTextFile(join(pkg, "lib/modules/9.9.0-bare/modules.builtin"), "");
  const deb = join(tmp.path, "bare.deb");
  const b = await new Deno.Command("dpkg-deb", {
    args: ["-b", "--root-owner-group", pkg, deb],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.ok(b.success, new TextDecoder().decode(b.stderr));
  const home = join(tmp.path, "home");
  await assert.rejects(
    () => addKernel(home, deb),
    (e) =>
      e instanceof ValidationError && /lacks modules the guest needs/.test(e.message) &&
      e.message.includes("virtio_blk") && e.message.includes("overlay"),
  );
  assert.deepEqual(await leftovers(home), []);
});

Deno.test("a bare kernel file needs a version, and a second add of the same version is refused", async () => {
  await using tmp = await tempDir();
  const file = join(tmp.path, "vmlinux");
  await Deno.writeFile(file, crypto.getRandomValues(new Uint8Array(16384)));
  const home = join(tmp.path, "home");
  await assert.rejects(() => addKernel(home, file), ValidationError);
  await assert.rejects(
    () => addKernel(home, join(tmp.path, "nope.bin"), { version: "1" }),
    NotFoundError,
  );
  await assert.rejects(
    () => addKernel(home, file, { version: "1.0-test", sha256: "00".repeat(32) }),
    DigestMismatchError,
  );
  const k = await addKernel(home, file, { version: "1.0-test" });
  assert.equal(k.assumeBuiltin, true);
  await assert.rejects(() => addKernel(home, file, { version: "1.0-test" }), AlreadyExistsError);
  await addKernel(home, file, { version: "1.0-test", force: true });
});

Deno.test("kernel sources and command-line values that cannot work are validation errors", () => {
  assert.throws(() => parseKernelSource("nonsense"), ValidationError);
  assert.deepEqual(parseKernelSource("debian:linux-image-6.1.0-56-cloud-amd64"), {
    type: "debian",
    package: "linux-image-6.1.0-56-cloud-amd64",
  });
  assert.throws(() => initCmdline({ hostname: "bad name" }), ValidationError);
  assert.throws(() => initCmdline({ root: "/dev/vda quiet" }), ValidationError);
  assert.throws(() => initCmdline({ net: { address: "10.0.2.15" } }), ValidationError);
});

Deno.test("console parsing finds the last exit line and ovms-init's errors", () => {
  const text = 'boot\r\nOVMS-EXIT: 1\r\novms-init: error: entrypoint "x" not found\r\n' +
    "OVMS-EXIT: 127\r\n[ 1.0] reboot: Power down\r\n";
  assert.deepEqual(parseConsole(text), {
    exitCode: 127,
    errors: ['entrypoint "x" not found'],
  });
  assert.deepEqual(parseConsole("no exit line"), { exitCode: undefined, errors: [] });
});

Deno.test("a corrupt cached kernel package fails the pinned digest, is dropped, and nothing is installed", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const cache = join(tmp.path, "cache");
  await Deno.mkdir(join(cache, "debs"), { recursive: true });
  const deb = join(
    cache,
    "debs",
    `${DEFAULT_KERNEL.debianPackage}_${DEFAULT_KERNEL.debianVersion}_amd64.deb`,
  );
  await Deno.writeFile(deb, crypto.getRandomValues(new Uint8Array(4096)));
  await assert.rejects(
    () => ensureSystem(home, { cacheDir: cache }),
    (e) => e instanceof DigestMismatchError && e.expected === `sha256:${DEFAULT_KERNEL.sha256}`,
  );
  assert.deepEqual(await listFiles(join(cache, "debs")), []);
  assert.deepEqual(await leftovers(home), []);
});
