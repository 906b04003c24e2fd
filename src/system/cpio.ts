/**
 * @module
 * A reproducible newc ("070701") cpio writer for initramfs images: entries
 * sorted by path, mtime 0, owner 0:0, inode numbers assigned in order, so
 * the same inputs give the same bytes. The kernel unpacks newc only.
 */
import { concatBytes } from "../util/bytes.ts";

export type CpioEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Uint8Array; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "char"; path: string; major: number; minor: number; mode?: number };

const enc = new TextEncoder();

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}): string {
  return "070701" + [
    fields.ino,
    fields.mode,
    0, // uid
    0, // gid
    fields.nlink,
    0, // mtime
    fields.size,
    0, // devmajor
    0, // devminor
    fields.rdevMajor,
    fields.rdevMinor,
    fields.nameSize,
    0, // check
  ].map(hex8).join("");
}

/** Builds the archive. Parent directories must be listed; paths are relative ("bin/sh"). */
export function writeCpio(entries: CpioEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].path === sorted[i - 1].path) {
      throw new RangeError(`cpio entry "${sorted[i].path}" is listed twice`);
    }
  }
  const parts: Uint8Array[] = [];
  let total = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    total += b.byteLength;
    const p = pad4(total);
    if (p) {
      parts.push(new Uint8Array(p));
      total += p;
    }
  };
  const emit = (
    name: string,
    mode: number,
    data: Uint8Array,
    ino: number,
    nlink: number,
    rdev: [number, number] = [0, 0],
  ) => {
    const nameBytes = enc.encode(name + "\0");
    const h = header({
      ino,
      mode,
      nlink,
      size: data.byteLength,
      rdevMajor: rdev[0],
      rdevMinor: rdev[1],
      nameSize: nameBytes.byteLength,
    });
    // Header (110 bytes) + name are padded together to 4, then the data to 4.
    const hn = new Uint8Array(110 + nameBytes.byteLength);
    hn.set(enc.encode(h), 0);
    hn.set(nameBytes, 110);
    push(hn);
    if (data.byteLength) push(data);
  };
  let ino = 1;
  for (const e of sorted) {
    if (e.path.startsWith("/") || e.path === "" || e.path.split("/").includes("..")) {
      throw new RangeError(`cpio entry path "${e.path}" must be relative and inside the archive`);
    }
    switch (e.type) {
      case "dir":
        emit(e.path, 0o040000 | (e.mode ?? 0o755), new Uint8Array(), ino++, 2);
        break;
      case "file":
        emit(e.path, 0o100000 | (e.mode ?? 0o644), e.data, ino++, 1);
        break;
      case "symlink":
        emit(e.path, 0o120000 | 0o777, enc.encode(e.target), ino++, 1);
        break;
      case "char":
        emit(e.path, 0o020000 | (e.mode ?? 0o600), new Uint8Array(), ino++, 1, [e.major, e.minor]);
        break;
    }
  }
  emit("TRAILER!!!", 0, new Uint8Array(), 0, 1);
  return concatBytes(parts);
}
