/**
 * @module
 * The default transport stack: auth around retry around fetch, so a retried
 * request keeps its credentials and a 401 is answered once, not per retry.
 */
import { AuthTransport, type CredentialProvider } from "./auth.ts";
import { type RetryOptions, RetryTransport } from "./retry.ts";
import type { TlsTrust } from "./tls.ts";
import { HttpTransport, type Transport } from "./transport.ts";

/** The default stack: auth → retry → fetch (with `tls`'s extra trust). */
export function defaultTransport(
  options: {
    credentials?: CredentialProvider;
    retry?: RetryOptions;
    fetch?: typeof fetch;
    tls?: TlsTrust;
  } = {},
): Transport {
  return new AuthTransport(
    new RetryTransport(
      new HttpTransport({ fetch: options.fetch, tls: options.tls }),
      options.retry,
    ),
    { credentials: options.credentials },
  );
}
