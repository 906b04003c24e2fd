import assert from "node:assert/strict";
import { join } from "node:path";
import { Buffer } from "node:buffer";
import { compressFrame } from "lz4-napi";
import {
  decodeRamsnap,
  encodeRamsnap,
  lz4FrameBound,
  readRamsnapLayout,
} from "../../src/snapshot/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { listFiles, tempDir } from "../_helpers/cli.ts";
import { sha256Hex } from "../../src/manifest/mod.ts";

async function writeStream(path: string, s: ReadableStream<Uint8Array>): Promise<void> {
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  for await (const chunk of s) {
    let off = 0;
    while (off < chunk.length) off += await f.write(chunk.subarray(off));
  }
}

/** 9 MiB of memory: random, zero and patterned regions; 1 KiB of device state. */
async function makeSections(dir: string) {
  const mem = new Uint8Array(9 << 20);
  for (let i = 0; i < 1 << 20; i += 65536) crypto.getRandomValues(mem.subarray(i, i + 65536));
  for (let i = 5 << 20; i < mem.length; i++) mem[i] = i & 0xff;
  const dev = new TextEncoder().encode("QEVM device state ".repeat(60));
  await Deno.writeFile(join(dir, "mem"), mem);
  await Deno.writeFile(join(dir, "dev"), dev);
  return [
    { name: "memory", path: join(dir, "mem"), size: mem.length },
    { name: "device-state", path: join(dir, "dev"), size: dev.length },
  ];
}

Deno.test("a ramsnap round-trips its sections and keeps its metadata", async () => {
  await using tmp = await tempDir();
  const sections = await makeSections(tmp.path);
  const blob = join(tmp.path, "snap.lz4");
  await writeStream(
    blob,
    encodeRamsnap(sections, { metadata: { vmm: "qemu" }, chunkSize: 1 << 20 }),
  );
  const { header, index } = await readRamsnapLayout(blob);
  assert.equal(header.metadata.vmm, "qemu");
  assert.equal(index.frames.length, 10);
  assert.ok(index.frames.some((f) => f[5] === 1), "zero chunks are marked");
  const out = { memory: join(tmp.path, "mem.out"), "device-state": join(tmp.path, "dev.out") };
  await decodeRamsnap(blob, out, { limits: { memory: 9 << 20 } });
  assert.equal(
    sha256Hex(await Deno.readFile(out.memory)),
    sha256Hex(await Deno.readFile(sections[0].path)),
  );
  assert.equal(
    sha256Hex(await Deno.readFile(out["device-state"])),
    sha256Hex(await Deno.readFile(sections[1].path)),
  );
});

Deno.test("lz4 -d decodes a ramsnap to memory followed by device state", async () => {
  await using tmp = await tempDir();
  const sections = await makeSections(tmp.path);
  const blob = join(tmp.path, "snap.lz4");
  await writeStream(blob, encodeRamsnap(sections, { chunkSize: 1 << 20 }));
  const r = await new Deno.Command("lz4", {
    args: ["-d", "-c", blob],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  const mem = await Deno.readFile(sections[0].path);
  const dev = await Deno.readFile(sections[1].path);
  const expected = new Uint8Array(mem.length + dev.length);
  expected.set(mem);
  expected.set(dev, mem.length);
  assert.equal(sha256Hex(r.stdout), sha256Hex(expected));
});

Deno.test("a truncated ramsnap is refused and leaves no output", async () => {
  await using tmp = await tempDir();
  const sections = await makeSections(tmp.path);
  const blob = join(tmp.path, "snap.lz4");
  await writeStream(blob, encodeRamsnap(sections, { chunkSize: 1 << 20 }));
  const bytes = await Deno.readFile(blob);
  const outDir = join(tmp.path, "out");
  await Deno.mkdir(outDir);
  for (const cut of [bytes.length - 3, Math.floor(bytes.length / 2), 20]) {
    await Deno.writeFile(blob, bytes.subarray(0, cut));
    await assert.rejects(
      decodeRamsnap(blob, { memory: join(outDir, "m"), "device-state": join(outDir, "d") }),
      ValidationError,
    );
  }
  assert.deepEqual(await listFiles(outDir), []);
});

Deno.test("a ramsnap larger than the declared guest memory is refused before writing", async () => {
  await using tmp = await tempDir();
  const sections = await makeSections(tmp.path);
  const blob = join(tmp.path, "snap.lz4");
  await writeStream(blob, encodeRamsnap(sections));
  const out = join(tmp.path, "m");
  await assert.rejects(
    decodeRamsnap(blob, { memory: out, "device-state": join(tmp.path, "d") }, {
      limits: { memory: 8 << 20 },
    }),
    /section "memory" declares 9437184 bytes, over the limit of 8388608/,
  );
  assert.equal(await Deno.stat(out).catch(() => null), null);
});

/** Assembles a ramsnap by hand around given frames (for hostile inputs). */
function assemble(frames: Uint8Array[], lens: number[], chunkSize: number): Uint8Array {
  const enc = new TextEncoder();
  const skip = (magic: number, payload: Uint8Array) => {
    const b = new Uint8Array(8 + payload.length);
    new DataView(b.buffer).setUint32(0, magic, true);
    new DataView(b.buffer).setUint32(4, payload.length, true);
    b.set(payload, 8);
    return b;
  };
  const total = lens.reduce((a, b) => a + b, 0);
  const header = skip(
    0x184d2a50,
    enc.encode(JSON.stringify({
      format: "ovms.ramsnap",
      version: 1,
      chunkSize,
      sections: [{ name: "memory", size: total }],
      metadata: {},
    })),
  );
  let at = 0;
  let coff = header.length;
  const entries = frames.map((f, i) => {
    const e = [0, at, coff, f.length, lens[i], 0];
    at += lens[i];
    coff += f.length;
    return e;
  });
  const json = enc.encode(JSON.stringify({ frames: entries }));
  const payload = new Uint8Array(json.length + 8);
  payload.set(json);
  new DataView(payload.buffer).setUint32(json.length, json.length, true);
  new DataView(payload.buffer).setUint32(json.length + 4, 0x58495352, true);
  const parts = [header, ...frames, skip(0x184d2a5e, payload)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

for (const engine of ["liblz4", "lz4-napi"] as const) {
  Deno.test(`an lz4 bomb frame is refused by ${engine} from its block headers, before decompressing`, async () => {
    await using tmp = await tempDir();
    // 256 MiB of zeros in one frame (64 blocks of 4 MiB), claiming to be a 1 MiB chunk.
    const r = await new Deno.Command("sh", {
      args: ["-c", "head -c 268435456 /dev/zero | lz4 -B7 -c"],
      stdout: "piped",
    }).output();
    const bomb = r.stdout;
    assert.ok(lz4FrameBound(bomb) >= 256 << 20);
    const blob = join(tmp.path, "bomb.lz4");
    await Deno.writeFile(blob, assemble([bomb], [1 << 20], 1 << 20));
    const out = join(tmp.path, "m");
    await assert.rejects(
      decodeRamsnap(blob, { memory: out }, { engine }),
      /could expand to 268435456 bytes/,
    );
    assert.equal(await Deno.stat(out).catch(() => null), null);
  });

  Deno.test(`a frame that decodes to another length than indexed is refused by ${engine}`, async () => {
    await using tmp = await tempDir();
    const frame = new Uint8Array(await compressFrame(Buffer.alloc(1000, 7)));
    const blob = join(tmp.path, "lie.lz4");
    for (const claimed of [999, 1001]) {
      await Deno.writeFile(blob, assemble([frame], [claimed], 4096));
      await assert.rejects(
        decodeRamsnap(blob, { memory: join(tmp.path, "m") }, { engine }),
        /decoded to 1000 bytes, expected 99|decodes to more than 999 bytes|decoded to 1000 bytes, expected 1001/,
      );
    }
    // A corrupted block header is an error too, never garbage memory. (Corrupted
    // literals are caught by the blob digest, verified when the blob is stored.)
    const good = assemble([frame], [1000], 4096);
    const frameAt = good.indexOf(0x04, 8 + 100);
    new DataView(good.buffer).setUint32(frameAt + 7, 0x00ffffff, true);
    await Deno.writeFile(blob, good);
    await assert.rejects(
      decodeRamsnap(blob, { memory: join(tmp.path, "m") }, { engine }),
      ValidationError,
    );
    assert.equal(await Deno.stat(join(tmp.path, "m")).catch(() => null), null);
  });
}

Deno.test("holes in a sparse memory file become zero frames without being read, and decode as zeros", async () => {
  await using tmp = await tempDir();
  const mem = join(tmp.path, "sparse-mem");
  const MiB = 1 << 20;
  {
    using f = await Deno.open(mem, { write: true, create: true });
    await f.truncate(8 * MiB);
    await f.seek(3 * MiB + 123, Deno.SeekMode.Start);
    await f.write(new TextEncoder().encode("guest data in the middle of a hole"));
  }
  const blob = join(tmp.path, "sparse.lz4");
  await writeStream(
    blob,
    encodeRamsnap([{ name: "memory", path: mem, size: 8 * MiB }], { chunkSize: MiB }),
  );
  const { index } = await readRamsnapLayout(blob);
  assert.deepEqual(index.frames.map((f) => f[5]), [1, 1, 1, 0, 1, 1, 1, 1]);
  const out = join(tmp.path, "out");
  await decodeRamsnap(blob, { memory: out });
  assert.equal(sha256Hex(await Deno.readFile(out)), sha256Hex(await Deno.readFile(mem)));
  const r = await new Deno.Command("lz4", { args: ["-d", "-c", blob], stdout: "piped" }).output();
  assert.equal(sha256Hex(r.stdout), sha256Hex(await Deno.readFile(mem)));
});
