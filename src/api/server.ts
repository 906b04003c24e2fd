/**
 * @module
 * The HTTP face of the runtime contract: a pure `(Request) => Promise<Response>`
 * handler. It routes, bounds and parses bodies (zod strict objects: unknown
 * fields are a 400), validates instance ids before anything touches a path,
 * turns each request into one controller {@linkcode Action}, and maps errors
 * to statuses. It holds no state of its own; `listen.ts` puts it on a socket.
 */
import type { z } from "zod";
import { OvmError } from "../errors.ts";
import { parseSize } from "../util/size.ts";
import type { Action, ActionResult, Controller } from "./controller.ts";
import {
  BODY_LIMIT,
  type ErrorBody,
  INJECT_BODY_LIMIT,
  InjectRequestSchema,
  InstanceIdSchema,
  ResumeRequestSchema,
  SnapshotRequestSchema,
  StartRequestSchema,
  StopRequestSchema,
} from "./schemas.ts";
import { toWire } from "./wire.ts";
import { standbyTag } from "../runtime/mod.ts";

/** An error with its HTTP status: what the HTTP layer itself refuses. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly hint?: string;
  constructor(status: number, code: string, message: string, options?: { hint?: string }) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.hint = options?.hint;
  }
}

const STATUS_OF: Record<string, number> = {
  validation: 400,
  policy: 403,
  not_found: 404,
  already_exists: 409,
  conflict: 409,
  not_implemented: 501,
};

/** The status and body of any error: domain errors by their code, the rest 500. */
export function errorResponse(e: unknown): Response {
  let status = 500;
  let code = "internal";
  let message = e instanceof Error ? e.message : String(e);
  let hint: string | undefined;
  if (e instanceof HttpError) {
    status = e.status;
    code = e.code;
    hint = e.hint;
  } else if (e instanceof OvmError) {
    code = e.code;
    status = STATUS_OF[code] ?? 500;
    hint = e.hint;
  } else if (e instanceof Error && (e as { code?: unknown }).code === "not_implemented") {
    status = 501;
    code = "not_implemented";
  } else if (e instanceof Error && e.name === "AbortError") {
    status = 503;
    code = "unavailable";
    message = "The server is shutting down";
  }
  const body: ErrorBody = { error: { code, message, ...(hint ? { hint } : {}) } };
  return json(status, body);
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** Reads at most `limit` bytes: the declared length is checked first, a chunked body while it streams. */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const tooLarge = () =>
    new HttpError(413, "payload_too_large", `The request body exceeds ${limit} bytes`, {
      hint: "send a smaller body",
    });
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    const n = Number(declared);
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new HttpError(400, "bad_request", `Invalid Content-Length "${declared}"`);
    }
    if (n > limit) throw tooLarge();
  }
  if (!req.body) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = req.body.getReader();
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/** Parses a JSON body against a strict schema; the message names the first bad field. */
export async function parseBody<S extends z.ZodType>(
  req: Request,
  schema: S,
  limit: number,
): Promise<z.infer<S>> {
  const ct = req.headers.get("content-type");
  if (ct !== null && !/^application\/json\b/i.test(ct)) {
    throw new HttpError(415, "unsupported_media_type", `Unsupported Content-Type "${ct}"`, {
      hint: "send application/json",
    });
  }
  const bytes = await readBody(req, limit);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new HttpError(
      400,
      "bad_request",
      `The request body is not JSON: ${(e as Error).message}`,
      {
        hint: "send a JSON object",
      },
    );
  }
  const r = schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue.path.length ? `"${issue.path.join(".")}"` : "the body";
    const msg = issue.code === "unrecognized_keys"
      ? `Unknown field${issue.keys.length > 1 ? "s" : ""} ${
        issue.keys.map((k) => `"${[...issue.path, k].join(".")}"`).join(", ")
      }`
      : `Invalid ${where}: ${issue.message}`;
    throw new HttpError(400, "validation", msg, { hint: "see the OpenAPI document for the body" });
  }
  return r.data;
}

function instanceId(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    id = raw;
  }
  if (!InstanceIdSchema.safeParse(id).success) {
    throw new HttpError(400, "validation", `Invalid instance id "${id}"`, {
      hint: "use 1-64 characters of a-z, 0-9 and -",
    });
  }
  return id;
}

/** `ID:snapshot-YYYYMMDDTHHMMSSZ`, the tag of a snapshot asked for without one. */
export function defaultSnapshotTag(id: string, now = new Date()): string {
  return `${id}:snapshot-${now.toISOString().replace(/[-:]|\.\d+/g, "")}`;
}

function flag(url: URL, name: string): boolean {
  const v = url.searchParams.get(name);
  if (v === null || v === "false" || v === "0") return false;
  if (v === "" || v === "true" || v === "1") return true;
  throw new HttpError(400, "validation", `Invalid query parameter ${name}="${v}"`, {
    hint: "use true or false",
  });
}

const ROUTES: { method: string; pattern: RegExp }[] = [
  { method: "POST", pattern: /^\/(start|stop|snapshot|resume|inject)$/ },
  { method: "GET", pattern: /^\/(status|logs)\/([^/]+)$/ },
  { method: "GET", pattern: /^\/(instances|healthz|version)$/ },
  { method: "DELETE", pattern: /^\/(instances)\/([^/]+)$/ },
];

/** Parses a request into one action (or throws an HttpError). */
export async function parseAction(req: Request): Promise<Action> {
  const url = new URL(req.url);
  const path = url.pathname;
  const route = ROUTES.find((r) => r.pattern.test(path));
  if (!route) {
    throw new HttpError(404, "not_found", `No endpoint "${path}"`, {
      hint: "see GET /version and the OpenAPI document",
    });
  }
  const m = route.pattern.exec(path)!;
  const verb = m[1];
  const methods = ROUTES.filter((r) => r.pattern.test(path)).map((r) => r.method);
  // /instances answers GET; /instances/{id} answers DELETE.
  const matching = ROUTES.find((r) => r.method === req.method && r.pattern.test(path));
  if (!matching) {
    throw new HttpError(405, "method_not_allowed", `${req.method} is not allowed on "${path}"`, {
      hint: `use ${methods.join(" or ")}`,
    });
  }
  switch (`${req.method} ${verb}${m[2] !== undefined ? "/" : ""}`) {
    case "POST start": {
      const b = await parseBody(req, StartRequestSchema, BODY_LIMIT);
      const o = b.overrides ?? {};
      return {
        kind: "start",
        manifest: b.manifest,
        memoryBytes: o.memory === undefined ? undefined : parseSize(o.memory, "memory"),
        cpus: o.cpus,
        runtime: o.runtime,
        accel: o.accel,
        name: o.name,
        ...(o.net !== undefined ? { net: o.net } : {}),
        ...(o.publish ? { publish: o.publish } : {}),
        wait: flag(url, "wait"),
      };
    }
    case "POST stop": {
      const b = await parseBody(req, StopRequestSchema, BODY_LIMIT);
      return { kind: "stop", id: b.instance_id, timeoutMs: b.timeout_ms, force: b.force };
    }
    case "POST snapshot": {
      const b = await parseBody(req, SnapshotRequestSchema, BODY_LIMIT);
      // The origin contract makes the tag optional: a local tag named for the instance and time.
      return {
        kind: "snapshot",
        id: b.instance_id,
        tag: b.tag ?? (b.stop ? standbyTag(b.instance_id) : defaultSnapshotTag(b.instance_id)),
        ...(b.stop ? { stop: true } : {}),
      };
    }
    case "POST resume": {
      const b = await parseBody(req, ResumeRequestSchema, BODY_LIMIT);
      return { kind: "resume", id: b.instance_id };
    }
    case "POST inject": {
      const b = await parseBody(req, InjectRequestSchema, INJECT_BODY_LIMIT);
      const mmio = b.content.mmio;
      return {
        kind: "inject",
        id: b.instance_id,
        device: mmio.device,
        offset: mmio.offset,
        data: Uint8Array.from(atob(mmio.data), (c) => c.charCodeAt(0)),
      };
    }
    case "GET status/":
      return { kind: "status", id: instanceId(m[2]) };
    case "GET logs/": {
      const id = instanceId(m[2]);
      const off = url.searchParams.get("offset");
      const offset = off === null ? 0 : Number(off);
      if (!Number.isSafeInteger(offset) || offset < 0) {
        throw new HttpError(400, "validation", `Invalid offset "${off}"`, {
          hint: "use a byte offset from a previous record",
        });
      }
      // A client that leaves cancels the response stream, which ends the follow
      // (no req.signal: Deno.serve aborts it on every finished response).
      return { kind: "logs", id, follow: flag(url, "follow"), offset };
    }
    case "GET instances":
      return { kind: "list" };
    case "GET healthz":
      return { kind: "health" };
    case "GET version":
      return { kind: "version" };
    case "DELETE instances/":
      return { kind: "delete", id: instanceId(m[2]), force: flag(url, "force") };
  }
  throw new HttpError(404, "not_found", `No endpoint "${path}"`);
}

export interface HandlerOptions {
  /** Called once per request with its outcome (the server's access log). */
  onResponse?: (req: Request, status: number, ms: number) => void;
}

/** The server: `(Request) => Promise<Response>` over one controller. */
export function createHandler(
  controller: Controller,
  options: HandlerOptions = {},
): (req: Request) => Promise<Response> {
  return async (req) => {
    const t0 = performance.now();
    let res: Response;
    try {
      const action = await parseAction(req);
      const result: ActionResult = await controller.apply(action);
      const ms = performance.now() - t0;
      res = "stream" in result
        ? new Response(result.stream, {
          status: result.status,
          headers: { "content-type": "application/x-ndjson" },
        })
        : new Response(JSON.stringify(toWire(action.kind, result.body)) + "\n", {
          status: result.status,
          headers: {
            "content-type": "application/json",
            // The time spent in the handler: the bench subtracts it from the round trip.
            "server-timing": [
              `app;dur=${ms.toFixed(3)}`,
              ...Object.entries(result.timing ?? {}).map(([k, v]) => `${k};dur=${v.toFixed(3)}`),
            ].join(", "),
          },
        });
    } catch (e) {
      res = errorResponse(e);
    }
    options.onResponse?.(req, res.status, performance.now() - t0);
    return res;
  };
}
