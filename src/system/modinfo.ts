/**
 * @module
 * Reads a kernel module's `.modinfo` ELF section (`name=`, `depends=`, ...)
 * so module dependencies can be resolved without `depmod`/`modinfo` on the
 * host: Debian's kernel packages ship no `modules.dep` (postinst makes it).
 */
import { ValidationError } from "../errors.ts";

/** The `key=value` pairs of a module's `.modinfo` section (a key may repeat). */
export function readModinfo(ko: Uint8Array, what = "kernel module"): Map<string, string[]> {
  const dv = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  const bad = (msg: string): never => {
    throw new ValidationError(`"${what}" is not a usable kernel module: ${msg}`);
  };
  if (ko.byteLength < 64 || dv.getUint32(0) !== 0x7f454c46) bad("no ELF header");
  if (ko[4] !== 2 || ko[5] !== 1) bad("not a 64-bit little-endian ELF file");
  const shoff = Number(dv.getBigUint64(0x28, true));
  const shentsize = dv.getUint16(0x3a, true);
  const shnum = dv.getUint16(0x3c, true);
  const shstrndx = dv.getUint16(0x3e, true);
  if (shoff + shnum * shentsize > ko.byteLength || shstrndx >= shnum) {
    bad("truncated section table");
  }
  const section = (i: number) => {
    const b = shoff + i * shentsize;
    return {
      name: dv.getUint32(b, true),
      offset: Number(dv.getBigUint64(b + 0x18, true)),
      size: Number(dv.getBigUint64(b + 0x20, true)),
    };
  };
  const strtab = section(shstrndx);
  const dec = new TextDecoder();
  const cstr = (off: number) => {
    let end = off;
    while (end < ko.byteLength && ko[end] !== 0) end++;
    return dec.decode(ko.subarray(off, end));
  };
  const info = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstr(strtab.offset + s.name) !== ".modinfo") continue;
    if (s.offset + s.size > ko.byteLength) bad(".modinfo runs past the end of the file");
    for (const kv of dec.decode(ko.subarray(s.offset, s.offset + s.size)).split("\0")) {
      const eq = kv.indexOf("=");
      if (eq <= 0) continue;
      const k = kv.slice(0, eq);
      info.set(k, [...(info.get(k) ?? []), kv.slice(eq + 1)]);
    }
    return info;
  }
  return bad("no .modinfo section");
}

/** Module names compare with `-` and `_` folded, as the kernel does. */
export function normalizeModuleName(name: string): string {
  return name.replaceAll("-", "_");
}

/** The module name of a path such as `kernel/fs/erofs/erofs.ko.xz`. */
export function moduleNameOfPath(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return normalizeModuleName(base.replace(/\.ko(\.xz|\.zst|\.gz)?$/, ""));
}
