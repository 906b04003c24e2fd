/**
 * The OVMS origin's own checks (tests/testdata/openvms-origin/, copied from
 * ccheshirecat/openvms): its Go conformance test ported to Deno, ovm's
 * OpenAPI document against the origin's paths and schemas, real answers of a
 * running `ovm serve` (QEMU under TCG) validated against the origin's
 * response schemas, and ovm-produced manifests against its manifest.v1.json.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Ajv } from "ajv";
import { parse } from "yaml";
import { parseManifest } from "../../src/manifest/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { ResponseValidator } from "../../src/api/validate.ts";
import { ovmsState } from "../../src/api/wire.ts";
import { OvmsStateSchema, StateSchema } from "../../src/api/schemas.ts";
import { getInstance } from "../../src/runtime/mod.ts";
import { getAdapter } from "../../src/vmm/mod.ts";
import { buildDemoArtifact } from "../../examples/demo/build.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";
import { killAll, waitFor } from "../_helpers/runtime.ts";
import { dropTemplates } from "../_helpers/snapshot.ts";
import { packDummy } from "../_helpers/registry.ts";
import {
  CheckedClient,
  OPENAPI_FILE,
  serveProcess,
  socketIn,
  specValidator,
  tempSocketDir,
} from "../_helpers/api.ts";

const ORIGIN = new URL("../testdata/openvms-origin/", import.meta.url).pathname;
const ORIGIN_OPENAPI = join(ORIGIN, "spec", "api", "ovms-runtime.openapi.yaml");
const ORIGIN_MANIFEST_SCHEMA = join(ORIGIN, "spec", "schemas", "manifest.v1.json");
const ORIGIN_EXAMPLE = join(ORIGIN, "spec", "examples", "ubuntu-manifest.json");
const EXAMPLES = new URL("../../examples/", import.meta.url).pathname;

/** The paths `TestOpenAPIPresent` (tests/conformance/main_test.go) looks for. */
const ORIGIN_PATHS = [
  "/start",
  "/stop",
  "/snapshot",
  "/status/{instance_id}",
  "/logs/{instance_id}",
];

type OpenApi = {
  openapi: string;
  paths: Record<string, Record<string, { parameters?: { name: string; in: string }[] }>>;
  components: {
    schemas: Record<
      string,
      {
        required?: string[];
        properties?: Record<string, { enum?: string[]; [k: string]: unknown }>;
      }
    >;
  };
};

async function originDoc(): Promise<OpenApi> {
  return parse(await Deno.readTextFile(ORIGIN_OPENAPI)) as OpenApi;
}

/** Validators for the origin's component schemas (OpenAPI 3.0: a JSON Schema subset). */
async function originSchemas(): Promise<(name: string, value: unknown) => string[]> {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addSchema({ ...(await originDoc()), $id: "origin" });
  return (name, value) => {
    const v = ajv.getSchema(`origin#/components/schemas/${name}`)!;
    return v(value) ? [] : [`${name}: ${ajv.errorsText(v.errors)}`];
  };
}

/** The origin's manifest.v1.json (draft-07), with `date-time` checked, not ignored. */
async function originManifestValidator(): Promise<(doc: unknown) => string[]> {
  const ajv = new Ajv({ allErrors: true });
  ajv.addFormat(
    "date-time",
    (s: string) =>
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i.test(s) &&
      !Number.isNaN(Date.parse(s)),
  );
  const v = ajv.compile(JSON.parse(await Deno.readTextFile(ORIGIN_MANIFEST_SCHEMA)));
  return (doc) => v(doc) ? [] : [ajv.errorsText(v.errors)];
}

async function configOf(store: ContentStore, ref: string): Promise<unknown> {
  const art = await loadArtifact(store, ref);
  return JSON.parse(new TextDecoder().decode(await store.readBlob(art.config.digest)));
}

// ---- tests/conformance/main_test.go, ported ----

Deno.test("the origin's TestExampleManifestBasicShape: its example has schemaVersion 1, the OVMS media type and the required fields", async () => {
  const m = JSON.parse(await Deno.readTextFile(ORIGIN_EXAMPLE)) as Record<string, unknown>;
  assert.equal(m.schemaVersion, 1);
  assert.equal(m.mediaType, "application/vnd.ovms.manifest.v1+json");
  for (const k of ["name", "version", "kernel", "diskLayers"]) assert.ok(k in m, `missing ${k}`);
  assert.deepEqual((await originManifestValidator())(m), []);
  // ovm reads the same shape but wants real digests; the example's placeholders are named.
  assert.throws(
    () => parseManifest(JSON.stringify(m), "origin example"),
    (e) => e instanceof ValidationError && /"kernel\.ref": must be a digest/.test(e.message),
  );
});

Deno.test("the origin's TestOpenAPIPresent path checks hold for its document and for ovm's", async () => {
  const origin = await Deno.readTextFile(ORIGIN_OPENAPI);
  assert.ok(origin.includes("openapi: 3.0.3"), "the origin declares OpenAPI 3.0.3");
  const ovm = await Deno.readTextFile(OPENAPI_FILE);
  for (const path of ORIGIN_PATHS) {
    assert.ok(origin.includes(`${path}:`), `origin: missing path ${path}`);
    assert.ok(ovm.includes(`${path}:`), `ovm: missing path ${path}`);
  }
  // The one deliberate difference (spec 11.6): ovm's schemas are JSON Schema
  // 2020-12, which OpenAPI 3.1 carries; 3.0.3 cannot say e.g. nullable unions.
  assert.match(ovm, /^openapi: 3\.1\.\d+$/m);
});

Deno.test("ovm's OpenAPI document has every origin operation, accepts the origin's requests and answers within its enums", async () => {
  const origin = await originDoc();
  const ovm = parse(await Deno.readTextFile(OPENAPI_FILE)) as OpenApi;
  for (const [path, ops] of Object.entries(origin.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const mine = ovm.paths[path]?.[method];
      assert.ok(mine, `ovm lacks ${method.toUpperCase()} ${path}`);
      const names = (p?: { name: string; in: string }[]) =>
        (p ?? []).filter((x) => x.in === "path").map((x) => x.name);
      assert.deepEqual(names(mine.parameters), names(op.parameters), `${path} path parameters`);
    }
  }
  // Every field of an origin request is one ovm takes, and ovm requires no more.
  for (const name of ["StartRequest", "StopRequest", "SnapshotRequest"]) {
    const theirs = origin.components.schemas[name];
    const ours = ovm.components.schemas[name];
    for (const field of Object.keys(theirs.properties ?? {})) {
      assert.ok(field in (ours.properties ?? {}), `${name}.${field}`);
    }
    for (const field of ours.required ?? []) {
      assert.ok((theirs.required ?? []).includes(field), `ovm requires ${name}.${field}`);
    }
  }
  const states = origin.components.schemas.InstanceStatus.properties!.state.enum!;
  const statuses = origin.components.schemas.OperationResult.properties!.status.enum!;
  for (const name of ["StatusResponse", "StartResponse", "StopResponse"]) {
    const p = ovm.components.schemas[name].properties!;
    if (p.state) assert.deepEqual(p.state.enum!.filter((s) => !states.includes(s)), [], name);
    if (name !== "StatusResponse") {
      assert.deepEqual(p.status.enum!.filter((s) => !statuses.includes(s)), [], name);
    }
  }
  assert.deepEqual(ovm.components.schemas.StatusResponse.required?.includes("instance_id"), true);
  // Each of ovm's states has an origin state, and the origin's five are ovm's wire states.
  assert.deepEqual(OvmsStateSchema.options, states);
  for (const s of StateSchema.options) assert.ok(states.includes(ovmsState(s)), s);
  assert.equal(ovmsState("paused"), "running");
});

Deno.test("ovm-produced manifests and ovm's examples validate against the origin's manifest.v1.json", async () => {
  const check = await originManifestValidator();
  const home = await Deno.makeTempDir({ prefix: "ovm-origin-" });
  try {
    await packDummy(home, "origin/dummy:1");
    const store = await ContentStore.open(home);
    assert.deepEqual(check(await configOf(store, "origin/dummy:1")), []);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
  let n = 0;
  for await (const e of Deno.readDir(EXAMPLES)) {
    if (!e.name.endsWith("-manifest.json") || e.name.startsWith("container")) continue;
    const doc = JSON.parse(await Deno.readTextFile(join(EXAMPLES, e.name)));
    assert.deepEqual(check(doc), [], e.name);
    n++;
  }
  assert.ok(n >= 2, "examples were found");
});

Deno.test({
  name: "a running ovm serve answers within the origin's response schemas",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const home = await Deno.makeTempDir({ prefix: "ovm-origin-vm-" });
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    const origin = ResponseValidator.fromYaml(await Deno.readTextFile(ORIGIN_OPENAPI));
    const schema = await originSchemas();
    const manifestCheck = await originManifestValidator();
    let serve = undefined as Awaited<ReturnType<typeof serveProcess>> | undefined;
    try {
      const artifact = await buildDemoArtifact(home, {
        cacheDir: TEST_CACHE,
        tag: "origin/demo:1",
        devices: false,
        // A guest that keeps running until it is stopped.
        diffFiles: { "demo.sh": "#!/bin/sh\necho origin-ready\nwhile true; do sleep 1; done\n" },
      });
      const store = await ContentStore.open(home);
      assert.deepEqual(manifestCheck(await configOf(store, artifact.ref)), [], "demo manifest");
      serve = await serveProcess(home, socket);
      // Every answer is also checked against ovm's own OpenAPI document.
      using c = new CheckedClient(socket, await specValidator());
      const overrides = { memory: "256M", accel: "tcg", cpus: 1 };

      await t.step("start answers an InstanceStatus that is also an OperationResult", async () => {
        const start = await c.call("POST", "/start", {
          manifest: artifact.ref,
          overrides: { ...overrides, name: "origin" },
        });
        assert.equal(start.status, 202, JSON.stringify(start.body));
        assert.deepEqual(schema("InstanceStatus", start.body), []);
        assert.deepEqual(schema("OperationResult", start.body), []);
        assert.equal(start.body.status, "starting");
      });

      await t.step("status validates while it boots and once it runs", async () => {
        let last: unknown;
        await waitFor(async () => {
          const st = await c.call("GET", "/status/origin");
          last = st.body;
          assert.deepEqual(
            origin.check("GET", "/status/origin", st.status, st.type, st.body),
            [],
            JSON.stringify(st.body),
          );
          return st.body.state === "running" ? st : undefined;
        }, { what: "the instance to run", timeoutMs: 120_000 }).catch((e) => {
          throw new Error(
            `${e.message}; last status ${
              JSON.stringify(last)
            }; ovm serve said:\n${serve?.stderr()}`,
            { cause: e },
          );
        });
      });

      await t.step("logs are NDJSON, one JSON record per line", async () => {
        const text = await waitFor(async () => {
          const res = await c.client.request("GET", "/logs/origin");
          assert.equal(res.headers.get("content-type")?.split(";")[0], "application/x-ndjson");
          const t = await res.text();
          return t.trim()
            ? { t, type: res.headers.get("content-type"), status: res.status }
            : undefined;
        }, { what: "console output", timeoutMs: 60_000 });
        assert.deepEqual(origin.check("GET", "/logs/origin", text.status, text.type, [text.t]), []);
        for (const line of text.t.split("\n").filter((l) => l.trim())) {
          const rec = JSON.parse(line);
          assert.equal(typeof rec, "object", line);
        }
      });

      await t.step(
        "a paused instance is running to the origin, paused in runtime_state",
        async () => {
          const vm = (await getInstance(home, "origin")).vm!;
          await getAdapter("qemu").pause(vm);
          try {
            const st = await c.call("GET", "/status/origin");
            assert.deepEqual(
              origin.check("GET", "/status/origin", st.status, st.type, st.body),
              [],
            );
            assert.equal(st.body.state, "running");
            assert.equal(st.body.runtime_state, "paused");
          } finally {
            await getAdapter("qemu").resume(vm);
          }
        },
      );

      let snapshotRef = "";
      await t.step(
        "snapshot with only instance_id (the tag is optional) answers a SnapshotResult",
        async () => {
          const snap = await c.call("POST", "/snapshot", { instance_id: "origin" });
          assert.equal(snap.status, 200, JSON.stringify(snap.body));
          assert.deepEqual(
            origin.check("POST", "/snapshot", snap.status, snap.type, snap.body),
            [],
          );
          assert.match(snap.body.tag, /^origin:snapshot-\d{8}T\d{6}Z$/);
          snapshotRef = snap.body.tag;
          assert.deepEqual(
            manifestCheck(await configOf(store, snapshotRef)),
            [],
            "snapshot manifest",
          );
        },
      );

      await t.step("stop answers an OperationResult", async () => {
        const stop = await c.call("POST", "/stop", { instance_id: "origin", timeout_ms: 30_000 });
        assert.equal(stop.status, 200, JSON.stringify(stop.body));
        assert.deepEqual(origin.check("POST", "/stop", stop.status, stop.type, stop.body), []);
        assert.equal(stop.body.status, "ok");
        assert.equal(stop.body.state, "stopped");
        const st = await c.call("GET", "/status/origin");
        assert.deepEqual(origin.check("GET", "/status/origin", st.status, st.type, st.body), []);
        assert.equal(st.body.state, "stopped");
      });

      await t.step(
        "start?wait=true of the snapshot answers 200 with an InstanceStatus",
        async () => {
          const start = await c.call("POST", "/start?wait=true", {
            manifest: snapshotRef,
            overrides: { ...overrides, name: "restored" },
          });
          assert.equal(start.status, 200, JSON.stringify(start.body));
          assert.deepEqual(
            origin.check("POST", "/start", start.status, start.type, start.body),
            [],
          );
          assert.deepEqual(schema("OperationResult", start.body), []);
          assert.equal(start.body.state, "running");
          const stop = await c.call("POST", "/stop", { instance_id: "restored", force: true });
          assert.deepEqual(origin.check("POST", "/stop", stop.status, stop.type, stop.body), []);
        },
      );
    } finally {
      await serve?.[Symbol.asyncDispose]();
      await killAll(home);
      // The decoded template lives in the host-wide tmpfs cache, not in home.
      await dropTemplates(await ContentStore.open(home)).catch(() => {});
      await Deno.remove(home, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
