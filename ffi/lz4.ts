/**
 * @module
 * liblz4's block decoder (`LZ4_decompress_safe`), called off the main thread
 * (`nonblocking`) so RAM-snapshot frames decode in parallel straight into a
 * mapped tmpfs file. Measured here: about 10× the throughput of lz4-napi's
 * frame decoder, which also has to allocate a buffer per frame. When liblz4
 * cannot be loaded, {@linkcode lz4Library} returns undefined and callers use
 * lz4-napi instead.
 */
import { OvmError } from "../src/errors.ts";

const SYMBOLS = {
  // int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity)
  LZ4_decompress_safe: {
    parameters: ["pointer", "pointer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // int LZ4_versionNumber(void)
  LZ4_versionNumber: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export class Lz4Error extends OvmError {}

export interface Lz4Library {
  version: string;
  /**
   * Decodes one LZ4 block from `src` into `dst`, writing at most `capacity`
   * bytes; returns the decoded length. A malformed block, or one that would
   * overflow `capacity`, is an {@linkcode Lz4Error}.
   */
  decompressBlock(
    src: Deno.PointerObject,
    srcLength: number,
    dst: Deno.PointerObject,
    capacity: number,
  ): Promise<number>;
}

let cached: Lz4Library | null | undefined;

export function lz4Library(): Lz4Library | undefined {
  if (cached !== undefined) return cached ?? undefined;
  try {
    const lib = Deno.dlopen("liblz4.so.1", SYMBOLS);
    const n = lib.symbols.LZ4_versionNumber();
    cached = {
      version: `${Math.floor(n / 10000)}.${Math.floor(n / 100) % 100}.${n % 100}`,
      async decompressBlock(src, srcLength, dst, capacity) {
        const r = await lib.symbols.LZ4_decompress_safe(src, dst, srcLength, capacity);
        if (r < 0) {
          throw new Lz4Error(
            `LZ4 block of ${srcLength} bytes is malformed or decodes to more than ${capacity} bytes`,
          );
        }
        return r;
      },
    };
  } catch {
    cached = null;
  }
  return cached ?? undefined;
}
