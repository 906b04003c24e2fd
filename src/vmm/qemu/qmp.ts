/**
 * @module
 * A general QMP client over a UNIX socket: greeting and capabilities
 * negotiation, commands matched to replies by `id`, and asynchronous events
 * (SHUTDOWN, STOP, RESUME, MIGRATION, ...) delivered to listeners and to
 * `waitEvent`. It knows no particular command, so the snapshot code can use
 * it for `migrate`/`migrate-incoming` the same way `stop` uses
 * `system_powerdown`.
 */
import { VmmError } from "../../errors.ts";

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  command: string;
}

/** UNIX socket paths longer than this do not fit `sockaddr_un`. */
const MAX_SOCKET_PATH = 107;

export class QmpClient implements AsyncDisposable {
  readonly #conn: Deno.UnixConn;
  readonly #pending = new Map<string, Pending>();
  readonly #listeners = new Set<(e: QmpEvent) => void>();
  #nextId = 1;
  #closed = false;
  #closeError?: Error;
  readonly #reader: Promise<void>;
  /** The greeting's QEMU version, e.g. "7.2.22". */
  version = "";

  private constructor(conn: Deno.UnixConn) {
    this.#conn = conn;
    this.#reader = this.#readLoop();
  }

  /**
   * Connects and negotiates capabilities. `viaPid` lets a long socket path
   * be reached through `/proc/<pid>/cwd` when the socket is in the VMM's cwd.
   */
  static async connect(
    path: string,
    options: { timeoutMs?: number; cwdPid?: number; retryMs?: number } = {},
  ): Promise<QmpClient> {
    let target = path;
    if (path.length > MAX_SOCKET_PATH && options.cwdPid) {
      target = `/proc/${options.cwdPid}/cwd/${path.slice(path.lastIndexOf("/") + 1)}`;
    }
    let conn: Deno.UnixConn;
    // QEMU binds the socket a moment before it listens: a fresh VM may
    // refuse for that moment (`retryMs` covers it).
    const until = Date.now() + (options.retryMs ?? 0);
    while (true) {
      try {
        conn = await Deno.connect({ transport: "unix", path: target });
        break;
      } catch (e) {
        if (Date.now() < until && e instanceof Deno.errors.ConnectionRefused) {
          await new Promise((r) => setTimeout(r, 1));
          continue;
        }
        throw new VmmError("qemu", "qmp connect", `cannot connect to "${path}"`, { cause: e });
      }
    }
    const client = new QmpClient(conn);
    try {
      await withTimeout(client.#greeting, options.timeoutMs ?? 5000, "QMP greeting");
      await client.execute("qmp_capabilities", undefined, { timeoutMs: options.timeoutMs });
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  #greetingResolve!: (v: void) => void;
  #greetingReject!: (e: unknown) => void;
  readonly #greeting = new Promise<void>((res, rej) => {
    this.#greetingResolve = res;
    this.#greetingReject = rej;
  });

  async #readLoop(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const n = await this.#conn.read(chunk);
        if (n === null) break;
        buf += dec.decode(chunk.subarray(0, n), { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) this.#dispatch(line);
        }
      }
      this.#finish(new VmmError("qemu", "qmp", "the QMP connection closed"));
    } catch (e) {
      this.#finish(
        this.#closed ? new VmmError("qemu", "qmp", "closed") : new VmmError(
          "qemu",
          "qmp",
          "reading from the QMP socket failed",
          { cause: e },
        ),
      );
    }
  }

  #dispatch(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // QMP only sends JSON objects; ignore noise rather than die.
    }
    if ("QMP" in msg) {
      const v = (msg.QMP as { version?: { qemu?: Record<string, number> } }).version?.qemu;
      if (v) this.version = `${v.major}.${v.minor}.${v.micro}`;
      this.#greetingResolve();
      return;
    }
    if (typeof msg.event === "string") {
      for (const l of [...this.#listeners]) l(msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === "string" ? msg.id : undefined;
    const p = id ? this.#pending.get(id) : undefined;
    if (!p || !id) return;
    this.#pending.delete(id);
    if ("error" in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(
        new VmmError("qemu", p.command, `${err.desc ?? "error"} (${err.class ?? "GenericError"})`),
      );
    } else {
      p.resolve(msg.return);
    }
  }

  #finish(err: Error): void {
    this.#closeError ??= err;
    this.#greetingReject(err);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  /** Runs a QMP command and returns its `return` value. */
  async execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: { timeoutMs?: number } = {},
  ): Promise<T> {
    if (this.#closeError) throw this.#closeError;
    const id = `ovm-${this.#nextId++}`;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, command });
    });
    const bytes = new TextEncoder().encode(
      JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + "\n",
    );
    let off = 0;
    while (off < bytes.byteLength) off += await this.#conn.write(bytes.subarray(off));
    return await withTimeout(reply, options.timeoutMs ?? 10_000, `QMP ${command}`) as T;
  }

  /** Calls `fn` for every event until the returned function is called. */
  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Resolves with the first event named one of `names` (after this call). */
  waitEvent(names: string[], options: { timeoutMs?: number } = {}): Promise<QmpEvent> {
    let off = () => {};
    const p = new Promise<QmpEvent>((resolve, reject) => {
      off = this.onEvent((e) => {
        if (names.includes(e.event)) resolve(e);
      });
      this.#reader.then(() => reject(this.#closeError));
    });
    return withTimeout(p, options.timeoutMs ?? 30_000, `QMP event ${names.join("/")}`)
      .finally(off);
  }

  /** Resolves when QEMU closes the connection (it exited). */
  get closed(): Promise<void> {
    return this.#reader;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#reader.catch(() => {});
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new VmmError("qemu", what, `no answer within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
