/**
 * @module
 * The handful of domain errors that callers catch. Every error carries a
 * stable `code` for `--json` output and the API; `main.ts` maps them to exit
 * codes and `src/api/` maps them to HTTP statuses.
 */

export type ErrorCode =
  | "validation"
  | "not_found"
  | "already_exists"
  | "digest_mismatch"
  | "registry"
  | "vmm"
  | "conflict"
  | "policy"
  | "internal";

/** Base class of every error `ovm` raises on purpose. */
export class OvmError extends Error {
  readonly code: ErrorCode = "internal";
  /** What the user can do about it, shown after the message. */
  readonly hint?: string;
  constructor(message: string, options?: { cause?: unknown; hint?: string }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.hint = options?.hint;
  }
}

/** Bad input: a flag, a file, a manifest, a reference. Exit code 2. */
export class ValidationError extends OvmError {
  override readonly code = "validation";
  /** JSON path of the offending field, when the input was a document. */
  readonly path?: string;
  constructor(message: string, options?: { cause?: unknown; hint?: string; path?: string }) {
    super(message, options);
    this.path = options?.path;
  }
}

export class NotFoundError extends OvmError {
  override readonly code = "not_found";
}

export class AlreadyExistsError extends OvmError {
  override readonly code = "already_exists";
}

/** An action that is not valid in the current state (a stopped VM, a held lock). */
export class ConflictError extends OvmError {
  override readonly code = "conflict";
}

export class DigestMismatchError extends OvmError {
  override readonly code = "digest_mismatch";
  readonly expected: string;
  readonly actual: string;
  constructor(
    what: string,
    expected: string,
    actual: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`Digest mismatch for ${what}: expected "${expected}", got "${actual}"`, options);
    this.expected = expected;
    this.actual = actual;
  }
}

/** A registry answered with an error status (and OCI error codes when it sent them). */
export class RegistryError extends OvmError {
  override readonly code = "registry";
  readonly status: number;
  readonly ociCodes: string[];
  constructor(
    message: string,
    options: { status: number; ociCodes?: string[]; cause?: unknown; hint?: string },
  ) {
    super(message, options);
    this.status = options.status;
    this.ociCodes = options.ociCodes ?? [];
  }
}

/** A VMM adapter failed; names the adapter and the step. */
export class VmmError extends OvmError {
  override readonly code = "vmm";
  readonly adapter: string;
  readonly step: string;
  constructor(
    adapter: string,
    step: string,
    message: string,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(`${adapter}: ${step}: ${message}`, options);
    this.adapter = adapter;
    this.step = step;
  }
}

/** Refused by the admission policy. */
export class PolicyError extends OvmError {
  override readonly code = "policy";
}

/** Formats any error for a person: message, chained causes, hint. */
export function describeError(err: unknown): string {
  const lines: string[] = [];
  let cur: unknown = err;
  let depth = 0;
  while (cur !== undefined && depth < 5) {
    const msg = cur instanceof Error ? cur.message : String(cur);
    lines.push(depth === 0 ? msg : `  caused by: ${msg}`);
    cur = cur instanceof Error ? cur.cause : undefined;
    depth++;
  }
  if (err instanceof OvmError && err.hint) lines.push(`hint: ${err.hint}`);
  return lines.join("\n");
}
