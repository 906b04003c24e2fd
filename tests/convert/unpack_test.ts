/**
 * The safe unpacker against well-formed and hostile layers: whiteouts,
 * owners, modes, xattrs, links, and every way out of the build directory.
 */
import nodeAssert from "node:assert/strict";
import { join } from "node:path";
import { DigestMismatchError, ValidationError } from "../../src/errors.ts";
import { type LayerSource, openLayout, unpackLayers } from "../../src/convert/mod.ts";
import { sh, type TarSpec, writeLayout, writeTar } from "../_helpers/convert.ts";
import { tempDir } from "../_helpers/cli.ts";

const assert = (v: unknown, msg?: string) => nodeAssert.ok(v, msg);
const assertEquals = (a: unknown, b: unknown) => nodeAssert.deepEqual(a, b);

/** Awaits a rejection of class `cls` (containing `text`, when given) and returns the error. */
async function assertRejects<E extends Error>(
  fn: () => Promise<unknown>,
  cls: new (...a: never[]) => E,
  text?: string,
): Promise<E> {
  try {
    await fn();
  } catch (e) {
    nodeAssert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    if (text) nodeAssert.ok((e as Error).message.includes(text), (e as Error).message);
    return e as E;
  }
  throw new Error(`expected a rejection with ${cls.name}`);
}

/** Layers from tar specs through a real OCI layout (digests checked as they stream). */
async function layersOf(
  dir: string,
  specs: (TarSpec[] | { gzipOf: TarSpec[] } | { raw: string; mediaType: string })[],
): Promise<LayerSource[]> {
  const layers = [];
  for (const [i, s] of specs.entries()) {
    const p = join(dir, `layer${i}.tar`);
    if ("raw" in s) {
      layers.push({ path: s.raw, mediaType: s.mediaType });
    } else if ("gzipOf" in s) {
      await writeTar(p, s.gzipOf);
      await sh("gzip", ["-n", "-k", p]);
      layers.push({ path: `${p}.gz`, mediaType: "application/vnd.oci.image.layer.v1.tar+gzip" });
    } else {
      await writeTar(p, s);
      layers.push({ path: p });
    }
  }
  const layout = join(dir, "layout");
  await writeLayout(layout, layers, { config: { Cmd: ["/bin/sh"] } });
  return (await openLayout(layout, "1")).layers;
}

/** A build dir inside a parent that must stay otherwise empty. */
async function sandbox(t: { path: string }) {
  const parent = join(t.path, "parent");
  const root = join(parent, "root");
  await Deno.mkdir(root, { recursive: true });
  return { parent, root };
}

async function entries(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

Deno.test("unpack applies whiteouts and opaque directories across layers", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const layers = await layersOf(t.path, [
    [
      { name: "etc/", type: "dir" },
      { name: "etc/gone.txt", data: "x" },
      { name: "etc/stays.txt", data: "y" },
      { name: "opq/", type: "dir" },
      { name: "opq/old1", data: "1" },
      { name: "opq/sub/", type: "dir" },
      { name: "opq/sub/old2", data: "2" },
    ],
    [
      { name: "etc/.wh.gone.txt" },
      { name: "opq/new", data: "n" },
      { name: "opq/.wh..wh..opq" },
    ],
  ]);
  const stats = await unpackLayers(root, layers);
  assertEquals(stats.layers, 2);
  assertEquals(await entries(join(root, "etc")), ["stays.txt"]);
  assertEquals(await entries(join(root, "opq")), ["new"]);
});

Deno.test("unpack keeps owners, modes, set-id bits, symlinks, hardlinks and xattrs", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const layers = await layersOf(t.path, [{
    gzipOf: [
      { name: "bin/", type: "dir", mode: 0o755 },
      { name: "bin/tool", data: "#!/bin/sh\n", mode: 0o4755, uid: 0, gid: 0 },
      { name: "home/app/", type: "dir", mode: 0o700, uid: 1000, gid: 1000 },
      { name: "home/app/notes", data: "n", mode: 0o640, uid: 1000, gid: 50 },
      { name: "bin/link", type: "symlink", linkname: "tool" },
      { name: "bin/hard", type: "hardlink", linkname: "bin/tool" },
      { name: "cap", data: "c", xattrs: { "user.ovm": "hello" } },
    ],
  }]);
  await unpackLayers(root, layers);
  const tool = await Deno.lstat(join(root, "bin/tool"));
  assertEquals(tool.mode! & 0o7777, 0o4755);
  const app = await Deno.lstat(join(root, "home/app"));
  assertEquals([app.uid, app.gid, app.mode! & 0o7777], [1000, 1000, 0o700]);
  const notes = await Deno.lstat(join(root, "home/app/notes"));
  assertEquals([notes.uid, notes.gid, notes.mode! & 0o7777], [1000, 50, 0o640]);
  assertEquals(await Deno.readLink(join(root, "bin/link")), "tool");
  assertEquals((await Deno.lstat(join(root, "bin/hard"))).ino, tool.ino);
  const x = await sh("getfattr", ["--only-values", "-n", "user.ovm", join(root, "cap")]);
  assertEquals(x, "hello");
  // mtimes come from the layer, not the clock (reproducible disks)
  assertEquals((await Deno.lstat(join(root, "bin/tool"))).mtime!.getTime(), 1700000000 * 1000);
});

Deno.test("unpack decompresses zstd layers through the zstd program", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const p = join(t.path, "z.tar");
  await writeTar(p, [{ name: "z/hello", data: "zstd works" }]);
  await sh("zstd", ["-q", p, "-o", `${p}.zst`]);
  const layers = await layersOf(t.path, [{
    raw: `${p}.zst`,
    mediaType: "application/vnd.oci.image.layer.v1.tar+zstd",
  }]);
  await unpackLayers(root, layers);
  assertEquals(await Deno.readTextFile(join(root, "z/hello")), "zstd works");
});

Deno.test("unpack reads GNU long names", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const long = "d/" + "x".repeat(150) + "/" + "y".repeat(120);
  const layers = await layersOf(t.path, []);
  const p = join(t.path, "gnu.tar");
  await writeTar(p, [{ name: long, data: "long" }], "gnu");
  const layout = join(t.path, "gnu-layout");
  await writeLayout(layout, [{ path: p }], {});
  await unpackLayers(root, [...layers, ...(await openLayout(layout, "1")).layers]);
  assertEquals(await Deno.readTextFile(join(root, long)), "long");
});

Deno.test("unpack refuses a path that climbs out with '..' and writes nothing outside", async () => {
  await using t = await tempDir();
  const { parent, root } = await sandbox(t);
  const layers = await layersOf(t.path, [[
    { name: "ok.txt", data: "fine" },
    { name: "a/../../escaped.txt", data: "evil" },
  ]]);
  const e = await assertRejects(() => unpackLayers(root, layers), ValidationError);
  assert(e.message.includes("escapes the root filesystem"), e.message);
  assertEquals(await entries(parent), ["root"]);
});

Deno.test("unpack confines an absolute path to the root", async () => {
  await using t = await tempDir();
  const { parent, root } = await sandbox(t);
  const name = `ovm-abs-${crypto.randomUUID()}.txt`;
  const layers = await layersOf(t.path, [[{ name: `/tmp/${name}`, data: "confined" }]]);
  await unpackLayers(root, layers);
  assertEquals(await Deno.readTextFile(join(root, "tmp", name)), "confined");
  assertEquals(await Deno.lstat(`/tmp/${name}`).catch(() => null), null);
  assertEquals(await entries(parent), ["root"]);
});

Deno.test("unpack never writes through a symlink to outside the root", async () => {
  await using t = await tempDir();
  const { parent, root } = await sandbox(t);
  const outside = join(t.path, "outside");
  await Deno.mkdir(outside);
  const layers = await layersOf(t.path, [
    [
      { name: "abs", type: "symlink", linkname: outside },
      { name: "rel", type: "symlink", linkname: "../../../../../.." },
    ],
    [
      { name: "abs/pwned", data: "evil" },
      { name: "rel/pwned2", data: "evil" },
    ],
  ]);
  await unpackLayers(root, layers);
  assertEquals(await entries(outside), []);
  assertEquals(await entries(parent), ["root"]);
  // Followed inside the root: the absolute target re-rooted, ".." clamped at "/".
  assertEquals(await Deno.readTextFile(join(root, outside, "pwned")), "evil");
  assertEquals(await Deno.readTextFile(join(root, "pwned2")), "evil");
  assertEquals(await Deno.readLink(join(root, "abs")), outside);
});

Deno.test("unpack replaces a symlink at the final component instead of following it", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const victim = join(t.path, "victim.txt");
  await Deno.writeTextFile(victim, "original");
  const layers = await layersOf(t.path, [
    [{ name: "f", type: "symlink", linkname: victim }],
    [{ name: "f", data: "new content" }],
  ]);
  await unpackLayers(root, layers);
  assertEquals(await Deno.readTextFile(victim), "original");
  assertEquals(await Deno.readTextFile(join(root, "f")), "new content");
});

Deno.test("unpack refuses a hardlink to a file outside the root", async () => {
  await using t = await tempDir();
  const { parent, root } = await sandbox(t);
  for (const linkname of ["../../etc/passwd", "/etc/passwd"]) {
    const dir = join(t.path, linkname.startsWith("/") ? "abs" : "rel");
    await Deno.mkdir(dir);
    const layers = await layersOf(dir, [[{ name: "pw", type: "hardlink", linkname }]]);
    const e = await assertRejects(() => unpackLayers(root, layers), ValidationError);
    assert(/escapes the root|not in the root filesystem/.test(e.message), e.message);
  }
  assertEquals(await entries(root), []);
  assertEquals(await entries(parent), ["root"]);
});

Deno.test("unpack skips device nodes unless they are allowed", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const spec: TarSpec[] = [
    { name: "dev/", type: "dir" },
    { name: "dev/sda", type: "blockdev", devmajor: 8, devminor: 0, mode: 0o666 },
    { name: "dev/null", type: "chardev", devmajor: 1, devminor: 3, mode: 0o666 },
  ];
  const layers = await layersOf(t.path, [spec]);
  const warnings: string[] = [];
  const stats = await unpackLayers(root, layers, { warn: (m) => warnings.push(m) });
  assertEquals(stats.skippedDevices, 2);
  assertEquals(await entries(join(root, "dev")), []);
  assert(warnings.some((w) => w.includes("--allow-devices")), warnings.join("\n"));

  const root2 = join(t.path, "root2");
  await Deno.mkdir(root2);
  await unpackLayers(root2, layers, { allowDevices: true });
  const st = await Deno.lstat(join(root2, "dev/null"));
  assert(st.isCharDevice, "a character device");
  assertEquals(st.rdev, (1 << 8) | 3);
});

Deno.test("unpack stops a gzip bomb at the byte limit", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const bomb = join(t.path, "bomb.tar.gz");
  // 256 MiB of zeros in a tar, gzipped to a few hundred KiB.
  await sh("python3", [
    "-c",
    `import gzip, io, tarfile
with gzip.open("${bomb}", "wb") as g:
    with tarfile.open(fileobj=g, mode="w") as t:
        ti = tarfile.TarInfo("zeros"); ti.size = 256 << 20
        class Z(io.RawIOBase):
            def readable(self): return True
            def readinto(self, b): b[:] = bytes(len(b)); return len(b)
        t.addfile(ti, io.BufferedReader(Z()))`,
  ]);
  assert((await Deno.stat(bomb)).size < 2 << 20);
  const layers = await layersOf(t.path, [{
    raw: bomb,
    mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
  }]);
  const e = await assertRejects(
    () => unpackLayers(root, layers, { maxBytes: 16 << 20 }),
    ValidationError,
  );
  assert(e.message.includes("past the limit of 16.0 MiB"), e.message);
  const written = await Deno.stat(join(root, "zeros")).catch(() => null);
  assert((written?.size ?? 0) <= 16 << 20);
});

Deno.test("unpack refuses an unknown layer media type before writing anything", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const p = join(t.path, "x.tar");
  await writeTar(p, [{ name: "a", data: "a" }]);
  const layout = join(t.path, "layout");
  await writeLayout(layout, [{ path: p, mediaType: "application/vnd.example.weird" }], {});
  const e = await assertRejects(() => openLayout(layout, "1"), ValidationError);
  assert(e.message.includes('Unsupported layer media type "application/vnd.example.weird"'));
  const layer: LayerSource = {
    digest: `sha256:${"0".repeat(64)}`,
    mediaType: "application/x-rar",
    size: 1,
    open: () => Promise.reject(new Error("must not be opened")),
  };
  await assertRejects(() => unpackLayers(root, [layer]), ValidationError, "Unsupported layer");
  assertEquals(await entries(root), []);
});

Deno.test("unpack refuses a layer whose bytes do not match its digest", async () => {
  await using t = await tempDir();
  const { root } = await sandbox(t);
  const layers = await layersOf(t.path, [[{ name: "a", data: "a" }]]);
  const tampered = { ...layers[0], digest: `sha256:${"1".repeat(64)}` as const };
  await assertRejects(() => unpackLayers(root, [tampered]), DigestMismatchError);
});
