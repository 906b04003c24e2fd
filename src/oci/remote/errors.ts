/**
 * @module
 * How registry failures look to callers (oras-go's `errcode`): an error
 * response becomes a {@linkcode NotFoundError} or a {@linkcode RegistryError}
 * carrying the HTTP status and the OCI error codes; a connection that fails
 * is a {@linkcode NetworkError}; refused credentials are an
 * {@linkcode AuthError}.
 */
import { NotFoundError, RegistryError } from "../../errors.ts";
import { readBounded } from "./streams.ts";

/** The registry could not be reached, or the connection failed mid-answer. */
export class NetworkError extends RegistryError {
  /** A TLS failure rather than a lost connection. */
  readonly tls: boolean;
  constructor(message: string, options: { cause?: unknown; hint?: string; tls?: boolean }) {
    super(message, { status: 0, cause: options.cause, hint: options.hint });
    this.tls = options.tls ?? false;
  }
}

/** An authentication failure: wrong or missing credentials, or a denied scope. */
export class AuthError extends RegistryError {}

/** The `code`s of an OCI error body, or none. */
export function ociCodes(body: string): string[] {
  try {
    const doc = JSON.parse(body) as { errors?: { code?: string }[] };
    return (doc.errors ?? []).map((e) => String(e.code ?? "")).filter(Boolean);
  } catch {
    return [];
  }
}

/** A failure of the connection rather than an answer from the server. */
export function isNetworkError(e: unknown): boolean {
  if (e instanceof DOMException && e.name === "AbortError") return false;
  if (e instanceof NetworkError) return !e.tls;
  if (isTlsError(e)) return false;
  return e instanceof TypeError || e instanceof Deno.errors.ConnectionReset ||
    e instanceof Deno.errors.ConnectionRefused || e instanceof Deno.errors.ConnectionAborted ||
    e instanceof Deno.errors.BrokenPipe || e instanceof Deno.errors.UnexpectedEof ||
    e instanceof Deno.errors.Interrupted || e instanceof Deno.errors.TimedOut ||
    (e instanceof Error && e.name === "Http");
}

/** A TLS failure (handshake, certificate, plain HTTP answering): retrying will not help. */
export function isTlsError(e: unknown): boolean {
  const text = e instanceof Error ? `${e.message} ${String(e.cause ?? "")}` : "";
  return /certificate|InvalidContentType|handshake|\btls\b|\bssl\b/i.test(text);
}

/**
 * Turns an error response into a NotFoundError (404) or a RegistryError
 * naming the registry, what was asked for and the OCI codes; consumes the body.
 */
export async function responseError(
  res: Response,
  where: { registry: string; repository: string; what: string; plainHttp?: boolean },
): Promise<NotFoundError | RegistryError> {
  const body = await readBounded(res, 64 << 10).then((b) => new TextDecoder().decode(b))
    .catch(() => "");
  const codes = ociCodes(body);
  const { registry, repository, what } = where;
  // Go's net/http answers plain HTTP on a TLS port with this 400 (no body to a HEAD).
  const httpToHttps = /HTTP request to an HTTPS server/i.test(body) ||
    (body === "" && where.plainHttp === true);
  if (res.status === 400 && httpToHttps) {
    return new RegistryError(`Registry "${registry}" speaks HTTPS, but was spoken to in HTTP`, {
      status: 400,
      hint:
        `drop --plain-http; a loopback registry is spoken to over HTTPS when --ca-file is given or certs.d/${registry}/ exists (for its private CA)`,
    });
  }
  const cause = new RegistryError(
    `Registry "${registry}" answered HTTP ${res.status} for ${what}${
      codes.length ? ` (${codes.join(", ")})` : ""
    }`,
    { status: res.status, ociCodes: codes },
  );
  if (res.status !== 404) return cause;
  const message = codes.includes("NAME_UNKNOWN")
    ? `Repository "${registry}/${repository}" was not found`
    : `${what[0].toUpperCase()}${what.slice(1)} was not found in "${registry}/${repository}"`;
  return new NotFoundError(message, {
    cause,
    hint: "check the reference (registry, repository, tag) and that it was pushed",
  });
}
