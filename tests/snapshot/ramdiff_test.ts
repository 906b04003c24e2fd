/**
 * RAM diff layers and chains of them (spec 8.6), without a VM: the codec
 * round-trips and refuses what it cannot apply; a chain builds the memory a
 * restore maps, from the base or from a built prefix; the private pages of a
 * real process's copy-on-write mapping are found through procfs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  applyRamDiff,
  buildRamChain,
  changedRanges,
  checkRamChain,
  copyRanges,
  encodeRamDiff,
  encodeRamsnap,
  fileMappings,
  RAMDIFF_FORMAT,
  readRamDiff,
} from "../../src/snapshot/mod.ts";
import { digestFile, sha256Hex } from "../../src/manifest/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { tempDir } from "../_helpers/cli.ts";

const MEM = 8 << 20;
const PAGE = 4096;

async function writeStream(path: string, s: ReadableStream<Uint8Array>): Promise<string> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  for await (const chunk of s) {
    let off = 0;
    while (off < chunk.length) off += await f.write(chunk.subarray(off));
  }
  return (await digestFile(path)).digest;
}

/** A base ramsnap of MEM bytes (a pattern) and a device state; returns its file and digest. */
async function makeBase(dir: string) {
  const mem = new Uint8Array(MEM);
  for (let i = 0; i < MEM; i += PAGE) mem.fill((i / PAGE) % 200, i, i + 64);
  await Deno.writeFile(join(dir, "base.mem"), mem);
  await Deno.writeFile(join(dir, "base.dev"), new TextEncoder().encode("device state 0"));
  const path = join(dir, "base.lz4");
  const digest = await writeStream(
    path,
    encodeRamsnap([
      { name: "memory", path: join(dir, "base.mem"), size: MEM },
      { name: "device-state", path: join(dir, "base.dev"), size: 14 },
    ], { chunkSize: 1 << 20, metadata: { restore: { machine: "q35" } } }),
  );
  return { path, digest, mem };
}

/** A diff on `base` writing byte `fill` into `ranges`; returns file, digest and the pages. */
async function makeDiff(
  dir: string,
  name: string,
  base: string,
  ranges: [number, number][],
  fill: number,
  options: { memoryBytes?: number; machine?: string } = {},
) {
  const total = ranges.reduce((n, r) => n + r[1], 0);
  await Deno.writeFile(join(dir, `${name}.pages`), new Uint8Array(total).fill(fill));
  await Deno.writeFile(join(dir, `${name}.dev`), new TextEncoder().encode(`device state ${name}`));
  const path = join(dir, `${name}.lz4`);
  const digest = await writeStream(
    path,
    await encodeRamDiff({
      ranges,
      pages: join(dir, `${name}.pages`),
      deviceState: join(dir, `${name}.dev`),
      work: dir,
    }, {
      base,
      memoryBytes: options.memoryBytes ?? MEM,
      chunkSize: 1 << 20,
      metadata: { restore: { machine: options.machine ?? "q35" } },
    }),
  );
  return { path, digest };
}

Deno.test("a RAM diff layer round-trips its ranges, pages and device state", async () => {
  await using tmp = await tempDir();
  const base = await makeBase(tmp.path);
  const ranges: [number, number][] = [[0, PAGE], [5 * PAGE, 3 * PAGE], [MEM - PAGE, PAGE]];
  const d = await makeDiff(tmp.path, "d1", base.digest, ranges, 0xab);
  const layout = await readRamDiff(d.path, { memoryBytes: MEM, base: base.digest });
  assert.deepEqual(layout.ranges, ranges);
  assert.equal(layout.pageBytes, 5 * PAGE);
  assert.equal(layout.header.format, RAMDIFF_FORMAT);
  assert.equal(layout.header.base, base.digest);
  const memory = join(tmp.path, "mem");
  await Deno.writeFile(memory, base.mem);
  const dev = join(tmp.path, "dev");
  await applyRamDiff(d.path, layout, { memory, deviceState: dev, work: tmp.path });
  const expected = base.mem.slice();
  for (const [o, l] of ranges) expected.fill(0xab, o, o + l);
  assert.equal(sha256Hex(await Deno.readFile(memory)), sha256Hex(expected));
  assert.equal(await Deno.readTextFile(dev), "device state d1");
});

Deno.test("lz4 -d decodes a RAM diff layer to its range list, pages and device state", async () => {
  await using tmp = await tempDir();
  const base = await makeBase(tmp.path);
  const d = await makeDiff(tmp.path, "d1", base.digest, [[PAGE, PAGE]], 7);
  const r = await new Deno.Command("lz4", { args: ["-d", "-c", d.path], stdout: "piped" })
    .output();
  assert.equal(r.code, 0);
  assert.equal(r.stdout.byteLength, 16 + PAGE + "device state d1".length);
  assert.equal(r.stdout[16], 7);
});

Deno.test("a RAM diff layer that cannot be applied is refused before anything is written", async () => {
  await using tmp = await tempDir();
  const base = await makeBase(tmp.path);
  const good = await makeDiff(tmp.path, "good", base.digest, [[0, PAGE]], 1);
  const refuse = async (path: string, expect: RegExp, memoryBytes = MEM) => {
    await assert.rejects(readRamDiff(path, { memoryBytes, base: base.digest }), (e: Error) => {
      assert.ok(e instanceof ValidationError, String(e));
      assert.match(e.message, expect);
      return true;
    });
  };
  // Truncated: the trailer with the frame index is gone.
  const bytes = await Deno.readFile(good.path);
  await Deno.writeFile(join(tmp.path, "cut"), bytes.subarray(0, bytes.byteLength - 10));
  await refuse(join(tmp.path, "cut"), /truncated/);
  // On another base.
  await assert.rejects(
    readRamDiff(good.path, { memoryBytes: MEM, base: "sha256:" + "0".repeat(64) }),
    /a diff on sha256:[0-9a-f]{64}, but the layer below it is sha256:0000/,
  );
  // For another memory size.
  await refuse(good.path, /guest of 8388608 bytes of memory, the snapshot has 4194304/, 4 << 20);
  // A full snapshot where a diff belongs.
  await refuse(base.path, /a full RAM snapshot, not a diff layer/);
  // Ranges out of bounds, overlapping, misaligned; pages not matching the ranges.
  const raw = async (name: string, pairs: number[], pageBytes: number, memoryBytes = MEM) => {
    const bin = new Uint8Array(pairs.length * 8);
    const v = new DataView(bin.buffer);
    pairs.forEach((x, i) => v.setBigUint64(i * 8, BigInt(x), true));
    await Deno.writeFile(join(tmp.path, `${name}.r`), bin);
    await Deno.writeFile(join(tmp.path, `${name}.p`), new Uint8Array(pageBytes).fill(3));
    await Deno.writeFile(join(tmp.path, `${name}.d`), new Uint8Array(4));
    const path = join(tmp.path, `${name}.lz4`);
    await writeStream(
      path,
      encodeRamsnap([
        { name: "ranges", path: join(tmp.path, `${name}.r`), size: bin.byteLength },
        { name: "pages", path: join(tmp.path, `${name}.p`), size: pageBytes },
        { name: "device-state", path: join(tmp.path, `${name}.d`), size: 4 },
      ], { diff: { base: base.digest, memoryBytes, pageSize: PAGE } }),
    );
    return path;
  };
  await refuse(await raw("oob", [MEM - PAGE, 2 * PAGE], 2 * PAGE), /outside the 8388608-byte/);
  await refuse(await raw("overlap", [0, 2 * PAGE, PAGE, PAGE], 3 * PAGE), /overlaps/);
  await refuse(await raw("unaligned", [100, PAGE], PAGE), /not aligned/);
  await refuse(
    await raw("short", [0, 2 * PAGE], PAGE),
    /cover 8192 bytes, its pages section holds 4096/,
  );
  await refuse(await raw("oversized", [0, PAGE], MEM + PAGE), /over the guest memory/);
});

Deno.test("a chain builds from its base or from a built prefix, and the same bytes come out", async () => {
  await using tmp = await tempDir();
  const base = await makeBase(tmp.path);
  const d1 = await makeDiff(tmp.path, "d1", base.digest, [[0, 4 * PAGE], [100 * PAGE, PAGE]], 0x11);
  const d2 = await makeDiff(tmp.path, "d2", d1.digest, [[2 * PAGE, 4 * PAGE]], 0x22);
  const layers = [base, d1, d2].map((l) => ({ digest: l.digest, path: l.path }));
  const chain = await checkRamChain(layers, {
    memoryBytes: MEM,
    machine: "q35",
    deviceStateLimit: 1 << 20,
  });
  const expected = base.mem.slice();
  expected.fill(0x11, 0, 4 * PAGE);
  expected.fill(0x11, 100 * PAGE, 101 * PAGE);
  expected.fill(0x22, 2 * PAGE, 6 * PAGE);
  const full = {
    memory: join(tmp.path, "full.mem"),
    deviceState: join(tmp.path, "full.dev"),
    work: tmp.path,
  };
  await buildRamChain(chain, full, { deviceStateLimit: 1 << 20 });
  assert.equal(sha256Hex(await Deno.readFile(full.memory)), sha256Hex(expected));
  assert.equal(await Deno.readTextFile(full.deviceState), "device state d2");

  // From the template of the first two layers.
  const two = await checkRamChain(layers.slice(0, 2), {
    memoryBytes: MEM,
    deviceStateLimit: 1 << 20,
  });
  const prefix = {
    memory: join(tmp.path, "p.mem"),
    deviceState: join(tmp.path, "p.dev"),
    work: tmp.path,
  };
  await buildRamChain(two, prefix, { deviceStateLimit: 1 << 20 });
  const again = {
    memory: join(tmp.path, "a.mem"),
    deviceState: join(tmp.path, "a.dev"),
    work: tmp.path,
  };
  await buildRamChain(chain, again, { deviceStateLimit: 1 << 20, from: { layers: 2, ...prefix } });
  assert.equal(sha256Hex(await Deno.readFile(again.memory)), sha256Hex(expected));
});

Deno.test("a chain with a loop, a diff on another base or another machine is refused, naming the layer", async () => {
  await using tmp = await tempDir();
  const base = await makeBase(tmp.path);
  const d1 = await makeDiff(tmp.path, "d1", base.digest, [[0, PAGE]], 1);
  const other = await makeDiff(tmp.path, "other", "sha256:" + "1".repeat(64), [[0, PAGE]], 2);
  const pc = await makeDiff(tmp.path, "pc", base.digest, [[0, PAGE]], 3, { machine: "pc" });
  const L = (...xs: { digest: string; path: string }[]) =>
    xs.map(({ digest, path }) => ({ digest, path }));
  const expect = { memoryBytes: MEM, machine: "q35", deviceStateLimit: 1 << 20 };
  await assert.rejects(checkRamChain(L(base, d1, d1), expect), /loop: layer 3 .* is also layer 2/);
  await assert.rejects(
    checkRamChain(L(base, other), expect),
    /RAM layer 2 of 2 .*a diff on sha256:1111/,
  );
  await assert.rejects(checkRamChain(L(base, pc), expect), /RAM layer 2 of 2 .*machine type "pc"/);
  await assert.rejects(
    checkRamChain(L(d1), expect),
    /RAM layer 1 of 1 .*not a full snapshot|RAM layer 1 of 1 .*a RAM diff layer/,
  );
  await assert.rejects(
    checkRamChain([{ digest: d1.digest, path: join(tmp.path, "gone") }], expect),
    /RAM layer 1 of 1 .* is not in the store/,
  );
});

Deno.test("the pages a process changed in a private file mapping are found and read back", async () => {
  await using tmp = await tempDir();
  const file = join(tmp.path, "template");
  const size = 64 * PAGE;
  await Deno.writeFile(file, new Uint8Array(size).fill(9));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./testdata/cow_child.ts", import.meta.url).pathname,
      file,
      String(size),
      "3",
      "4",
      "10",
      "63",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /ready/);
    reader.releaseLock();
    const maps = await fileMappings(child.pid, file);
    assert.equal(maps.length, 1);
    assert.ok(maps[0].private);
    const ranges = await changedRanges(child.pid, maps, size);
    assert.deepEqual(ranges, [[3 * PAGE, 2 * PAGE], [10 * PAGE, PAGE], [63 * PAGE, PAGE]]);
    const out = join(tmp.path, "pages");
    await copyRanges(child.pid, maps, ranges, out);
    const got = await Deno.readFile(out);
    assert.equal(got.byteLength, 4 * PAGE);
    assert.deepEqual([got[0], got[PAGE], got[2 * PAGE], got[3 * PAGE]], [4, 5, 11, 64]);
    // The file itself is untouched.
    assert.ok((await Deno.readFile(file)).every((b) => b === 9));
  } finally {
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
  }
});
