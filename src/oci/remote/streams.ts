/**
 * @module
 * Byte-stream helpers the registry client needs: a bounded whole-body read,
 * skipping and limiting a stream, and counting bytes for progress.
 */
import { concatBytes } from "../../util/bytes.ts";

/** Reads a response body whole, throwing RangeError past `max` bytes (reads at most max+1). */
export async function readBounded(res: Response, max: number): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array();
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const chunk of res.body) {
    n += chunk.byteLength;
    if (n > max) throw new RangeError(`response body is over ${max} bytes`);
    parts.push(chunk);
  }
  return concatBytes(parts);
}

/** Drops the first `n` bytes of a stream (a registry that ignored `Range`). */
export function skipBytes(n: number): TransformStream<Uint8Array, Uint8Array> {
  let left = n;
  return new TransformStream({
    transform(chunk, ctl) {
      if (left >= chunk.byteLength) {
        left -= chunk.byteLength;
        return;
      }
      ctl.enqueue(left > 0 ? chunk.subarray(left) : chunk);
      left = 0;
    },
  });
}

/** The first `n` bytes of a stream; cancels the rest. */
export function limitBytes(s: ReadableStream<Uint8Array>, n: number): ReadableStream<Uint8Array> {
  const reader = s.getReader();
  let left = n;
  return new ReadableStream({
    async pull(ctl) {
      if (left <= 0) {
        await reader.cancel();
        ctl.close();
        return;
      }
      const { done, value } = await reader.read();
      if (done) {
        ctl.close();
        return;
      }
      const part = value.byteLength > left ? value.subarray(0, left) : value;
      left -= part.byteLength;
      ctl.enqueue(part);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/** Reports the running byte count (from `base`) as the stream is read. */
export function counting(
  s: ReadableStream<Uint8Array>,
  base: number,
  onProgress?: (n: number) => void,
): ReadableStream<Uint8Array> {
  if (!onProgress) return s;
  let n = base;
  return s.pipeThrough(
    new TransformStream({
      transform(chunk, ctl) {
        n += chunk.byteLength;
        onProgress(n);
        ctl.enqueue(chunk);
      },
    }),
  );
}

/** The `rel="next"` target of a `Link` header (tag and referrers pagination). */
export function nextLink(res: Response, base: URL): URL | undefined {
  const link = res.headers.get("link");
  const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
  return m ? new URL(m[1], base) : undefined;
}
