/**
 * @module
 * Contract checking for the Cloud Hypervisor and Firecracker adapters: the
 * official API documents, copied into `tests/testdata/vendor-specs/` (see
 * its README for source, version and licence), parsed with `yaml`, every request body and
 * every response body validated with `ajv` against the operation's schema.
 * Object schemas are tightened to refuse undeclared properties, so a
 * misspelt field fails here instead of being ignored by a real VMM.
 *
 * Also two fake VMM API servers (test code): small state machines that
 * accept only what the document allows, answer with bodies that satisfy it,
 * and record every request with its violations.
 */
import { Ajv } from "ajv";
import { parse } from "yaml";
import { dirname, join } from "node:path";

export const VENDOR_SPECS = new URL("../testdata/vendor-specs/", import.meta.url).pathname;

type Json = Record<string, unknown>;

function tighten(node: unknown): void {
  if (Array.isArray(node)) {
    for (const n of node) tighten(n);
    return;
  }
  if (!node || typeof node !== "object") return;
  const o = node as Json;
  if (o.properties && typeof o.properties === "object" && o.additionalProperties === undefined) {
    o.additionalProperties = false;
  }
  for (const v of Object.values(o)) tighten(v);
}

export interface Violation {
  method: string;
  path: string;
  where: "request" | "response";
  message: string;
}

/** One vendor API document, ready to validate requests and responses. */
export class ApiContract {
  readonly doc: Json;
  readonly basePath: string;
  readonly #ajv: Ajv;
  readonly #id: string;
  readonly #swagger2: boolean;

  constructor(doc: Json, id: string) {
    this.doc = doc;
    this.#id = id;
    this.#swagger2 = doc.swagger === "2.0";
    this.basePath = this.#swagger2
      ? ""
      : new URL(((doc.servers as { url: string }[])?.[0]?.url) ?? "http://localhost").pathname
        .replace(/\/$/, "");
    const schemaDoc = structuredClone(doc);
    tighten(this.#swagger2 ? schemaDoc.definitions : (schemaDoc.components as Json)?.schemas);
    // Only the schema parts are given to ajv (the rest is not JSON Schema).
    const root = this.#swagger2
      ? { definitions: schemaDoc.definitions }
      : { components: { schemas: (schemaDoc.components as Json).schemas } };
    this.#ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
    this.#ajv.addKeyword("example");
    this.#ajv.addSchema(root, id);
  }

  static async load(file: "cloud-hypervisor.yaml" | "firecracker.yaml"): Promise<ApiContract> {
    const doc = parse(await Deno.readTextFile(join(VENDOR_SPECS, file))) as Json;
    return new ApiContract(doc, file);
  }

  /** The operation for `method path` (path without the base path), matching `{param}` segments. */
  operation(method: string, path: string): Json | undefined {
    const paths = this.doc.paths as Record<string, Json>;
    for (const [tpl, item] of Object.entries(paths)) {
      const re = new RegExp(`^${tpl.replace(/\{[^}]+\}/g, "[^/]+")}$`);
      if (re.test(path)) return item[method.toLowerCase()] as Json | undefined;
    }
    return undefined;
  }

  #validate(schema: Json, value: unknown): string[] {
    // Refs in the document are local (`#/...`): resolve them against the added root.
    const wrapped = JSON.parse(
      JSON.stringify(schema).replaceAll('"$ref":"#/', `"$ref":"${this.#id}#/`),
    );
    const v = this.#ajv.compile(wrapped);
    if (v(value)) return [];
    return (v.errors ?? []).map((e) =>
      `${e.instancePath || "(body)"} ${e.message}${
        e.params && "additionalProperty" in e.params
          ? ` "${(e.params as { additionalProperty: string }).additionalProperty}"`
          : ""
      }`
    );
  }

  requestBodySchema(op: Json): { schema?: Json; required: boolean } {
    if (this.#swagger2) {
      const p = ((op.parameters as Json[]) ?? []).find((p) => p.in === "body");
      return { schema: p?.schema as Json | undefined, required: !!p?.required };
    }
    const rb = op.requestBody as Json | undefined;
    const schema = (rb?.content as Record<string, Json> | undefined)?.["application/json"]
      ?.schema as Json | undefined;
    return { schema, required: !!rb?.required };
  }

  /** Problems with a request (empty when it follows the document). */
  checkRequest(method: string, path: string, body: unknown): string[] {
    const op = this.operation(method, path);
    if (!op) return [`${method} ${path} is not an operation of ${this.#id}`];
    const { schema, required } = this.requestBodySchema(op);
    if (body === undefined) return required ? ["the request body is required"] : [];
    if (!schema) return ["the operation takes no request body"];
    return this.#validate(schema, body);
  }

  /** Problems with a response the fake is about to send. */
  checkResponse(method: string, path: string, status: number, body: unknown): string[] {
    const op = this.operation(method, path);
    if (!op) return [];
    const responses = op.responses as Record<string, Json>;
    const r = responses[String(status)] ?? responses.default;
    if (!r) return [`status ${status} is not a documented response`];
    const schema = this.#swagger2
      ? r.schema as Json | undefined
      : (r.content as Record<string, Json> | undefined)?.["application/json"]?.schema as
        | Json
        | undefined;
    if (!schema) return body === undefined || typeof body === "string" ? [] : ["undocumented body"];
    if (body === undefined) return ["the documented response body is missing"];
    return this.#validate(schema, body);
  }
}

export interface RecordedCall {
  method: string;
  path: string;
  body?: unknown;
  status: number;
  violations: Violation[];
}

type Reply = { status: number; body?: unknown };

/** A fake VMM API: contract checks around a small state machine. */
export abstract class FakeVmm {
  readonly contract: ApiContract;
  readonly calls: RecordedCall[] = [];
  /** `METHOD /path` → reply that replaces the state machine's (error injection). */
  readonly failures: Record<string, Reply> = {};
  onCall?: (c: RecordedCall) => void;
  exitRequested = false;

  constructor(contract: ApiContract) {
    this.contract = contract;
  }

  protected abstract route(method: string, path: string, body: unknown): Reply | Promise<Reply>;

  readonly handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const method = req.method;
    let path = url.pathname;
    const violations: Violation[] = [];
    if (this.contract.basePath) {
      if (!path.startsWith(this.contract.basePath + "/")) {
        violations.push({ method, path, where: "request", message: "outside the API base path" });
      }
      path = path.slice(this.contract.basePath.length);
    }
    const text = await req.text();
    let body: unknown = undefined;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        violations.push({ method, path, where: "request", message: "body is not JSON" });
      }
    }
    for (const m of this.contract.checkRequest(method, path, body)) {
      violations.push({ method, path, where: "request", message: m });
    }
    let reply: Reply;
    if (violations.length) {
      reply = this.errorReply(400, violations.map((v) => v.message).join("; "));
    } else {
      reply = this.failures[`${method} ${path}`] ?? await this.route(method, path, body);
    }
    for (const m of this.contract.checkResponse(method, path, reply.status, reply.body)) {
      violations.push({ method, path, where: "response", message: m });
    }
    const call = { method, path, body, status: reply.status, violations };
    this.calls.push(call);
    this.onCall?.(call);
    if (reply.body === undefined) return new Response(null, { status: reply.status });
    return typeof reply.body === "string"
      ? new Response(reply.body, { status: reply.status })
      : Response.json(reply.body, { status: reply.status });
  };

  abstract errorReply(status: number, message: string): Reply;
}

function writeFileSync(path: string, text: string) {
  Deno.mkdirSync(dirname(path), { recursive: true });
  Deno.writeTextFileSync(path, text);
}

function fileUrlPath(url: string): string {
  if (!url.startsWith("file://")) throw new Error(`not a file URL: ${url}`);
  return url.slice("file://".length);
}

/** Cloud Hypervisor's API (`/api/v1`), its VM states and snapshot files. */
export class FakeCloudHypervisor extends FakeVmm {
  state: "None" | "Created" | "Running" | "Paused" | "Shutdown" = "None";
  config?: Json;

  errorReply(status: number, message: string): Reply {
    return { status, body: message };
  }

  protected route(method: string, path: string, body: unknown): Reply {
    const op = `${method} ${path}`;
    switch (op) {
      case "GET /vmm.ping":
        return {
          status: 200,
          body: { version: "v53.0-fake", build_version: "fake", pid: Deno.pid },
        };
      case "PUT /vm.create":
        if (this.state !== "None") return this.errorReply(405, "VM already created");
        this.config = body as Json;
        this.state = "Created";
        return { status: 204 };
      case "PUT /vm.boot": {
        if (this.state !== "Created") return this.errorReply(404, "VM is not created");
        this.state = "Running";
        const serial = (this.config?.serial as Json | undefined)?.file as string | undefined;
        if (serial) {
          Deno.writeTextFileSync(serial, "fake cloud-hypervisor guest booted\n", { append: true });
        }
        return { status: 204 };
      }
      case "GET /vm.info":
        if (this.state === "None") return this.errorReply(404, "VM is not created");
        return {
          status: 200,
          body: { config: this.config, state: this.state, memory_actual_size: 0 },
        };
      case "PUT /vm.pause":
        if (this.state !== "Running") return this.errorReply(405, `VM is ${this.state}`);
        this.state = "Paused";
        return { status: 204 };
      case "PUT /vm.resume":
        if (this.state !== "Paused") return this.errorReply(405, `VM is ${this.state}`);
        this.state = "Running";
        return { status: 204 };
      case "PUT /vm.snapshot": {
        if (this.state !== "Paused") return this.errorReply(405, "VM must be paused");
        const dir = fileUrlPath((body as Json).destination_url as string);
        writeFileSync(join(dir, "config.json"), JSON.stringify(this.config));
        writeFileSync(join(dir, "state.json"), JSON.stringify({ fake: true }));
        const mem = (this.config?.memory as Json | undefined)?.size as number;
        using f = Deno.openSync(join(dir, "memory-ranges"), { write: true, create: true });
        f.truncateSync(mem);
        return { status: 204 };
      }
      case "PUT /vm.restore": {
        if (this.state !== "None") return this.errorReply(404, "VM already created");
        const dir = fileUrlPath((body as Json).source_url as string);
        this.config = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
        Deno.statSync(join(dir, "memory-ranges"));
        Deno.statSync(join(dir, "state.json"));
        this.state = (body as Json).resume ? "Running" : "Paused";
        return { status: 204 };
      }
      case "PUT /vm.power-button":
        if (this.state !== "Running") return this.errorReply(405, `VM is ${this.state}`);
        // The guest powers off; the VMM exits with it.
        this.state = "Shutdown";
        this.exitRequested = true;
        return { status: 204 };
      case "PUT /vm.shutdown":
        if (this.state === "None") return this.errorReply(404, "VM is not created");
        this.state = "Shutdown";
        return { status: 204 };
      case "PUT /vmm.shutdown":
        this.exitRequested = true;
        return { status: 204 };
    }
    return this.errorReply(404, `fake cloud-hypervisor does not implement ${op}`);
  }
}

/** Firecracker's API (at the root), its pre-boot configuration and snapshots. */
export class FakeFirecracker extends FakeVmm {
  state: "Not started" | "Running" | "Paused" = "Not started";
  restored = false;
  bootSource?: Json;
  machine?: Json;
  serialOut?: string;
  drives: Record<string, Json> = {};
  netIfaces: Record<string, Json> = {};

  errorReply(status: number, message: string): Reply {
    return { status, body: { fault_message: message } };
  }

  protected route(method: string, path: string, body: unknown): Reply {
    const b = body as Json;
    const preBoot = this.state === "Not started" && !this.restored;
    const iface = /^\/network-interfaces\/([^/]+)$/.exec(path);
    if (iface && method === "PUT") {
      if (!preBoot) return this.errorReply(400, "network interfaces can be added before boot only");
      if (b.iface_id !== iface[1]) return this.errorReply(400, "iface_id differs from the path");
      this.netIfaces[iface[1]] = b;
      return { status: 204 };
    }
    const drive = /^\/drives\/([^/]+)$/.exec(path);
    if (drive) {
      if (method === "PUT") {
        if (!preBoot) return this.errorReply(400, "drives can be added before boot only");
        if (b.drive_id !== drive[1]) return this.errorReply(400, "drive_id differs from the path");
        this.drives[drive[1]] = b;
        return { status: 204 };
      }
      if (preBoot) return this.errorReply(400, "drives can be patched after boot only");
      if (!this.drives[drive[1]]) return this.errorReply(400, `no drive "${drive[1]}"`);
      this.drives[drive[1]] = { ...this.drives[drive[1]], ...b };
      return { status: 204 };
    }
    switch (`${method} ${path}`) {
      case "GET /":
        return {
          status: 200,
          body: {
            app_name: "Firecracker",
            id: "anonymous-instance",
            state: this.state,
            vmm_version: "1.17.0-fake",
          },
        };
      case "GET /version":
        return { status: 200, body: { firecracker_version: "1.17.0-fake" } };
      case "PUT /boot-source":
        if (!preBoot) return this.errorReply(400, "pre-boot only");
        this.bootSource = b;
        return { status: 204 };
      case "PUT /machine-config":
        if (!preBoot) return this.errorReply(400, "pre-boot only");
        this.machine = b;
        return { status: 204 };
      case "PUT /serial":
        if (!preBoot) return this.errorReply(400, "pre-boot only");
        this.serialOut = b.serial_out_path as string;
        return { status: 204 };
      case "GET /vm/config":
        return {
          status: 200,
          body: {
            ...(this.bootSource ? { "boot-source": this.bootSource } : {}),
            ...(this.machine ? { "machine-config": this.machine } : {}),
            drives: Object.values(this.drives),
            "network-interfaces": Object.values(this.netIfaces),
          },
        };
      case "PUT /actions":
        if (b.action_type === "InstanceStart") {
          if (!preBoot || !this.bootSource) {
            return this.errorReply(400, "the microVM is already started or has no boot source");
          }
          this.state = "Running";
          if (this.serialOut) {
            Deno.writeTextFileSync(this.serialOut, "fake firecracker guest booted\n", {
              append: true,
            });
          }
          return { status: 204 };
        }
        if (b.action_type === "SendCtrlAltDel") {
          if (this.state !== "Running") return this.errorReply(400, "the microVM is not running");
          this.exitRequested = true;
          return { status: 204 };
        }
        return { status: 204 };
      case "PATCH /vm":
        if (this.state === "Not started") return this.errorReply(400, "the microVM is not started");
        this.state = b.state === "Paused" ? "Paused" : "Running";
        return { status: 204 };
      case "PUT /snapshot/create": {
        if (this.state !== "Paused") return this.errorReply(400, "the microVM must be paused");
        writeFileSync(
          b.snapshot_path as string,
          JSON.stringify({ machine: this.machine, drives: this.drives, netIfaces: this.netIfaces }),
        );
        using f = Deno.openSync(b.mem_file_path as string, { write: true, create: true });
        f.truncateSync(((this.machine?.mem_size_mib as number) ?? 1) << 20);
        return { status: 204 };
      }
      case "PUT /snapshot/load": {
        if (!preBoot || this.bootSource) {
          return this.errorReply(400, "loading a snapshot needs a fresh microVM");
        }
        const saved = JSON.parse(Deno.readTextFileSync(b.snapshot_path as string));
        const backend = b.mem_backend as Json;
        Deno.statSync(backend.backend_path as string);
        this.machine = saved.machine;
        this.drives = saved.drives;
        this.netIfaces = saved.netIfaces ?? {};
        for (const o of (b.network_overrides ?? []) as Json[]) {
          const n = this.netIfaces[o.iface_id as string];
          if (!n) {
            return this.errorReply(400, `the snapshot has no network interface "${o.iface_id}"`);
          }
          n.host_dev_name = o.host_dev_name;
        }
        this.restored = true;
        this.state = b.resume_vm ? "Running" : "Paused";
        return { status: 204 };
      }
    }
    return this.errorReply(400, `fake firecracker does not implement ${method} ${path}`);
  }
}

/** Serves `fake` on a UNIX socket until disposed. */
export function serveFake(
  fake: FakeVmm,
  socket: string,
): { server: Deno.HttpServer } & AsyncDisposable {
  const server = Deno.serve({ path: socket, transport: "unix", onListen() {} }, fake.handler);
  return {
    server,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(socket).catch(() => {});
    },
  };
}
