/**
 * @module
 * Puts a handler on a UNIX socket with `Deno.serve({ transport: "unix", path })`.
 * The socket is only ever visible with mode 0600: it is bound inside a fresh
 * 0700 directory next to its final path, chmod-ed there, then renamed into
 * place (rename also replaces a stale socket atomically). A socket with a live
 * server behind it is refused, naming the path.
 */
import { dirname, join } from "node:path";
import { ConflictError, ValidationError } from "../errors.ts";

/** `sun_path` holds 108 bytes with the terminating NUL. */
const SUN_PATH_MAX = 107;

/** The default socket: `/run/ovm/ovm.sock` for root, else `$XDG_RUNTIME_DIR/ovm/ovm.sock` (or /tmp/ovm-<uid>/). */
export function defaultSocketPath(
  env: { get(key: string): string | undefined } = Deno.env,
): string {
  const uid = Deno.uid();
  if (uid === 0) return "/run/ovm/ovm.sock";
  const xdg = env.get("XDG_RUNTIME_DIR");
  return xdg ? join(xdg, "ovm", "ovm.sock") : `/tmp/ovm-${uid}/ovm.sock`;
}

/** The socket a client should use: `--socket`, else `$OVM_SOCKET`, else the default path. */
export function clientSocketPath(
  flag: string | undefined,
  env: { get(key: string): string | undefined } = Deno.env,
): string {
  return flag ?? env.get("OVM_SOCKET") ?? defaultSocketPath(env);
}

/** True when a server accepts connections on `path`. */
export async function socketLive(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

export interface ApiServer extends AsyncDisposable {
  path: string;
  /** Stops accepting, lets in-flight requests finish, removes the socket. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

export interface ListenOptions {
  path: string;
  onError?: (error: unknown) => Response | Promise<Response>;
}

export async function listen(
  handler: (req: Request) => Response | Promise<Response>,
  options: ListenOptions,
): Promise<ApiServer> {
  const path = options.path;
  if (new TextEncoder().encode(path).byteLength + 24 > SUN_PATH_MAX) {
    throw new ValidationError(`Socket path "${path}" is too long`, {
      hint: `keep it under ${SUN_PATH_MAX - 24} bytes (a UNIX socket path is limited)`,
    });
  }
  const dir = dirname(path);
  try {
    await Deno.stat(dir);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.chmod(dir, 0o700);
  }
  // One server per path: two starting at once would both see a stale socket
  // and both rename into place. The lock is held for the server's lifetime.
  const lock = await Deno.open(`${path}.lock`, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  });
  try {
    if (!(await lock.tryLock(true))) {
      throw new ConflictError(
        (await socketLive(path))
          ? `A server is already listening on "${path}"`
          : `Another server is starting on "${path}"`,
        { hint: "stop it first, or pick another --socket" },
      );
    }
    return await bind(handler, options, lock);
  } catch (e) {
    lock.close();
    throw e;
  }
}

async function bind(
  handler: (req: Request) => Response | Promise<Response>,
  options: ListenOptions,
  lock: Deno.FsFile,
): Promise<ApiServer> {
  const path = options.path;
  const dir = dirname(path);
  const existing = await Deno.lstat(path).catch(() => undefined);
  if (existing) {
    if (!existing.isSocket) {
      throw new ConflictError(`"${path}" exists and is not a socket`, {
        hint: "remove it or pick another --socket",
      });
    }
    if (await socketLive(path)) {
      throw new ConflictError(`A server is already listening on "${path}"`, {
        hint: "stop it first, or pick another --socket",
      });
    }
  }
  const priv = await Deno.makeTempDir({ dir, prefix: ".ovm-" });
  const tmp = join(priv, "s");
  let server: Deno.HttpServer<Deno.UnixAddr>;
  try {
    await Deno.chmod(priv, 0o700);
    server = Deno.serve({
      transport: "unix",
      path: tmp,
      onListen() {},
      onError: options.onError,
    }, handler);
    try {
      await Deno.chmod(tmp, 0o600);
      // Atomic: clients see the old (stale) socket or this one, never no socket or a 0755 one.
      await Deno.rename(tmp, path);
    } catch (e) {
      await server.shutdown();
      throw e;
    }
  } finally {
    await Deno.remove(priv, { recursive: true }).catch(() => {});
  }
  const ino = (await Deno.lstat(path)).ino;
  let done: Promise<void> | undefined;
  const shutdown = () =>
    done ??= (async () => {
      await server.shutdown();
      // Remove the socket only if it is still ours (a newer server may have replaced it).
      const now = await Deno.lstat(path).catch(() => undefined);
      if (now && now.ino === ino) await Deno.remove(path).catch(() => {});
      lock.close();
    })();
  return {
    path,
    shutdown,
    finished: server.finished,
    async [Symbol.asyncDispose]() {
      await shutdown();
    },
  };
}
