/**
 * @module
 * The API's log stream (`GET /logs/{id}`): the console log as NDJSON
 * records, one per line with its byte offset, followed while the instance is
 * active when asked; it ends when the server shuts down or the client leaves.
 */
import { followConsole, getInstance, InstanceStore, isActive } from "../runtime/mod.ts";
import type { LogRecord } from "./schemas.ts";

/** The NDJSON log stream of instance `a.id` from byte `a.offset`. */
export function logStream(
  home: string,
  a: { id: string; follow: boolean; offset: number; signal?: AbortSignal; closing: AbortSignal },
): ReadableStream<Uint8Array> {
  const path = new InstanceStore(home).paths(a.id).consoleLog;
  const closing = a.closing;
  const stop = new AbortController();
  const abort = () => stop.abort();
  closing.addEventListener("abort", abort, { once: true });
  a.signal?.addEventListener("abort", abort, { once: true });
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  let pending = new Uint8Array(0);
  let lineStart = a.offset;
  return new ReadableStream<Uint8Array>({
    async start(ctrl) {
      const emit = (rec: LogRecord) => {
        try {
          ctrl.enqueue(enc.encode(JSON.stringify(rec) + "\n"));
        } catch {
          stop.abort();
        }
      };
      const flushLines = (final: boolean) => {
        let nl: number;
        while ((nl = pending.indexOf(0x0a)) >= 0) {
          const text = dec.decode(pending.subarray(0, nl)).replace(/\r$/, "");
          emit({ offset: lineStart, line: text });
          lineStart += nl + 1;
          pending = pending.slice(nl + 1);
        }
        if (final && pending.byteLength) {
          emit({ offset: lineStart, line: dec.decode(pending).replace(/\r$/, "") });
          lineStart += pending.byteLength;
          pending = new Uint8Array(0);
        }
      };
      let lastCheck = 0;
      let active = true;
      try {
        await followConsole(path, (chunk) => {
          const next = new Uint8Array(pending.byteLength + chunk.byteLength);
          next.set(pending);
          next.set(chunk, pending.byteLength);
          pending = next;
          flushLines(false);
        }, {
          offset: a.offset,
          signal: stop.signal,
          until: async () => {
            if (!a.follow) return true;
            if (Date.now() - lastCheck > 250) {
              lastCheck = Date.now();
              active = await getInstance(home, a.id).then(isActive, () => false);
            }
            return !active;
          },
        });
        flushLines(true);
        ctrl.close();
      } catch (e) {
        try {
          ctrl.error(e);
        } catch { /* already cancelled */ }
      } finally {
        closing.removeEventListener("abort", abort);
        a.signal?.removeEventListener("abort", abort);
      }
    },
    cancel() {
      stop.abort();
    },
  });
}
