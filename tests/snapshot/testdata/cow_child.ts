/**
 * Maps a file privately (copy-on-write), reads every page, writes a byte
 * pattern into the pages named on the command line, prints "ready" and
 * waits to be killed: the process the private-pages test inspects.
 * Usage: cow_child.ts FILE SIZE PAGE...
 */
import {
  closeFd,
  MAP_PRIVATE,
  mmap,
  O_CLOEXEC,
  O_RDWR,
  openFd,
  PROT_READ,
  PROT_WRITE,
} from "../../../ffi/mod.ts";

const [file, size, ...pages] = Deno.args;
const length = Number(size);
const fd = openFd(file, O_RDWR | O_CLOEXEC);
const m = mmap(fd, length, { prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE });
closeFd(fd);
const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(m.pointer!, length));
let sum = 0;
for (let i = 0; i < length; i += 4096) sum += bytes[i]; // read: file pages, not copies
for (const p of pages) bytes.fill((Number(p) % 250) + 1, Number(p) * 4096, (Number(p) + 1) * 4096);
console.log(`ready ${sum}`);
setInterval(() => {}, 1 << 30); // live until killed
