/**
 * @module
 * The conformance kit: the runtime-contract suite run against any server on
 * a UNIX socket (`ovm conformance --socket PATH [--manifest REF]`). It checks
 * statuses and error codes, every response's body against the OpenAPI
 * document, and — given a manifest that boots — the lifecycle: start, status,
 * logs, inject, follow-streaming, stop, wrong-state actions, delete.
 */
import {
  type CaseResult,
  type ConformanceOptions,
  expect,
  Kit,
  message,
  wantError,
} from "./conformance_kit.ts";
import { rawExchange } from "./raw_http.ts";

export type { CaseResult, ConformanceOptions } from "./conformance_kit.ts";

const MISSING = "no-such-instance-0";

/** Runs the contract suite against the server on `socket`. */
export async function runConformance(
  socket: string,
  options: ConformanceOptions = {},
): Promise<CaseResult[]> {
  const kit = new Kit(socket, options);
  try {
    await basicCases(kit);
    await badInputCases(kit);
    await notFoundCases(kit);
    await limitCases(kit);
    const life = await startCases(kit);
    await runningCases(kit, life);
    return kit.results;
  } finally {
    kit.client.close();
  }
}

async function basicCases(k: Kit): Promise<void> {
  await k.run("GET /healthz answers ok", async () => {
    const ex = await k.call("GET", "/healthz");
    expect(ex.status === 200, `status ${ex.status}`);
  });
  await k.run("GET /version names the contract", async () => {
    const ex = await k.call("GET", "/version");
    expect(ex.status === 200, `status ${ex.status}`);
    return (ex.body as { api: string }).api;
  });
  await k.run("GET /instances lists instances", async () => {
    const ex = await k.call("GET", "/instances");
    expect(ex.status === 200, `status ${ex.status}`);
  });
  await k.run("an unknown endpoint is 404", async () => {
    const res = await k.client.request("GET", "/no/such/endpoint");
    const ex = {
      status: res.status,
      type: res.headers.get("content-type"),
      body: await res.json(),
    };
    wantError(ex, 404, "GET /no/such/endpoint");
  });
}

async function badInputCases(k: Kit): Promise<void> {
  await k.run("a body that is not JSON is 400", async () => {
    wantError(await k.call("POST", "/stop", undefined, "{not json"), 400, "POST /stop {not json");
  });
  await k.run("an unknown field is 400 and named", async () => {
    const ex = await k.call("POST", "/stop", { instance_id: MISSING, bogus: 1 });
    wantError(ex, 400, "POST /stop with bogus");
    expect(message(ex).includes("bogus"), `the message does not name the field: ${message(ex)}`);
  });
  await k.run("a missing field is 400", async () => {
    wantError(
      await k.call("POST", "/start", { overrides: {} }),
      400,
      "POST /start without manifest",
    );
  });
  await k.run("path-like instance ids are 400", async () => {
    wantError(await k.call("GET", "/status/..%2F..%2Fetc%2Fpasswd"), 400, "GET /status/..%2F..");
    wantError(
      await k.call("POST", "/stop", { instance_id: "../../x" }),
      400,
      "POST /stop ../../x",
    );
    wantError(await k.call("GET", "/logs/..%2Fstate.json"), 400, "GET /logs/..%2Fstate.json");
    wantError(await k.call("DELETE", "/instances/A%00"), 400, "DELETE /instances/A%00");
  });
}

async function notFoundCases(k: Kit): Promise<void> {
  await k.run("an unknown instance is 404 everywhere", async () => {
    wantError(await k.call("GET", `/status/${MISSING}`), 404, "GET /status");
    wantError(await k.call("GET", `/logs/${MISSING}`), 404, "GET /logs");
    wantError(await k.call("POST", "/stop", { instance_id: MISSING }), 404, "POST /stop");
    wantError(
      await k.call("POST", "/snapshot", { instance_id: MISSING, tag: "x/y:1" }),
      404,
      "POST /snapshot",
    );
    wantError(
      await k.call("POST", "/inject", {
        instance_id: MISSING,
        content: { mmio: { device: "shm0", offset: 0, data: "AAAA" } },
      }),
      404,
      "POST /inject",
    );
    wantError(await k.call("DELETE", `/instances/${MISSING}`), 404, "DELETE /instances");
  });
  await k.run("a start of an unknown manifest is 404", async () => {
    wantError(
      await k.call("POST", "/start", { manifest: "no-such/manifest:0" }),
      404,
      "POST /start no-such/manifest:0",
    );
  });
}

async function limitCases(k: Kit): Promise<void> {
  await k.run("a declared 10 MiB body is 413 before it is read", async () => {
    const size = 10 * 1024 * 1024;
    const ex = k.checked(
      "POST",
      "/start",
      await rawExchange(
        k.socket,
        `POST /start HTTP/1.1\r\nHost: ovms\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${size}\r\nConnection: close\r\n\r\n`,
        new Uint8Array(64 * 1024).fill(0x20),
      ),
    );
    wantError(ex, 413, "POST /start with Content-Length 10 MiB");
  });
  await k.run("a chunked body over the limit is 413", async () => {
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
    const ex = k.checked(
      "POST",
      "/stop",
      await rawExchange(
        k.socket,
        `POST /stop HTTP/1.1\r\nHost: ovms\r\nContent-Type: application/json\r\n` +
          `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
        stream,
      ),
    );
    wantError(ex, 413, "POST /stop chunked 4 MiB");
  });
}

/** What the lifecycle cases learnt: the instance, why later cases skip, its devices. */
interface Life {
  name: string;
  noVm?: string;
  noRun?: string;
  devices: { name: string; size: number }[];
}

async function startCases(k: Kit): Promise<Life> {
  const o = k.options;
  const skip = o.manifest ? undefined : "no --manifest given";
  const name = `conformance-${crypto.getRandomValues(new Uint32Array(1))[0].toString(16)}`;
  const life: Life = { name, devices: [] };
  const started = await k.run("POST /start answers starting", async () => {
    const ex = await k.call("POST", "/start", {
      manifest: o.manifest,
      overrides: { ...(o.overrides ?? {}), name },
    });
    expect(ex.status === 202, `expected 202, got ${ex.status} ${JSON.stringify(ex.body)}`);
    const b = ex.body as { instance_id: string; status: string };
    expect(b.instance_id === name, `instance_id "${b.instance_id}", asked for "${name}"`);
    expect(b.status === "starting", `status "${b.status}"`);
  }, skip);
  life.noVm = skip ?? (started ? undefined : "the start failed");
  const running = await k.run("status goes from starting to running", async () => {
    const deadline = Date.now() + (o.bootTimeoutMs ?? 180_000);
    const seen = new Set<string>();
    while (true) {
      const ex = await k.call("GET", `/status/${name}`);
      expect(ex.status === 200, `status ${ex.status} ${JSON.stringify(ex.body)}`);
      const s = ex.body as { state: string; reason?: string; devices: Life["devices"] };
      seen.add(s.state);
      if (s.state === "running") {
        life.devices = s.devices;
        return [...seen].join(" -> ");
      }
      expect(s.state === "starting", `state "${s.state}": ${s.reason ?? ""}`);
      expect(Date.now() < deadline, "not running in time");
      await new Promise((r) => setTimeout(r, 200));
    }
  }, life.noVm);
  life.noRun = life.noVm ?? (running ? undefined : "the instance did not run");
  await k.run("a second start with the same name is 409", async () => {
    const ex = await k.call("POST", "/start", {
      manifest: o.manifest,
      overrides: { ...(o.overrides ?? {}), name },
    });
    wantError(ex, 409, "POST /start of a taken name");
  }, life.noRun);
  await k.run("GET /logs shows the console", async () => {
    const deadline = Date.now() + 60_000;
    while (true) {
      const ex = await k.call("GET", `/logs/${name}`);
      expect(ex.status === 200, `status ${ex.status}`);
      const recs = ex.body as { line: string }[];
      if (recs.length) return `${recs.length} line(s)`;
      expect(Date.now() < deadline, "no console line");
      await new Promise((r) => setTimeout(r, 500));
    }
  }, life.noRun);
  return life;
}

async function runningCases(k: Kit, life: Life): Promise<void> {
  const { name, devices } = life;
  await k.run("POST /inject writes into a region and is bounds-checked", async () => {
    const d = devices[0];
    const inject = (device: string, offset: number, data: string) =>
      k.call("POST", "/inject", { instance_id: name, content: { mmio: { device, offset, data } } });
    const ok = await inject(d.name, 0, btoa("OVMS"));
    expect(ok.status === 200, `status ${ok.status} ${JSON.stringify(ok.body)}`);
    expect((ok.body as { bytes_written: number }).bytes_written === 4, "bytes_written");
    wantError(await inject(d.name, d.size - 2, btoa("OVMS")), 400, "an inject past the end");
    wantError(
      await inject("no-such-device", 0, btoa("x")),
      404,
      "an inject into an unknown device",
    );
  }, life.noRun ?? (devices.length ? undefined : "the manifest has no ivshmem device"));
  await k.run("logs?follow=true streams until the VM ends, and POST /stop stops it", async () => {
    const res = await k.client.request("GET", `/logs/${name}?follow=true`);
    expect(res.status === 200, `follow: status ${res.status}`);
    const type = res.headers.get("content-type");
    const body = res.text();
    const stop = await k.call("POST", "/stop", { instance_id: name, timeout_ms: 30_000 });
    expect(stop.status === 200, `stop: status ${stop.status} ${JSON.stringify(stop.body)}`);
    const sb = stop.body as { status: string; state: string };
    expect(sb.status === "ok" && sb.state === "stopped", `stop: ${JSON.stringify(sb)}`);
    const recs = (await body).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
    k.problems.push(...k.validator.check("GET", `/logs/${name}`, res.status, type, recs));
    expect(recs.length > 0, "the followed stream was empty");
    return `${recs.length} record(s) streamed`;
  }, life.noRun);
  await k.run("a stopped instance refuses stop, inject and snapshot with 409", async () => {
    const st = await k.call("GET", `/status/${name}`);
    expect((st.body as { state: string }).state === "stopped", `state ${JSON.stringify(st.body)}`);
    wantError(await k.call("POST", "/stop", { instance_id: name }), 409, "stop of a stopped VM");
    wantError(
      await k.call("POST", "/inject", {
        instance_id: name,
        content: { mmio: { device: devices[0]?.name ?? "shm0", offset: 0, data: btoa("x") } },
      }),
      409,
      "inject into a stopped VM",
    );
    wantError(
      await k.call("POST", "/snapshot", { instance_id: name, tag: "conformance/snap:1" }),
      409,
      "snapshot of a stopped VM",
    );
  }, life.noRun);
  await k.run("DELETE /instances/{id} removes it", async () => {
    const ex = await k.call("DELETE", `/instances/${name}`);
    expect(ex.status === 200, `status ${ex.status} ${JSON.stringify(ex.body)}`);
    wantError(await k.call("GET", `/status/${name}`), 404, "status after delete");
  }, life.noVm);
}
