/**
 * The QEMU migration stream head (spec 8.6): a stream as QEMU 7.2 writes it
 * with `x-ignore-shared` is walked up to its first device section; a device
 * stream from `xen-save-devices-state` is spliced behind it; the recorded
 * address of a shared region is cleared; truncated or foreign streams are
 * refused. (Real streams: tests/snapshot/chain_test.ts.)
 */
import assert from "node:assert/strict";
import {
  clearSharedBlockAddrs,
  parseStreamHead,
  spliceDeviceState,
} from "../../src/vmm/qemu/migration_stream.ts";

class W {
  bytes: number[] = [];
  u8(v: number) {
    this.bytes.push(v & 0xff);
    return this;
  }
  be32(v: number) {
    for (let s = 24; s >= 0; s -= 8) this.u8(v >>> s);
    return this;
  }
  be64(v: bigint) {
    for (let s = 56n; s >= 0n; s -= 8n) this.u8(Number((v >> s) & 0xffn));
    return this;
  }
  str(s: string, lenBytes: 1 | 4 = 1) {
    const b = new TextEncoder().encode(s);
    if (lenBytes === 1) this.u8(b.length);
    else this.be32(b.length);
    b.forEach((x) => this.u8(x));
    return this;
  }
  raw(n: number, fill: number) {
    for (let i = 0; i < n; i++) this.u8(fill);
    return this;
  }
  done() {
    return new Uint8Array(this.bytes);
  }
}

const HEADER = (w: W) => w.be32(0x5145564d).be32(3);
const FULL_SECTION = (w: W, id: number, name: string, fill: number) =>
  w.u8(0x04).be32(id).str(name).be32(0).be32(1).raw(40, fill).u8(0x7e).be32(id);

/** A stream as `migrate` with x-ignore-shared writes it: config, RAM (one ROM page), devices. */
function migrateStream(): Uint8Array {
  const w = new W();
  HEADER(w);
  w.u8(0x07).str("pc-q35-7.2", 4);
  w.u8(0x05).str("configuration/capabilities").be32(1).be32(1).str("x-ignore-shared");
  // RAM setup: block list with addresses, then EOS.
  w.u8(0x01).be32(2).str("ram").be32(0).be32(4);
  w.be64((8192n + 4096n + 4096n) | 0x04n);
  w.str("ram0").be64(8192n).be64(0n);
  w.str("0000:00:03.0/shm-shm0").be64(4096n).be64(0xfea00000n);
  w.str("pc.rom").be64(4096n).be64(0xc0000n);
  w.be64(0x10n).u8(0x7e).be32(2);
  // One iteration: a page of pc.rom, then a zero page record with CONTINUE.
  w.u8(0x02).be32(2).be64(0x08n).str("pc.rom").raw(4096, 0xaa).be64(0x10n).u8(0x7e).be32(2);
  w.u8(0x03).be32(2).be64(0x20n | 0x02n).u8(0).be64(0x10n).u8(0x7e).be32(2);
  FULL_SECTION(w, 3, "timer", 1);
  FULL_SECTION(w, 4, "cpu", 2);
  w.u8(0x00);
  return w.done();
}

/** What xen-save-devices-state writes: header, device sections, EOF. */
function deviceStream(fill: number): Uint8Array {
  const w = new W();
  HEADER(w);
  FULL_SECTION(w, 3, "timer", fill);
  FULL_SECTION(w, 4, "cpu", fill);
  w.u8(0x00);
  return w.done();
}

Deno.test("a migration stream's head is walked to its first device section", () => {
  const s = migrateStream();
  const h = parseStreamHead(s);
  assert.equal(h.machine, "pc-q35-7.2");
  assert.deepEqual(h.capabilities, ["x-ignore-shared"]);
  assert.deepEqual(h.ramBlocks.map((b) => [b.idstr, b.usedLength, b.addr]), [
    ["ram0", 8192, 0n],
    ["0000:00:03.0/shm-shm0", 4096, 0xfea00000n],
    ["pc.rom", 4096, 0xc0000n],
  ]);
  assert.equal(s[h.end], 0x04, "the head ends at the first FULL section");
  const d = parseStreamHead(deviceStream(5));
  assert.equal(d.end, 8);
  assert.equal(d.machine, undefined);
});

Deno.test("a device stream is spliced behind the base stream's head", () => {
  const base = migrateStream();
  const devices = deviceStream(9);
  const out = spliceDeviceState(base, devices);
  const h = parseStreamHead(base);
  assert.deepEqual(out.subarray(0, h.end), base.subarray(0, h.end));
  assert.deepEqual(out.subarray(h.end, h.end + devices.byteLength - 8), devices.subarray(8));
  assert.equal(out[h.end + devices.byteLength - 9], 0x00, "EOF");
  assert.equal(out[h.end + devices.byteLength - 8], 0x06, "then a VM description");
  assert.deepEqual(parseStreamHead(out).ramBlocks, h.ramBlocks);
});

Deno.test("only the shared regions' recorded addresses are cleared", () => {
  const s = migrateStream();
  const changed = clearSharedBlockAddrs(s, (id) => id.endsWith("/shm-shm0"));
  assert.deepEqual(changed, ["0000:00:03.0/shm-shm0"]);
  assert.deepEqual(parseStreamHead(s).ramBlocks.map((b) => b.addr), [0n, 0n, 0xc0000n]);
});

Deno.test("truncated, foreign and RAM-carrying device streams are refused", () => {
  const s = migrateStream();
  assert.throws(() => parseStreamHead(s.subarray(0, 200)), /ends at byte 200/);
  assert.throws(() => parseStreamHead(new Uint8Array(16)), /QEVM magic/);
  assert.throws(() => spliceDeviceState(s, s), /carries a configuration or RAM/);
  const d = deviceStream(1);
  assert.throws(() => spliceDeviceState(s, d.subarray(0, d.byteLength - 1)), /EOF marker/);
});
