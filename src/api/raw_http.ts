/**
 * @module
 * One raw HTTP/1.1 exchange over a UNIX socket, for what `fetch` will not
 * send as asked (a declared length it does not send, a chunked body over a
 * limit): the conformance kit's 413 cases.
 */

/** A response: status, content type and the parsed JSON body (undefined when not JSON). */
export interface Exchange {
  status: number;
  type: string | null;
  body: unknown;
}

/** One raw HTTP/1.1 exchange over the socket, for bodies fetch will not send as asked. */
export async function rawExchange(
  socket: string,
  head: string,
  body: Uint8Array | ReadableStream<Uint8Array>,
): Promise<Exchange> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    const enc = new TextEncoder();
    const writeAll = async (b: Uint8Array) => {
      let off = 0;
      while (off < b.byteLength) off += await conn.write(b.subarray(off));
    };
    // A server may answer (413) and close before taking the whole body: that is the point.
    const sending = (async () => {
      await writeAll(enc.encode(head));
      if (body instanceof Uint8Array) await writeAll(body);
      else for await (const c of body) await writeAll(c);
    })().catch(() => {});
    const buf: number[] = [];
    const chunk = new Uint8Array(65536);
    let headerEnd = -1;
    let needed = Infinity;
    while (true) {
      const n = await conn.read(chunk).catch(() => null);
      if (n === null) break;
      for (let i = 0; i < n; i++) buf.push(chunk[i]);
      if (headerEnd < 0) {
        const text = new TextDecoder().decode(new Uint8Array(buf));
        const at = text.indexOf("\r\n\r\n");
        if (at >= 0) {
          headerEnd = at + 4;
          const cl = /\r\ncontent-length:\s*(\d+)/i.exec(text.slice(0, at));
          if (cl) needed = headerEnd + Number(cl[1]);
        }
      }
      if (buf.length >= needed) break;
    }
    void sending;
    const text = new TextDecoder().decode(new Uint8Array(buf));
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1] ?? 0);
    const headers = text.slice(0, Math.max(0, headerEnd));
    const type = /\r\ncontent-type:\s*([^\r\n]+)/i.exec(headers)?.[1] ?? null;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text.slice(headerEnd));
    } catch {
      parsed = undefined;
    }
    return { status, type, body: parsed };
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
