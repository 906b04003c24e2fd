/**
 * @module
 * ttrpc (containerd's lightweight RPC over a UNIX socket), after
 * spec/vendor/containerd/ttrpc/PROTOCOL.md: 10-byte frames (data length and
 * stream id big-endian uint32, a type byte, a flags byte), data at most
 * 4 MiB, client streams odd; a unary call is one Request frame carrying a
 * `ttrpc.Request` and one Response frame carrying a `ttrpc.Response` whose
 * `status` is a gRPC status. {@linkcode serveTtrpc} serves handlers (each
 * call concurrently, replies written in whole frames), {@linkcode TtrpcClient}
 * calls a server (the shim publishes events to containerd this way).
 */
import { decodeMessage, encodeMessage } from "./proto/mod.ts";
import { OvmError } from "../errors.ts";

export const HEADER_LENGTH = 10;
/** Frames with more data than this are rejected (PROTOCOL.md: 4 MB). */
export const MAX_DATA_LENGTH = 4 << 20;

export const MessageType = { request: 0x01, response: 0x02, data: 0x03 } as const;
export const Flags = { remoteClosed: 0x01, remoteOpen: 0x02, noData: 0x04 } as const;

/** gRPC status codes, which ttrpc carries and containerd maps to its errdefs. */
export const Code = {
  ok: 0,
  cancelled: 1,
  unknown: 2,
  invalidArgument: 3,
  deadlineExceeded: 4,
  notFound: 5,
  alreadyExists: 6,
  failedPrecondition: 9,
  unimplemented: 12,
  internal: 13,
  unavailable: 14,
} as const;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  data: Uint8Array;
}

/** A ttrpc call failed: the gRPC status the peer sent (or we send). */
export class TtrpcError extends OvmError {
  readonly status: number;
  constructor(status: number, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(message, options);
    this.status = status;
  }
}

/** A peer broke the framing rules; the connection cannot continue. */
export class FrameError extends OvmError {}

export function encodeFrame(frame: Frame): Uint8Array {
  const { streamId, type, flags, data } = frame;
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > 0xffffffff) {
    throw new FrameError(`Invalid ttrpc stream id ${streamId}: it must be a uint32`);
  }
  if (data.byteLength > MAX_DATA_LENGTH) {
    throw new FrameError(
      `ttrpc message of ${data.byteLength} bytes exceeds the ${MAX_DATA_LENGTH}-byte limit`,
    );
  }
  const out = new Uint8Array(HEADER_LENGTH + data.byteLength);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.byteLength);
  v.setUint32(4, streamId);
  v.setUint8(8, type);
  v.setUint8(9, flags);
  out.set(data, HEADER_LENGTH);
  return out;
}

/** Splits a byte stream into frames; keeps partial frames until the rest arrives. */
export class FrameDecoder {
  #buf = new Uint8Array(0);

  push(chunk: Uint8Array): Frame[] {
    const joined = new Uint8Array(this.#buf.byteLength + chunk.byteLength);
    joined.set(this.#buf);
    joined.set(chunk, this.#buf.byteLength);
    const frames: Frame[] = [];
    let off = 0;
    while (joined.byteLength - off >= HEADER_LENGTH) {
      const v = new DataView(joined.buffer, joined.byteOffset + off);
      const length = v.getUint32(0);
      if (length > MAX_DATA_LENGTH) {
        throw new FrameError(
          `ttrpc frame announces ${length} bytes of data, over the ${MAX_DATA_LENGTH}-byte limit`,
        );
      }
      if (joined.byteLength - off < HEADER_LENGTH + length) break;
      frames.push({
        streamId: v.getUint32(4),
        type: v.getUint8(8),
        flags: v.getUint8(9),
        data: joined.slice(off + HEADER_LENGTH, off + HEADER_LENGTH + length),
      });
      off += HEADER_LENGTH + length;
    }
    this.#buf = joined.slice(off);
    return frames;
  }

  /** Bytes of an incomplete frame still buffered. */
  get pending(): number {
    return this.#buf.byteLength;
  }
}

async function* readFrames(conn: Deno.Conn): AsyncGenerator<Frame> {
  const decoder = new FrameDecoder();
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) {
      if (decoder.pending) throw new FrameError("ttrpc connection closed inside a frame");
      return;
    }
    for (const f of decoder.push(buf.subarray(0, n))) yield f;
  }
}

/** Writes whole frames one after another (concurrent replies never interleave). */
class FrameWriter {
  #conn: Deno.Conn;
  #tail: Promise<void> = Promise.resolve();
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }
  write(frame: Frame): Promise<void> {
    const bytes = encodeFrame(frame);
    const next = this.#tail.then(async () => {
      let off = 0;
      while (off < bytes.byteLength) off += await this.#conn.write(bytes.subarray(off));
    });
    this.#tail = next.catch(() => {});
    return next;
  }
}

export interface CallContext {
  service: string;
  method: string;
  /** From the request's `timeout_nano` (0: none). */
  timeoutMs: number;
  metadata: Record<string, string>;
}

/** Serves one method: request payload in, response payload out (or throws a {@linkcode TtrpcError}). */
export type Handler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

export interface ServeOptions {
  /** Called with errors of a connection that had to be dropped (bad framing). */
  onError?: (err: unknown) => void;
  signal?: AbortSignal;
}

/** The ttrpc.Response frame data for a result or an error. */
export function responseData(result: { payload: Uint8Array } | { error: unknown }): Uint8Array {
  if ("payload" in result) return encodeMessage("ttrpc.Response", { payload: result.payload });
  const e = result.error;
  const code = e instanceof TtrpcError ? e.status : Code.unknown;
  const message = e instanceof OvmError
    ? (e.hint ? `${e.message} (${e.hint})` : e.message)
    : String((e as Error)?.message ?? e);
  return encodeMessage("ttrpc.Response", { status: { code, message } });
}

/** Handles one connection until the peer closes it. */
export async function serveConn(
  conn: Deno.Conn,
  handlers: Map<string, Handler>,
  options: ServeOptions = {},
): Promise<void> {
  const writer = new FrameWriter(conn);
  const inflight = new Set<Promise<void>>();
  const reply = (streamId: number, data: Uint8Array) =>
    writer.write({ streamId, type: MessageType.response, flags: 0, data }).catch(() => {});
  try {
    for await (const frame of readFrames(conn)) {
      if (frame.type !== MessageType.request) {
        // Data frames belong to streams; every method here is unary.
        if (frame.type === MessageType.data) {
          await reply(
            frame.streamId,
            responseData({
              error: new TtrpcError(
                Code.unimplemented,
                "streaming is not supported by this server",
              ),
            }),
          );
        }
        continue;
      }
      if (frame.streamId % 2 === 0) {
        throw new FrameError(`ttrpc client used the even stream id ${frame.streamId}`);
      }
      const p = (async () => {
        let req;
        try {
          req = decodeMessage("ttrpc.Request", frame.data);
        } catch (e) {
          await reply(
            frame.streamId,
            responseData({ error: new TtrpcError(Code.invalidArgument, String(e)) }),
          );
          return;
        }
        const handler = handlers.get(`${req.service}/${req.method}`);
        let data: Uint8Array;
        if (!handler) {
          data = responseData({
            error: new TtrpcError(
              Code.unimplemented,
              `${req.service}/${req.method} is not implemented`,
            ),
          });
        } else {
          try {
            const payload = await handler(req.payload, {
              service: req.service,
              method: req.method,
              timeoutMs: Math.round(Number(req.timeout_nano) / 1e6),
              metadata: Object.fromEntries(
                (req.metadata as { key: string; value: string }[]).map((kv) => [kv.key, kv.value]),
              ),
            });
            data = responseData({ payload });
          } catch (e) {
            data = responseData({ error: e });
          }
        }
        await reply(frame.streamId, data);
      })();
      inflight.add(p);
      p.finally(() => inflight.delete(p));
    }
  } catch (e) {
    options.onError?.(e);
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** Accepts connections on `listener` and serves each until `signal` aborts or the listener closes. */
export async function serveTtrpc(
  listener: Deno.Listener,
  handlers: Map<string, Handler>,
  options: ServeOptions = {},
): Promise<void> {
  const conns = new Set<Deno.Conn>();
  const onAbort = () => {
    try {
      listener.close();
    } catch { /* closed */ }
    for (const c of conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      conns.add(conn);
      serveConn(conn, handlers, options).finally(() => conns.delete(conn));
    }
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/** A ttrpc client over one UNIX socket connection; calls may run concurrently. */
export class TtrpcClient implements Disposable {
  readonly #conn: Deno.Conn;
  readonly #writer: FrameWriter;
  #nextStream = 1;
  readonly #pending = new Map<
    number,
    { resolve: (f: Frame) => void; reject: (e: unknown) => void }
  >();
  #closed?: unknown;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.#writer = new FrameWriter(conn);
    this.#readLoop();
  }

  /** Connects to `address` (`unix:///path` or a bare path). */
  static async connect(address: string): Promise<TtrpcClient> {
    const path = address.replace(/^unix:\/\//, "");
    try {
      return new TtrpcClient(await Deno.connect({ transport: "unix", path }));
    } catch (e) {
      throw new TtrpcError(Code.unavailable, `Cannot connect to the ttrpc socket "${path}"`, {
        cause: e,
      });
    }
  }

  async #readLoop(): Promise<void> {
    let err: unknown = new TtrpcError(Code.unavailable, "ttrpc connection closed");
    try {
      for await (const f of readFrames(this.#conn)) {
        const p = this.#pending.get(f.streamId);
        if (!p) continue;
        this.#pending.delete(f.streamId);
        p.resolve(f);
      }
    } catch (e) {
      err = e;
    }
    this.#closed = err;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  /** Calls `service/method` with an encoded request; returns the encoded response payload. */
  async call(
    service: string,
    method: string,
    payload: Uint8Array,
    options: { timeoutMs?: number; metadata?: Record<string, string> } = {},
  ): Promise<Uint8Array> {
    if (this.#closed) throw this.#closed;
    const streamId = this.#nextStream;
    this.#nextStream += 2;
    const data = encodeMessage("ttrpc.Request", {
      service,
      method,
      payload,
      timeout_nano: (options.timeoutMs ?? 0) * 1e6,
      metadata: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
    });
    const reply = new Promise<Frame>((resolve, reject) => {
      this.#pending.set(streamId, { resolve, reject });
    });
    await this.#writer.write({ streamId, type: MessageType.request, flags: 0, data });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const frame = options.timeoutMs
      ? await Promise.race([
        reply,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(
                new TtrpcError(
                  Code.deadlineExceeded,
                  `${service}/${method} timed out after ${options.timeoutMs} ms`,
                ),
              ),
            options.timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer))
      : await reply;
    if (frame.type !== MessageType.response) {
      throw new FrameError(
        `ttrpc server answered stream ${streamId} with frame type ${frame.type}`,
      );
    }
    const res = decodeMessage("ttrpc.Response", frame.data);
    if (res.status && res.status.code !== Code.ok) {
      throw new TtrpcError(res.status.code, res.status.message || `${service}/${method} failed`);
    }
    return res.payload;
  }

  [Symbol.dispose](): void {
    this.close();
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}
