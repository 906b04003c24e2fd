/**
 * @module
 * Just enough of QEMU's migration stream format (QEMU 7.2,
 * `migration/savevm.c` and `migration/ram.c`) to splice two streams: the
 * header, the configuration section, and the RAM section's setup and page
 * records — all self-describing — up to the first device section. Device
 * sections (`QEMU_VM_SECTION_FULL`) carry no length and are never parsed.
 *
 * Why: QMP `xen-save-devices-state` writes a stream of device sections only
 * (no configuration, no RAM), which is what a snapshot of a restored VM
 * needs — its guest RAM is a private mapping that `x-ignore-shared` does not
 * skip. A restore needs the configuration section and the small RAM blocks
 * (firmware, option ROMs, ACPI tables: QEMU started with `-incoming` does not
 * load them itself) that the first snapshot's stream carries; so the chained
 * snapshot's device state is the base stream's head (header, configuration,
 * RAM) followed by the new device sections. The result is an ordinary
 * migration stream that `migrate-incoming` loads.
 */
import { ValidationError } from "../../errors.ts";

const FILE_MAGIC = 0x5145564d; // "QEVM"
const FILE_VERSION = 3;

const SECTION = {
  EOF: 0x00,
  START: 0x01,
  PART: 0x02,
  END: 0x03,
  FULL: 0x04,
  SUBSECTION: 0x05,
  VMDESCRIPTION: 0x06,
  CONFIGURATION: 0x07,
  FOOTER: 0x7e,
} as const;

const RAM_FLAG = {
  ZERO: 0x02,
  MEM_SIZE: 0x04,
  PAGE: 0x08,
  EOS: 0x10,
  CONTINUE: 0x20,
  XBZRLE: 0x40,
  HOOK: 0x80,
  COMPRESS_PAGE: 0x100,
} as const;

/** QEMU's TARGET_PAGE_SIZE on x86_64. */
const TARGET_PAGE = 4096;

/** One RAM block named in the stream's RAM setup record. */
export interface StreamRamBlock {
  idstr: string;
  usedLength: number;
  /**
   * The block's guest-physical address as the source saw it (written only
   * with `x-ignore-shared`), and where in the stream those 8 bytes are.
   */
  addr?: bigint;
  addrOffset?: number;
}

/** The layout of a migration stream's head (everything before the device sections). */
export interface StreamHead {
  /** The machine type named in the configuration section (`pc-q35-7.2`). */
  machine?: string;
  /** Capabilities the configuration section validates (`x-ignore-shared`). */
  capabilities: string[];
  ramBlocks: StreamRamBlock[];
  /** Offset of the first byte after the head: a device section, or the EOF marker. */
  end: number;
  /** Offset of the EOF marker (undefined when the stream holds no EOF: a truncated stream). */
  eof?: number;
  /** The trailing VMDESCRIPTION record (after EOF), when present. */
  vmdescription?: { offset: number; length: number };
}

class Reader {
  pos = 0;
  readonly #v: DataView;
  constructor(readonly buf: Uint8Array, readonly what: string) {
    this.#v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(n: number): void {
    if (this.pos + n > this.buf.byteLength) {
      throw bad(
        this.what,
        `it ends at byte ${this.buf.byteLength}, inside a record at ${this.pos}`,
      );
    }
  }
  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }
  be32(): number {
    this.need(4);
    const v = this.#v.getUint32(this.pos);
    this.pos += 4;
    return v;
  }
  be64(): bigint {
    this.need(8);
    const v = this.#v.getBigUint64(this.pos);
    this.pos += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  str(n: number): string {
    return new TextDecoder().decode(this.bytes(n));
  }
  peek(): number | undefined {
    return this.pos < this.buf.byteLength ? this.buf[this.pos] : undefined;
  }
}

function bad(what: string, why: string): ValidationError {
  return new ValidationError(`QEMU migration stream "${what}" is not usable: ${why}`, {
    hint: "the device state is corrupt or was written by another QEMU; snapshot again",
  });
}

/** Reads the 8-byte stream header. */
function header(r: Reader): void {
  if (r.be32() !== FILE_MAGIC) throw bad(r.what, "it does not start with the QEVM magic");
  const v = r.be32();
  if (v !== FILE_VERSION) throw bad(r.what, `it is stream version ${v}, not ${FILE_VERSION}`);
}

/** The configuration section's body (`vmstate_configuration`, savevm.c). */
function configuration(r: Reader, head: { machine?: string; capabilities: string[] }): void {
  const len = r.be32();
  if (len > 256) throw bad(r.what, `its machine name claims ${len} bytes`);
  head.machine = r.str(len);
  while (r.peek() === SECTION.SUBSECTION) {
    r.u8();
    const name = r.str(r.u8());
    r.be32(); // version
    if (name === "configuration/target-page-bits") {
      r.be32();
    } else if (name === "configuration/capabilities") {
      const n = r.be32();
      if (n > 64) throw bad(r.what, `it lists ${n} capabilities`);
      for (let i = 0; i < n; i++) head.capabilities.push(r.str(r.u8()));
    } else {
      throw bad(r.what, `its configuration has an unknown subsection "${name}"`);
    }
  }
}

/**
 * Reads RAM page records up to and including `RAM_SAVE_FLAG_EOS`. With
 * `setup`, the first record is the block list (`RAM_SAVE_FLAG_MEM_SIZE`).
 */
function ramRecords(r: Reader, head: StreamHead, ignoreShared: boolean): void {
  while (true) {
    const word = r.be64();
    const flags = Number(word & 0xfffn);
    if (flags & RAM_FLAG.MEM_SIZE) {
      const total = word & ~0xfffn;
      let sum = 0n;
      while (sum < total) {
        const idstr = r.str(r.u8());
        const usedLength = r.be64();
        const block: StreamRamBlock = { idstr, usedLength: Number(usedLength) };
        if (ignoreShared) {
          block.addrOffset = r.pos;
          block.addr = r.be64();
        }
        head.ramBlocks.push(block);
        sum += usedLength;
      }
      if (sum !== total) throw bad(r.what, "its RAM block list does not add up to its total");
      continue;
    }
    if (flags & RAM_FLAG.EOS) return;
    if (flags & (RAM_FLAG.XBZRLE | RAM_FLAG.HOOK | RAM_FLAG.COMPRESS_PAGE)) {
      throw bad(r.what, `it uses RAM flag 0x${flags.toString(16)} (xbzrle, rdma or compression)`);
    }
    if (!(flags & RAM_FLAG.CONTINUE)) r.str(r.u8());
    if (flags & RAM_FLAG.ZERO) r.u8();
    else if (flags & RAM_FLAG.PAGE) r.bytes(TARGET_PAGE);
    else throw bad(r.what, `it has a RAM record with flags 0x${flags.toString(16)}`);
  }
}

/**
 * Parses a migration stream up to its first device section. Accepts what
 * `migrate` (with or without `x-ignore-shared`) and `xen-save-devices-state`
 * write; refuses anything it cannot walk exactly.
 */
export function parseStreamHead(stream: Uint8Array, what = "device-state"): StreamHead {
  const r = new Reader(stream, what);
  header(r);
  const head: StreamHead = { capabilities: [], ramBlocks: [], end: 0 };
  const iterable = new Map<number, string>();
  while (true) {
    const at = r.pos;
    const type = r.peek();
    if (type === undefined) {
      head.end = at;
      return head;
    }
    if (type === SECTION.CONFIGURATION) {
      r.u8();
      configuration(r, head);
      continue;
    }
    if (type === SECTION.START) {
      r.u8();
      const id = r.be32();
      const idstr = r.str(r.u8());
      r.be32(); // instance
      r.be32(); // version
      if (idstr !== "ram") throw bad(what, `it has an iterable section "${idstr}" (not RAM)`);
      iterable.set(id, idstr);
      ramRecords(r, head, head.capabilities.includes("x-ignore-shared"));
      footer(r, id);
      continue;
    }
    if (type === SECTION.PART || type === SECTION.END) {
      r.u8();
      const id = r.be32();
      if (!iterable.has(id)) throw bad(what, `section ${id} continues a section never started`);
      ramRecords(r, head, false);
      footer(r, id);
      continue;
    }
    if (type === SECTION.FULL || type === SECTION.EOF) {
      head.end = at;
      if (type === SECTION.EOF) {
        head.eof = at;
        r.u8();
        if (r.peek() === SECTION.VMDESCRIPTION) {
          r.u8();
          const len = r.be32();
          r.bytes(len);
          head.vmdescription = { offset: at + 1, length: 5 + len };
        }
      }
      return head;
    }
    throw bad(what, `it has section type 0x${type.toString(16)} at byte ${at}`);
  }
}

function footer(r: Reader, id: number): void {
  if (r.peek() !== SECTION.FOOTER) return;
  r.u8();
  const got = r.be32();
  if (got !== id) throw bad(r.what, `section ${id} ends with the footer of section ${got}`);
}

/**
 * The device state of a snapshot of a restored VM: `base` (the stream its
 * RAM template came with) up to its device sections, then the device
 * sections of `devices` (an `xen-save-devices-state` stream), its EOF, and
 * an empty VM description (QEMU reads one after EOF and says so when it is
 * missing). Refuses a `devices` stream that has a configuration or RAM.
 */
export function spliceDeviceState(base: Uint8Array, devices: Uint8Array): Uint8Array {
  const b = parseStreamHead(base, "base device-state");
  const d = parseStreamHead(devices, "saved device state");
  if (d.machine !== undefined || d.ramBlocks.length || d.end !== 8) {
    throw bad("saved device state", "it carries a configuration or RAM section");
  }
  // QEMU writes the EOF marker last; the device sections are everything
  // between the 8-byte header and it.
  if (devices.byteLength < 9 || devices[devices.byteLength - 1] !== SECTION.EOF) {
    throw bad("saved device state", "it does not end with the EOF marker (truncated)");
  }
  // QEMU reads a VM description after EOF (for analysis tools, then
  // discarded) and complains when there is none.
  const json = new TextEncoder().encode(JSON.stringify({ page_size: TARGET_PAGE, devices: [] }));
  const desc = new Uint8Array(5 + json.byteLength);
  desc[0] = SECTION.VMDESCRIPTION;
  new DataView(desc.buffer).setUint32(1, json.byteLength);
  desc.set(json, 5);
  const out = new Uint8Array(b.end + (devices.byteLength - 8) + desc.byteLength);
  out.set(base.subarray(0, b.end), 0);
  out.set(devices.subarray(8), b.end);
  out.set(desc, b.end + devices.byteLength - 8);
  return out;
}

/**
 * Rewrites, in place, the recorded guest-physical address of every RAM block
 * whose idstr `match`es to 0: what a shared block that is not yet mapped has
 * on the destination (an ivshmem BAR before the PCI state is loaded). QEMU
 * 7.2 compares the two for ignored (shared) blocks while loading RAM
 * (`ram_load_precopy`, "Mismatched GPAs"), before any device section.
 * Returns the blocks changed.
 */
export function clearSharedBlockAddrs(
  stream: Uint8Array,
  match: (idstr: string) => boolean,
): string[] {
  const head = parseStreamHead(stream);
  const v = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const changed: string[] = [];
  for (const b of head.ramBlocks) {
    if (b.addrOffset === undefined || !match(b.idstr) || b.addr === 0n) continue;
    v.setBigUint64(b.addrOffset, 0n);
    changed.push(b.idstr);
  }
  return changed;
}
