/**
 * The runtime API without VMs: the socket's modes and stale/live handling,
 * the OpenAPI file against the zod schemas, and every refusal (bad JSON,
 * unknown fields, path-like ids, oversized bodies, wrong-state actions) with
 * its status and message — every response checked against the OpenAPI file.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openApiYaml, runConformance } from "../../src/api/mod.ts";
import { type InstanceState, InstanceStore } from "../../src/runtime/mod.ts";
import { runCli } from "../../src/cli/app.ts";
import {
  CheckedClient,
  OPENAPI_FILE,
  serveProcess,
  socketIn,
  specValidator,
  startServer,
  tempSocketDir,
} from "../_helpers/api.ts";

async function tempHome(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "ovm-api-home-" });
}

/** A stopped instance on disk, as `ovm run` leaves one (no VM needed). */
async function stoppedInstance(home: string, id: string): Promise<void> {
  const d = `sha256:${"ab".repeat(32)}` as InstanceState["manifestDigest"];
  const instances = new InstanceStore(home);
  await instances.create(id);
  await Deno.mkdir(instances.paths(id).vmDir, { recursive: true });
  await Deno.writeTextFile(instances.paths(id).consoleLog, "booted\nOVMS-EXIT: 0\n");
  await instances.write({
    schemaVersion: 1,
    id,
    ref: "demo/busybox:1.0",
    manifestDigest: d,
    name: "demo/busybox",
    version: "1.0",
    adapter: "qemu",
    state: "stopped",
    reason: "the guest powered off",
    kernelDigest: d,
    accel: "tcg",
    memoryBytes: 256 * 1024 * 1024,
    cpus: 1,
    network: { mode: "none", publish: [] },
    devices: [{ type: "ivshmem", name: "shm0", size: 4096, mmioAddr: "0x0" }],
    detached: true,
    createdAt: new Date().toISOString(),
    startedAt: new Date().toISOString(),
    stoppedAt: new Date().toISOString(),
    exitCode: 0,
  });
}

Deno.test("the OpenAPI file is the document generated from the zod schemas", async () => {
  assert.equal(await Deno.readTextFile(OPENAPI_FILE), openApiYaml());
});

Deno.test({
  name: "the socket is 0600 in a 0700 directory from the moment it exists",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = join(dir, "sub", "ovm.sock");
    const modes = new Set<number>();
    let watching = true;
    // Watch the final path while the server comes up: any mode it ever shows counts.
    const watcher = (async () => {
      while (watching) {
        const st = await Deno.lstat(socket).catch(() => undefined);
        if (st) modes.add(st.mode! & 0o777);
        await new Promise((r) => setTimeout(r, 0));
      }
    })();
    try {
      await using _s = await startServer(home, socket);
      watching = false;
      await watcher;
      assert.equal((await Deno.lstat(socket)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(join(dir, "sub"))).mode! & 0o777, 0o700);
      modes.add((await Deno.lstat(socket)).mode! & 0o777);
      assert.deepEqual([...modes], [0o600]);
      // Nothing else is left in the directory (the private bind directory is gone).
      assert.deepEqual(
        (await Array.fromAsync(Deno.readDir(join(dir, "sub")))).map((e) => e.name).sort(),
        ["ovm.sock", "ovm.sock.lock"],
      );
      assert.equal((await Deno.stat(`${socket}.lock`)).mode! & 0o777, 0o600);
    } finally {
      watching = false;
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "of two servers started at once on one path, exactly one serves",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    try {
      const race = await Promise.allSettled([
        startServer(home, socket),
        startServer(home, socket),
      ]);
      const won = race.filter((r) => r.status === "fulfilled");
      assert.equal(won.length, 1);
      const lost = race.find((r) => r.status === "rejected") as PromiseRejectedResult;
      assert.match(lost.reason.message, new RegExp(`"${socket}"`));
      await (won[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof startServer>>>).value[
        Symbol.asyncDispose
      ]();
      // Once it is gone the path is free again.
      await using _again = await startServer(home, socket);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "a stale socket is replaced, a live one is refused naming its path",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    try {
      // A stale socket: bound by a process that died without removing it.
      const dead = await new Deno.Command("python3", {
        args: ["-c", "import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", socket],
      }).output();
      assert.ok(dead.success);
      assert.ok((await Deno.lstat(socket)).isSocket);
      await using _first = await startServer(home, socket);
      using c = new CheckedClient(socket, await specValidator());
      assert.equal((await c.call("GET", "/healthz")).status, 200);
      await assert.rejects(
        startServer(home, socket),
        (e: Error) => e.message.includes(`already listening on "${socket}"`),
      );
      // Two more racing for the same path: both refused while the first holds it.
      const race = await Promise.allSettled([
        startServer(home, socket),
        startServer(home, socket),
      ]);
      assert.deepEqual(race.map((r) => r.status), ["rejected", "rejected"]);
      // The CLI says the same, exit code 1.
      const err: string[] = [];
      const code = await runCli(["serve", "--home", home, "--socket", socket], {
        stdout: { writeSync: (b) => b.byteLength, isTerminal: () => false },
        stderr: {
          writeSync: (b) => {
            err.push(new TextDecoder().decode(b));
            return b.byteLength;
          },
          isTerminal: () => false,
        },
      });
      assert.notEqual(code, 0);
      assert.match(err.join(""), new RegExp(`already listening on "${socket}"`));
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "bad requests get the right status, code and message",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    try {
      await stoppedInstance(home, "done");
      await using _s = await startServer(home, socket);
      using c = new CheckedClient(socket, await specValidator());

      await t.step("bad JSON is 400 bad_request", async () => {
        const r = await c.call("POST", "/start", undefined, { raw: '{"manifest": ' });
        assert.equal(r.status, 400);
        assert.equal(r.body.error.code, "bad_request");
        assert.match(r.body.error.message, /not JSON/);
      });
      await t.step("an unknown field is 400 and named, nested ones too", async () => {
        let r = await c.call("POST", "/start", { manifest: "x:1", extra: true });
        assert.equal(r.status, 400);
        assert.equal(r.body.error.code, "validation");
        assert.equal(r.body.error.message, 'Unknown field "extra"');
        r = await c.call("POST", "/start", { manifest: "x:1", overrides: { gpus: 1 } });
        assert.equal(r.body.error.message, 'Unknown field "overrides.gpus"');
        r = await c.call("POST", "/start", { manifest: "x:1", overrides: { cpus: "two" } });
        assert.equal(r.status, 400);
        assert.match(r.body.error.message, /Invalid "overrides.cpus"/);
      });
      await t.step("path-like instance ids are 400 before any path is built", async () => {
        for (const p of ["/status/..%2F..%2Fetc", "/logs/..%2Fstate.json", "/status/A"]) {
          const r = await c.call("GET", p);
          assert.equal(r.status, 400, p);
          assert.match(r.body.error.message, /^Invalid instance id "/);
        }
        const r = await c.call("POST", "/stop", { instance_id: "../../etc/passwd" });
        assert.equal(r.status, 400);
        assert.match(r.body.error.message, /Invalid "instance_id"/);
        const d = await c.call("DELETE", "/instances/..%2F..%2Fstore");
        assert.equal(d.status, 400);
        // Nothing outside the instances dir was touched.
        assert.ok((await Deno.stat(join(home, "store"))).isDirectory);
      });
      await t.step("a 10 MiB body is 413 (declared and sent)", async () => {
        const big = new Uint8Array(10 * 1024 * 1024).fill(0x20);
        let r;
        try {
          r = await c.call("POST", "/start", undefined, {
            raw: big,
            headers: { "content-type": "application/json" },
          });
        } catch (e) {
          // A server that refuses before reading may close while the body is still going.
          assert.fail(`the 413 did not arrive: ${(e as Error).message}`);
        }
        assert.equal(r.status, 413);
        assert.equal(r.body.error.code, "payload_too_large");
        assert.match(r.body.error.message, /exceeds 1048576 bytes/);
        // /inject takes up to 16 MiB: the same 10 MiB is parsed (and refused as invalid, 400).
        const inj = await c.call("POST", "/inject", undefined, {
          raw: big,
          headers: { "content-type": "application/json" },
        });
        assert.equal(inj.status, 400);
      });
      await t.step("unknown things are 404, wrong methods 405", async () => {
        assert.equal((await c.call("GET", "/status/nope")).status, 404);
        const r = await c.call("GET", "/status/nope");
        assert.equal(r.body.error.message, 'No instance "nope"');
        assert.equal((await c.call("GET", "/nowhere")).status, 404);
        const m = await c.call("GET", "/start");
        assert.equal(m.status, 405);
        assert.match(m.body.error.message, /GET is not allowed on "\/start"/);
        const s = await c.call("POST", "/start", { manifest: "no/such:1" });
        assert.equal(s.status, 404);
        assert.match(s.body.error.message, /no\/such:1/);
      });
      await t.step("actions invalid in the instance's state are 409", async () => {
        const stop = await c.call("POST", "/stop", { instance_id: "done" });
        assert.equal(stop.status, 409);
        assert.equal(stop.body.error.code, "conflict");
        assert.equal(stop.body.error.message, 'Instance "done" is stopped');
        const snap = await c.call("POST", "/snapshot", { instance_id: "done", tag: "a/b:1" });
        assert.equal(snap.status, 409);
        assert.match(snap.body.error.message, /Cannot snapshot instance "done": it is stopped/);
        const inj = await c.call("POST", "/inject", {
          instance_id: "done",
          content: { mmio: { device: "shm0", offset: 0, data: "AAAA" } },
        });
        assert.equal(inj.status, 409);
        const taken = await c.call("POST", "/start", {
          manifest: "no/such:1",
          overrides: { name: "done" },
        });
        assert.equal(taken.status, 409);
        assert.equal(taken.body.error.message, 'Instance "done" already exists');
      });
      await t.step("a stopped instance's status, logs and removal", async () => {
        const s = await c.call("GET", "/status/done");
        assert.equal(s.status, 200);
        assert.equal(s.body.state, "stopped");
        assert.equal(s.body.exit_code, 0);
        assert.equal(s.body.metrics.cpu_time_ms, null);
        assert.ok(s.body.metrics.disk_bytes > 0);
        const logs = await c.call("GET", "/logs/done");
        assert.equal(logs.type, "application/x-ndjson");
        assert.deepEqual(logs.body, [
          { offset: 0, line: "booted" },
          { offset: 7, line: "OVMS-EXIT: 0" },
        ]);
        const tail = await c.call("GET", "/logs/done?offset=7");
        assert.deepEqual(tail.body, [{ offset: 7, line: "OVMS-EXIT: 0" }]);
        const list = await c.call("GET", "/instances");
        assert.deepEqual(list.body.instances.map((i: { instance_id: string }) => i.instance_id), [
          "done",
        ]);
        const del = await c.call("DELETE", "/instances/done");
        assert.deepEqual(del.body, { instance_id: "done", removed: true });
        assert.equal((await c.call("GET", "/status/done")).status, 404);
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "the conformance kit passes against ovm serve without a manifest, and SIGTERM removes the socket",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    try {
      await using serve = await serveProcess(home, socket);
      const results = await runConformance(socket, { validator: await specValidator() });
      const failed = results.filter((r) => !r.ok);
      assert.deepEqual(failed, []);
      assert.ok(results.filter((r) => !r.skipped).length >= 10);
      assert.equal(await serve.stop("SIGTERM"), 0, serve.stderr());
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name: "the CLI acts through the server $OVM_SOCKET names, and directly without one",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    const run = async (env: Record<string, string>, ...argv: string[]) => {
      let out = "";
      const code = await runCli([...argv, "--home", home], {
        env: { get: (k) => env[k] },
        stdout: {
          writeSync: (b) => {
            out += new TextDecoder().decode(b);
            return b.byteLength;
          },
          isTerminal: () => false,
        },
        stderr: { writeSync: (b) => b.byteLength, isTerminal: () => false },
      });
      return { code, out };
    };
    try {
      await stoppedInstance(home, "done");
      await using _s = await startServer(home, socket);
      // Through the server: the API's instance summaries.
      const via = await run({ OVM_SOCKET: socket }, "ps", "-a", "--json");
      assert.equal(via.code, 0);
      assert.deepEqual(JSON.parse(via.out).map((s: { instance_id: string }) => s.instance_id), [
        "done",
      ]);
      const logs = await run({ OVM_SOCKET: socket }, "logs", "done");
      assert.equal(logs.out, "booted\nOVMS-EXIT: 0\n");
      // No server named (and none on the default path for this home): state.json records.
      const direct = await run({ OVM_SOCKET: join(dir, "none.sock") }, "ps", "-a", "--json");
      assert.equal(direct.code, 0);
      assert.deepEqual(JSON.parse(direct.out).map((s: { id: string }) => s.id), ["done"]);
      // An explicit --socket with nobody behind it is an error, not a silent fallback.
      const missing = await run({}, "ps", "--socket", join(dir, "none.sock"));
      assert.notEqual(missing.code, 0);
    } finally {
      await Deno.remove(dir, { recursive: true });
      await Deno.remove(home, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "POST /start of an artifact the admission policy refuses is 403 with the reason, and nothing starts",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { packDummy } = await import("../_helpers/registry.ts");
    const home = await tempHome();
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    try {
      await packDummy(home, "demo/unsigned:1.0");
      // Signatures required for demo/**, with a key nobody signed with.
      const { generateKeyPairSync } = await import("node:crypto");
      const pub = generateKeyPairSync("ec", { namedCurve: "P-256" }).publicKey
        .export({ type: "spki", format: "pem" });
      await Deno.writeTextFile(join(home, "trusted.pub"), pub as string);
      await Deno.writeTextFile(
        join(home, "policy.json"),
        JSON.stringify({
          version: 1,
          default: "deny",
          rules: [{ match: "demo/**", keys: ["trusted.pub"], requireSignature: true }],
        }),
      );
      await using _s = await startServer(home, socket);
      using c = new CheckedClient(socket, await specValidator());
      const r = await c.call("POST", "/start", { manifest: "demo/unsigned:1.0" });
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal(r.body.error.code, "policy");
      assert.match(r.body.error.message, /signature/i);
      const list = await c.call("GET", "/instances");
      assert.equal(list.status, 200);
      assert.deepEqual(list.body.instances ?? list.body, []);
    } finally {
      await Deno.remove(home, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
