import assert from "node:assert/strict";
import { join } from "node:path";
import {
  closeFd,
  ErrnoError,
  lockFileInMemory,
  MADV_WILLNEED,
  MAP_PRIVATE,
  MAP_SHARED,
  memfdCreate,
  memlockLimit,
  mlock,
  mmap,
  munlock,
  O_RDWR,
  openFd,
  PROT_READ,
  PROT_WRITE,
} from "../../ffi/mod.ts";
import { tempDir } from "../_helpers/cli.ts";

async function fileOf(dir: string, size: number, fill: number): Promise<string> {
  const p = join(dir, `f-${fill}`);
  await Deno.writeFile(p, new Uint8Array(size).fill(fill));
  return p;
}

Deno.test("mmap maps a file and its bytes read back through the pointer", async () => {
  await using tmp = await tempDir();
  const p = await fileOf(tmp.path, 8192, 0x5a);
  const fd = openFd(p);
  try {
    using m = mmap(fd, 8192, { prot: PROT_READ, flags: MAP_SHARED });
    assert.equal(m.view().getUint8(0), 0x5a);
    assert.equal(m.view().getUint8(8191), 0x5a);
  } finally {
    closeFd(fd);
  }
});

Deno.test("a private writable mapping never changes the file (copy-on-write)", async () => {
  await using tmp = await tempDir();
  const p = await fileOf(tmp.path, 4096, 0x01);
  const fd = openFd(p, O_RDWR);
  try {
    using m = mmap(fd, 4096, { prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE });
    const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(m.pointer, 4096));
    bytes[0] = 0xff;
    assert.equal(m.view().getUint8(0), 0xff);
  } finally {
    closeFd(fd);
  }
  assert.equal((await Deno.readFile(p))[0], 0x01);
});

Deno.test("mlock and munlock lock a mapping in RAM", async () => {
  await using tmp = await tempDir();
  const p = await fileOf(tmp.path, 1 << 20, 0x33);
  using m = lockFileInMemory(p, 1 << 20);
  assert.equal(m.locked, true);
  const status = await Deno.readTextFile("/proc/self/status");
  const vmLck = Number(/VmLck:\s+(\d+) kB/.exec(status)![1]);
  assert.ok(vmLck >= 1024, `VmLck ${vmLck} kB`);
  m.unlock();
  mlock(m.pointer, 4096);
  munlock(m.pointer, 4096);
  m.advise(MADV_WILLNEED);
});

Deno.test("memfd_create makes a sized anonymous file reachable through /proc", async () => {
  const { fd, path } = memfdCreate("ovm-test", { size: 65536 });
  try {
    assert.equal((await Deno.stat(path)).size, 65536);
    await Deno.writeFile(path, new Uint8Array([1, 2, 3]), { create: false });
    using m = mmap(fd, 4096);
    assert.equal(m.view().getUint8(2), 3);
    assert.match(await Deno.readLink(path), /^\/memfd:ovm-test/);
  } finally {
    closeFd(fd);
  }
});

Deno.test("failing calls raise typed errno errors", () => {
  assert.throws(() => openFd("/nonexistent/ovm"), (e: unknown) => {
    assert.ok(e instanceof ErrnoError);
    assert.equal(e.errnoName, "ENOENT");
    assert.match(e.message, /open \(\/nonexistent\/ovm\) failed: ENOENT/);
    return true;
  });
  assert.throws(
    () => mmap(-1, 4096),
    (e: unknown) => e instanceof ErrnoError && e.errnoName === "EBADF",
  );
  assert.throws(
    () => memfdCreate("bad", { flags: 0x40000000 }),
    (e: unknown) => e instanceof ErrnoError && e.errnoName === "EINVAL",
  );
  assert.throws(
    () => closeFd(-1),
    (e: unknown) => e instanceof ErrnoError && e.errnoName === "EBADF",
  );
});

Deno.test("memlockLimit reads RLIMIT_MEMLOCK", () => {
  const { soft, hard } = memlockLimit();
  assert.ok(soft > 0 && hard >= soft);
});

Deno.test("mlock refused by the kernel names RLIMIT_MEMLOCK and the fix", async () => {
  await using tmp = await tempDir();
  const p = await fileOf(tmp.path, 1 << 20, 0x44);
  const child = new URL("./testdata/mlock_child.ts", import.meta.url).pathname;
  // Without CAP_IPC_LOCK and with a zero limit, even root cannot lock memory.
  const out = await new Deno.Command("setpriv", {
    args: [
      "--bounding-set=-ipc_lock",
      "--inh-caps=-ipc_lock",
      "prlimit",
      "--memlock=0:0",
      Deno.execPath(),
      "run",
      "-A",
      child,
      p,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(r.ok, false);
  assert.ok(["EPERM", "ENOMEM", "EAGAIN"].includes(r.errno), r.errno);
  assert.match(r.hint, /RLIMIT_MEMLOCK is 0 bytes/);
  assert.match(r.hint, /ulimit -l unlimited/);
});

Deno.test("dataRanges reports the data of a sparse file and skips its holes", async () => {
  const { dataRanges } = await import("../../ffi/mod.ts");
  await using tmp = await tempDir();
  const p = join(tmp.path, "sparse");
  const MiB = 1 << 20;
  {
    using f = await Deno.open(p, { write: true, create: true });
    await f.truncate(16 * MiB);
    await f.seek(2 * MiB, Deno.SeekMode.Start);
    await f.write(new Uint8Array(MiB).fill(1));
    await f.seek(10 * MiB, Deno.SeekMode.Start);
    await f.write(new Uint8Array(4096).fill(2));
  }
  const ranges = dataRanges(p, 0, 16 * MiB);
  assert.deepEqual(ranges.length, 2, JSON.stringify(ranges));
  assert.ok(ranges[0][0] <= 2 * MiB && ranges[0][1] >= 3 * MiB);
  assert.ok(ranges[1][0] <= 10 * MiB && ranges[1][1] >= 10 * MiB + 4096);
  // A window is honoured, and a file without data has no ranges.
  assert.deepEqual(dataRanges(p, 4 * MiB, 4 * MiB), []);
  await Deno.writeFile(join(tmp.path, "empty"), new Uint8Array());
  await Deno.truncate(join(tmp.path, "empty"), MiB);
  assert.deepEqual(dataRanges(join(tmp.path, "empty"), 0, MiB), []);
});
