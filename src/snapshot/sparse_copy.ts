/**
 * @module
 * Sparse file copies: guest memory on tmpfs is mostly holes (pages the guest
 * never touched), and a copy must keep them holes.
 */
import { dataRanges } from "../../ffi/mod.ts";

/**
 * Copies `size` bytes of `src` (from `offset`) to a new file `dst`, leaving
 * holes where `src` has holes (found with SEEK_DATA, never read) and where a
 * 1 MiB chunk is all zeros: on tmpfs a hole costs no memory, and most of a
 * guest's RAM is never touched.
 */
export async function sparseCopy(
  src: string,
  dst: string,
  size: number,
  options: { offset?: number; signal?: AbortSignal } = {},
) {
  const signal = options.signal;
  const base = options.offset ?? 0;
  using inp = await Deno.open(src, { read: true });
  using out = await Deno.open(dst, { write: true, createNew: true, mode: 0o600 });
  await out.truncate(size);
  const buf = new Uint8Array(1 << 20);
  const words = new BigUint64Array(buf.buffer);
  for (const [start, end] of dataRanges(src, base, size)) {
    await inp.seek(start, Deno.SeekMode.Start);
    let pos = start;
    while (pos < end) {
      signal?.throwIfAborted();
      const want = Math.min(buf.byteLength, end - pos);
      let got = 0;
      while (got < want) {
        const n = await inp.read(buf.subarray(got, want));
        if (n === null) {
          throw new Error(`"${src}" ended at ${pos + got} bytes, expected ${base + size}`);
        }
        got += n;
      }
      let zero = true;
      const w = want >>> 3;
      for (let i = 0; i < w; i++) {
        if (words[i] !== 0n) {
          zero = false;
          break;
        }
      }
      for (let i = w << 3; zero && i < want; i++) if (buf[i] !== 0) zero = false;
      if (!zero) {
        await out.seek(pos - base, Deno.SeekMode.Start);
        let done = 0;
        while (done < want) done += await out.write(buf.subarray(done, want));
      }
      pos += want;
    }
  }
}
