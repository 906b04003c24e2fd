/**
 * @module
 * The machinery of one conformance run (`conformance.ts` holds the cases):
 * requests whose responses are checked against the OpenAPI document, and
 * the results of the cases run so far.
 */
import { OvmsClient } from "./client.ts";
import { buildOpenApi } from "./openapi.ts";
import type { Exchange } from "./raw_http.ts";
import { ResponseValidator } from "./validate.ts";

export interface CaseResult {
  name: string;
  ok: boolean;
  /** Why it failed, or what was seen ("skipped: ..."). */
  detail: string;
  ms: number;
  skipped?: boolean;
}

export interface ConformanceOptions {
  /** A manifest the runtime can boot; without it the lifecycle cases are skipped. */
  manifest?: string;
  /** Overrides for the lifecycle's start (e.g. `{ memory: "256M", accel: "tcg" }`). */
  overrides?: Record<string, unknown>;
  /** Checks responses (default: the document built from this build's schemas). */
  validator?: ResponseValidator;
  /** How long the lifecycle waits for running (default 180 s). */
  bootTimeoutMs?: number;
  onResult?: (r: CaseResult) => void;
}

export class CaseFailure extends Error {}

export function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new CaseFailure(message);
}

/** The state of one conformance run: the client, the validator, the results so far. */
export class Kit {
  readonly socket: string;
  readonly client: OvmsClient;
  readonly validator: ResponseValidator;
  readonly options: ConformanceOptions;
  readonly results: CaseResult[] = [];
  problems: string[] = [];

  constructor(socket: string, options: ConformanceOptions) {
    this.socket = socket;
    this.client = new OvmsClient({ socket });
    this.validator = options.validator ?? new ResponseValidator(buildOpenApi());
    this.options = options;
  }

  /** One request; its response is checked against the document. */
  async call(method: string, path: string, body?: unknown, raw?: string): Promise<Exchange> {
    const res = await this.client.request(method, path, {
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
      headers: body === undefined && raw === undefined
        ? undefined
        : { "content-type": "application/json" },
    });
    const type = res.headers.get("content-type");
    const text = await res.text();
    let parsed: unknown;
    if (type?.startsWith("application/x-ndjson")) {
      parsed = text.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    } else {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    this.problems.push(...this.validator.check(method, path, res.status, type, parsed));
    return { status: res.status, type, body: parsed };
  }

  checked(method: string, path: string, ex: Exchange): Exchange {
    this.problems.push(...this.validator.check(method, path, ex.status, ex.type, ex.body));
    return ex;
  }

  /** Runs one case (or records it skipped); true when it ran and passed. */
  async run(name: string, fn: () => Promise<string | void>, skip?: string): Promise<boolean> {
    const t0 = performance.now();
    this.problems = [];
    let r: CaseResult;
    if (skip) {
      r = { name, ok: true, skipped: true, detail: `skipped: ${skip}`, ms: 0 };
    } else {
      try {
        const detail = await fn();
        r = this.problems.length
          ? { name, ok: false, detail: `schema: ${this.problems[0]}`, ms: performance.now() - t0 }
          : { name, ok: true, detail: detail ?? "", ms: performance.now() - t0 };
      } catch (e) {
        r = { name, ok: false, detail: (e as Error).message, ms: performance.now() - t0 };
      }
    }
    this.results.push(r);
    this.options.onResult?.(r);
    return r.ok && !r.skipped;
  }
}

export const code = (ex: Exchange) => (ex.body as { error?: { code?: string } })?.error?.code;
export const message = (ex: Exchange) =>
  (ex.body as { error?: { message?: string } })?.error?.message ?? "";

export function wantError(ex: Exchange, status: number, what: string): void {
  expect(
    ex.status === status,
    `${what}: expected ${status}, got ${ex.status} ${JSON.stringify(ex.body)}`,
  );
  expect(typeof code(ex) === "string" && message(ex).length > 0, `${what}: no error body`);
}
