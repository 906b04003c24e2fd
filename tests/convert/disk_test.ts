/**
 * Reproducible disks from a directory tree: the same tree, built at
 * different times (so different ctimes on the host), gives the same bytes.
 */
import nodeAssert from "node:assert/strict";
import { join } from "node:path";
import { buildErofs, buildExt4, derivedUuid, measureTree } from "../../src/convert/mod.ts";
import { digestFile } from "../../src/manifest/mod.ts";
import { tempDir } from "../_helpers/cli.ts";
import { sh } from "../_helpers/convert.ts";

/** A tree of `n` small files in a few directories, all with fixed mtimes. */
async function makeTree(root: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const dir = join(root, `d${i % 17}`);
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(join(dir, `f${i}`), `file ${i}\n`.repeat(i % 50));
    await Deno.utime(join(dir, `f${i}`), 1000, 1000);
  }
  for (let i = 0; i < 17; i++) await Deno.utime(join(root, `d${i}`), 1000, 1000);
  await Deno.utime(root, 1000, 1000);
}

Deno.test("ext4 and erofs images of a 4000-file tree are byte-identical when rebuilt", async () => {
  await using t = await tempDir();
  const root = join(t.path, "root");
  await makeTree(root, 4000);
  const size = await measureTree(root);
  nodeAssert.equal(size.files, 4000);
  const opts = { sizeBuffer: 8 << 20, seed: "sha256:test", epoch: 1700000000 };
  const a = join(t.path, "a.raw");
  await buildExt4(root, a, opts);
  // Touch every inode's ctime on the host (chmod), then build again.
  await new Promise((r) => setTimeout(r, 1100));
  await sh("chmod", ["-R", "u+w", root]);
  const b = join(t.path, "b.raw");
  await buildExt4(root, b, opts);
  nodeAssert.equal((await digestFile(a)).digest, (await digestFile(b)).digest);
  const stat = await sh("debugfs", ["-R", "stat /d3/f3", a]);
  nodeAssert.match(stat, /ctime: 0x6553f100/);
  nodeAssert.match(stat, /mtime: 0x000003e8/);
  const uuid = await sh("blkid", ["-o", "value", "-s", "UUID", a]);
  nodeAssert.equal(uuid.trim(), derivedUuid("ovms-convert:ext4:uuid:sha256:test"));
  await sh("e2fsck", ["-fn", a]);

  const e1 = join(t.path, "e1.raw");
  const e2 = join(t.path, "e2.raw");
  await buildErofs(root, e1, opts);
  await buildErofs(root, e2, opts);
  nodeAssert.equal((await digestFile(e1)).digest, (await digestFile(e2)).digest);
});
