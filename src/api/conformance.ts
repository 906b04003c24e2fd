/**
 * @module
 * The conformance kit: the runtime-contract suite run against any server on
 * a UNIX socket (`ovm conformance --socket PATH [--manifest REF]`). It checks
 * statuses and error codes, every response's body against the OpenAPI
 * document, and — given a manifest that boots — the lifecycle: start, status,
 * logs, inject, follow-streaming, stop, wrong-state actions, delete.
 */
import { OvmsClient } from "./client.ts";
import { buildOpenApi } from "./openapi.ts";
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

interface Exchange {
  status: number;
  type: string | null;
  body: unknown;
}

class CaseFailure extends Error {}

function expect(cond: unknown, message: string): asserts cond {
  if (!cond) throw new CaseFailure(message);
}

/** One raw HTTP/1.1 exchange over the socket, for bodies fetch will not send as asked. */
async function rawExchange(
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

export async function runConformance(
  socket: string,
  options: ConformanceOptions = {},
): Promise<CaseResult[]> {
  const validator = options.validator ?? new ResponseValidator(buildOpenApi());
  using client = new OvmsClient({ socket });
  const results: CaseResult[] = [];
  let problems: string[] = [];

  const call = async (
    method: string,
    path: string,
    body?: unknown,
    raw?: string,
  ): Promise<Exchange> => {
    const res = await client.request(method, path, {
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
    problems.push(...validator.check(method, path, res.status, type, parsed));
    return { status: res.status, type, body: parsed };
  };
  const checked = (method: string, path: string, ex: Exchange) => {
    problems.push(...validator.check(method, path, ex.status, ex.type, ex.body));
    return ex;
  };
  const code = (ex: Exchange) => (ex.body as { error?: { code?: string } })?.error?.code;
  const message = (ex: Exchange) =>
    (ex.body as { error?: { message?: string } })?.error?.message ?? "";
  const wantError = (ex: Exchange, status: number, what: string) => {
    expect(
      ex.status === status,
      `${what}: expected ${status}, got ${ex.status} ${JSON.stringify(ex.body)}`,
    );
    expect(typeof code(ex) === "string" && message(ex).length > 0, `${what}: no error body`);
  };

  const run = async (name: string, fn: () => Promise<string | void>, skip?: string) => {
    const t0 = performance.now();
    problems = [];
    let r: CaseResult;
    if (skip) {
      r = { name, ok: true, skipped: true, detail: `skipped: ${skip}`, ms: 0 };
    } else {
      try {
        const detail = await fn();
        r = problems.length
          ? { name, ok: false, detail: `schema: ${problems[0]}`, ms: performance.now() - t0 }
          : { name, ok: true, detail: detail ?? "", ms: performance.now() - t0 };
      } catch (e) {
        r = { name, ok: false, detail: (e as Error).message, ms: performance.now() - t0 };
      }
    }
    results.push(r);
    options.onResult?.(r);
    return r.ok && !r.skipped;
  };

  const missing = "no-such-instance-0";
  await run("GET /healthz answers ok", async () => {
    const ex = await call("GET", "/healthz");
    expect(ex.status === 200, `status ${ex.status}`);
  });
  await run("GET /version names the contract", async () => {
    const ex = await call("GET", "/version");
    expect(ex.status === 200, `status ${ex.status}`);
    return (ex.body as { api: string }).api;
  });
  await run("GET /instances lists instances", async () => {
    const ex = await call("GET", "/instances");
    expect(ex.status === 200, `status ${ex.status}`);
  });
  await run("an unknown endpoint is 404", async () => {
    const res = await client.request("GET", "/no/such/endpoint");
    const ex = {
      status: res.status,
      type: res.headers.get("content-type"),
      body: await res.json(),
    };
    wantError(ex, 404, "GET /no/such/endpoint");
  });
  await run("a body that is not JSON is 400", async () => {
    wantError(await call("POST", "/stop", undefined, "{not json"), 400, "POST /stop {not json");
  });
  await run("an unknown field is 400 and named", async () => {
    const ex = await call("POST", "/stop", { instance_id: missing, bogus: 1 });
    wantError(ex, 400, "POST /stop with bogus");
    expect(message(ex).includes("bogus"), `the message does not name the field: ${message(ex)}`);
  });
  await run("a missing field is 400", async () => {
    wantError(await call("POST", "/start", { overrides: {} }), 400, "POST /start without manifest");
  });
  await run("path-like instance ids are 400", async () => {
    wantError(await call("GET", "/status/..%2F..%2Fetc%2Fpasswd"), 400, "GET /status/..%2F..");
    wantError(await call("POST", "/stop", { instance_id: "../../x" }), 400, "POST /stop ../../x");
    wantError(await call("GET", "/logs/..%2Fstate.json"), 400, "GET /logs/..%2Fstate.json");
    wantError(await call("DELETE", "/instances/A%00"), 400, "DELETE /instances/A%00");
  });
  await run("an unknown instance is 404 everywhere", async () => {
    wantError(await call("GET", `/status/${missing}`), 404, "GET /status");
    wantError(await call("GET", `/logs/${missing}`), 404, "GET /logs");
    wantError(await call("POST", "/stop", { instance_id: missing }), 404, "POST /stop");
    wantError(
      await call("POST", "/snapshot", { instance_id: missing, tag: "x/y:1" }),
      404,
      "POST /snapshot",
    );
    wantError(
      await call("POST", "/inject", {
        instance_id: missing,
        content: { mmio: { device: "shm0", offset: 0, data: "AAAA" } },
      }),
      404,
      "POST /inject",
    );
    wantError(await call("DELETE", `/instances/${missing}`), 404, "DELETE /instances");
  });
  await run("a start of an unknown manifest is 404", async () => {
    wantError(
      await call("POST", "/start", { manifest: "no-such/manifest:0" }),
      404,
      "POST /start no-such/manifest:0",
    );
  });
  await run("a declared 10 MiB body is 413 before it is read", async () => {
    const size = 10 * 1024 * 1024;
    const ex = checked(
      "POST",
      "/start",
      await rawExchange(
        socket,
        `POST /start HTTP/1.1\r\nHost: ovms\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${size}\r\nConnection: close\r\n\r\n`,
        new Uint8Array(64 * 1024).fill(0x20),
      ),
    );
    wantError(ex, 413, "POST /start with Content-Length 10 MiB");
  });
  await run("a chunked body over the limit is 413", async () => {
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent > 4 * 1024 * 1024) return c.close();
        const data = new Uint8Array(256 * 1024).fill(0x20);
        sent += data.byteLength;
        const head = new TextEncoder().encode(`${data.byteLength.toString(16)}\r\n`);
        const out = new Uint8Array(head.byteLength + data.byteLength + 2);
        out.set(head);
        out.set(data, head.byteLength);
        out.set([13, 10], head.byteLength + data.byteLength);
        c.enqueue(out);
      },
    });
    const ex = checked(
      "POST",
      "/stop",
      await rawExchange(
        socket,
        `POST /stop HTTP/1.1\r\nHost: ovms\r\nContent-Type: application/json\r\n` +
          `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
        stream,
      ),
    );
    wantError(ex, 413, "POST /stop chunked 4 MiB");
  });

  const skip = options.manifest ? undefined : "no --manifest given";
  const name = `conformance-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
  let started = false;
  let devices: { name: string; size: number }[] = [];
  await run("POST /start answers starting", async () => {
    const ex = await call("POST", "/start", {
      manifest: options.manifest,
      overrides: { ...(options.overrides ?? {}), name },
    });
    expect(ex.status === 202, `expected 202, got ${ex.status} ${JSON.stringify(ex.body)}`);
    const b = ex.body as { instance_id: string; status: string };
    expect(b.instance_id === name, `instance_id "${b.instance_id}", asked for "${name}"`);
    expect(b.status === "starting", `status "${b.status}"`);
    started = true;
  }, skip);
  const noVm = skip ?? (started ? undefined : "the start failed");
  let running = false;
  await run("status goes from starting to running", async () => {
    const deadline = Date.now() + (options.bootTimeoutMs ?? 180_000);
    const seen = new Set<string>();
    while (true) {
      const ex = await call("GET", `/status/${name}`);
      expect(ex.status === 200, `status ${ex.status} ${JSON.stringify(ex.body)}`);
      const s = ex.body as { state: string; reason?: string; devices: typeof devices };
      seen.add(s.state);
      if (s.state === "running") {
        devices = s.devices;
        running = true;
        return [...seen].join(" -> ");
      }
      expect(s.state === "starting", `state "${s.state}": ${s.reason ?? ""}`);
      expect(Date.now() < deadline, "not running in time");
      await new Promise((r) => setTimeout(r, 200));
    }
  }, noVm);
  const noRun = noVm ?? (running ? undefined : "the instance did not run");
  await run("a second start with the same name is 409", async () => {
    const ex = await call("POST", "/start", {
      manifest: options.manifest,
      overrides: { ...(options.overrides ?? {}), name },
    });
    wantError(ex, 409, "POST /start of a taken name");
  }, noRun);
  await run("GET /logs shows the console", async () => {
    const deadline = Date.now() + 60_000;
    while (true) {
      const ex = await call("GET", `/logs/${name}`);
      expect(ex.status === 200, `status ${ex.status}`);
      const recs = ex.body as { line: string }[];
      if (recs.length) return `${recs.length} line(s)`;
      expect(Date.now() < deadline, "no console line");
      await new Promise((r) => setTimeout(r, 500));
    }
  }, noRun);
  await run("POST /inject writes into a region and is bounds-checked", async () => {
    const d = devices[0];
    const ok = await call("POST", "/inject", {
      instance_id: name,
      content: { mmio: { device: d.name, offset: 0, data: btoa("OVMS") } },
    });
    expect(ok.status === 200, `status ${ok.status} ${JSON.stringify(ok.body)}`);
    expect((ok.body as { bytes_written: number }).bytes_written === 4, "bytes_written");
    wantError(
      await call("POST", "/inject", {
        instance_id: name,
        content: { mmio: { device: d.name, offset: d.size - 2, data: btoa("OVMS") } },
      }),
      400,
      "an inject past the end",
    );
    wantError(
      await call("POST", "/inject", {
        instance_id: name,
        content: { mmio: { device: "no-such-device", offset: 0, data: btoa("x") } },
      }),
      404,
      "an inject into an unknown device",
    );
  }, noRun ?? (devices.length ? undefined : "the manifest has no ivshmem device"));
  await run("logs?follow=true streams until the VM ends, and POST /stop stops it", async () => {
    const res = await client.request("GET", `/logs/${name}?follow=true`);
    expect(res.status === 200, `follow: status ${res.status}`);
    const type = res.headers.get("content-type");
    const body = res.text();
    const stop = await call("POST", "/stop", { instance_id: name, timeout_ms: 30_000 });
    expect(stop.status === 200, `stop: status ${stop.status} ${JSON.stringify(stop.body)}`);
    const sb = stop.body as { status: string; state: string };
    expect(sb.status === "ok" && sb.state === "stopped", `stop: ${JSON.stringify(sb)}`);
    const recs = (await body).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    problems.push(...validator.check("GET", `/logs/${name}`, res.status, type, recs));
    expect(recs.length > 0, "the followed stream was empty");
    return `${recs.length} record(s) streamed`;
  }, noRun);
  await run("a stopped instance refuses stop, inject and snapshot with 409", async () => {
    const st = await call("GET", `/status/${name}`);
    expect((st.body as { state: string }).state === "stopped", `state ${JSON.stringify(st.body)}`);
    wantError(await call("POST", "/stop", { instance_id: name }), 409, "stop of a stopped VM");
    wantError(
      await call("POST", "/inject", {
        instance_id: name,
        content: { mmio: { device: devices[0]?.name ?? "shm0", offset: 0, data: btoa("x") } },
      }),
      409,
      "inject into a stopped VM",
    );
    wantError(
      await call("POST", "/snapshot", { instance_id: name, tag: "conformance/snap:1" }),
      409,
      "snapshot of a stopped VM",
    );
  }, noRun);
  await run("DELETE /instances/{id} removes it", async () => {
    const ex = await call("DELETE", `/instances/${name}`);
    expect(ex.status === 200, `status ${ex.status} ${JSON.stringify(ex.body)}`);
    wantError(await call("GET", `/status/${name}`), 404, "status after delete");
  }, noVm);
  return results;
}
