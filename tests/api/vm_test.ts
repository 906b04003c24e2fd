/**
 * The runtime API with real VMs under QEMU TCG, all through the socket of a
 * real `ovm serve` process: one artifact (the demo, whose workload watches
 * its ivshmem region and prints what it reads) is built once; two VMs boot.
 * Every response the test receives directly is checked against the OpenAPI file.
 */
import assert from "node:assert/strict";
import { runConformance } from "../../src/api/mod.ts";
import { buildDemoArtifact } from "../../examples/demo/build.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";
import { dropTemplates } from "../_helpers/snapshot.ts";
import { ContentStore } from "../../src/store/mod.ts";
import { isVmProcess, killAll, ovmIn, waitFor } from "../_helpers/runtime.ts";
import {
  CheckedClient,
  serveProcess,
  socketIn,
  specValidator,
  tempSocketDir,
} from "../_helpers/api.ts";

/** The guest: finds the ivshmem BAR, then prints the 8 bytes at offset 64 whenever they change. */
const WATCH = `#!/bin/sh
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ]; then
    a=$(sed -n 3p "$d/resource" | cut -d' ' -f1)
    echo 1 > "$d/enable"
  fi
done
echo "guest-ready bar=$a"
last=""
while true; do
  v="$(devmem $((a + 64)) 32) $(devmem $((a + 68)) 32)"
  if [ "$v" != "$last" ]; then echo "guest-read $v"; last="$v"; fi
  sleep 0.2
done
`;

const VM = { memory: "256M", accel: "tcg", cpus: 1 };

Deno.test({
  name: "ovm serve drives real VMs through its socket",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const home = await Deno.makeTempDir({ prefix: "ovm-api-vm-" });
    const dir = await tempSocketDir();
    const socket = socketIn(dir);
    const v = await specValidator();
    let serve = undefined as Awaited<ReturnType<typeof serveProcess>> | undefined;
    try {
      const artifact = await buildDemoArtifact(home, {
        cacheDir: TEST_CACHE,
        tag: "api/watch:1",
        diffFiles: { "demo.sh": WATCH },
      });
      serve = await serveProcess(home, socket);
      using c = new CheckedClient(socket, v);
      let pid = 0;

      await t.step(
        "start, status running, logs show the console, inject reaches the guest",
        async () => {
          // `ovm run -d` through the server (the CLI as a client).
          const run = await ovmIn(
            home,
            "run",
            "-d",
            "--socket",
            socket,
            "--memory",
            "256M",
            "--accel",
            "tcg",
            "--name",
            "life",
            artifact.ref,
          );
          assert.equal(run.code, 0, run.stderr);
          assert.equal(run.stdout.trim(), "life");
          const st = await c.call("GET", "/status/life");
          assert.equal(st.status, 200);
          assert.equal(st.body.state, "running");
          assert.equal(st.body.manifest_digest, artifact.digest);
          assert.ok(await isVmProcess(st.body.pid));
          pid = st.body.pid;
          assert.ok(st.body.metrics.rss_bytes > 0);
          assert.ok(st.body.metrics.pss_bytes > 0);
          assert.equal(typeof st.body.metrics.cpu_time_ms, "number");
          assert.ok(st.body.metrics.boot_ms > 0);
          assert.ok(st.body.uptime_ms >= 0);
          assert.deepEqual(st.body.devices, [{ type: "ivshmem", name: "shm0", size: 1048576 }]);

          await waitFor(async () => {
            const logs = await c.call("GET", "/logs/life");
            return logs.body.some((r: { line: string }) => r.line.startsWith("guest-read"))
              ? true
              : undefined;
          }, { what: "the guest's first read", timeoutMs: 120_000 });
          const inj = await c.call("POST", "/inject", {
            instance_id: "life",
            content: {
              mmio: { device: "shm0", offset: 64, data: btoa("OVMSINJ!") },
            },
          });
          assert.equal(inj.status, 200, JSON.stringify(inj.body));
          assert.deepEqual(inj.body, {
            instance_id: "life",
            device: "shm0",
            offset: 64,
            bytes_written: 8,
          });
          // "OVMS" and "INJ!" as little-endian 32-bit words.
          await waitFor(async () => {
            const logs = await c.call("GET", "/logs/life");
            return logs.body.some((r: { line: string }) =>
                r.line.includes("guest-read 0x534D564F 0x214A4E49")
              )
              ? true
              : undefined;
          }, { what: "the guest to read the injected bytes", timeoutMs: 60_000 });
          const past = await c.call("POST", "/inject", {
            instance_id: "life",
            content: { mmio: { device: "shm0", offset: 1048576 - 4, data: btoa("12345678") } },
          });
          assert.equal(past.status, 400);
          assert.match(past.body.error.message, /overflows device "shm0"/);
          // The CLI as a client: ps and logs through the socket.
          const ps = await ovmIn(home, "ps", "--json", "--socket", socket);
          assert.equal(ps.code, 0, ps.stderr);
          assert.deepEqual(
            JSON.parse(ps.stdout).map((s: { instance_id: string; state: string }) => [
              s.instance_id,
              s.state,
            ]),
            [["life", "running"]],
          );
          const logs = await ovmIn(home, "logs", "--socket", socket, "life");
          assert.match(logs.stdout, /guest-ready bar=/);
        },
      );

      await t.step(
        "a VM with an ivshmem device is snapshotted through the API and keeps running",
        async () => {
          // Its region is host state: a restore gets a fresh one (spec 8.3).
          const snap = await c.call("POST", "/snapshot", {
            instance_id: "life",
            tag: "api/watch-snap:1",
          });
          assert.equal(snap.status, 200, JSON.stringify(snap.body));
          const st = await c.call("GET", "/status/life");
          assert.equal(st.body.state, "running");
          assert.equal(st.body.pid, pid);
        },
      );

      await t.step("a SIGKILLed server's successor reattaches to the running VM", async () => {
        assert.notEqual(await serve!.stop("SIGKILL"), 0);
        assert.ok(await isVmProcess(pid));
        serve = await serveProcess(home, socket);
        // The line follows the socket; stderr is read asynchronously.
        const started = serve;
        await waitFor(
          () => /reattached to 1 running instance/.test(started.stderr()) ? true : undefined,
          { what: "the reattach line", timeoutMs: 10_000 },
        );
        const st = await c.call("GET", "/status/life");
        assert.equal(st.body.state, "running");
        assert.equal(st.body.pid, pid);
      });

      await t.step("the conformance kit passes with a booting manifest", async () => {
        const results = await runConformance(socket, {
          manifest: artifact.ref,
          overrides: { memory: VM.memory, accel: VM.accel },
          validator: v,
        });
        assert.deepEqual(results.filter((r) => !r.ok), []);
        assert.equal(results.filter((r) => r.skipped).length, 0);
      });

      await t.step(
        "concurrent start, stop and status from several clients keep one story; SIGTERM finishes them",
        async () => {
          const clients = Array.from({ length: 4 }, () => new CheckedClient(socket, v));
          try {
            const stops = clients.slice(0, 3).map((k) =>
              k.call("POST", "/stop", { instance_id: "life", timeout_ms: 30_000 })
            );
            const starts = clients.slice(0, 2).map((k) =>
              k.call("POST", "/start", {
                manifest: artifact.ref,
                overrides: { ...VM, name: "life" },
              })
            );
            // Status from another client until the stop shows.
            const seen: string[] = [];
            for (let i = 0; i < 200; i++) {
              const s = await clients[3].call("GET", "/status/life");
              assert.equal(s.status, 200);
              seen.push(s.body.state);
              if (s.body.state !== "running") break;
              await new Promise((r) => setTimeout(r, 25));
            }
            // While the stop is in flight, SIGTERM: the server finishes what it accepted.
            const exit = serve!.stop("SIGTERM");
            const stopRes = await Promise.all(stops);
            const startRes = await Promise.all(starts);
            assert.equal(await exit, 0, serve!.stderr());
            assert.deepEqual(
              stopRes.map((r) => r.status).sort(),
              [200, 409, 409],
              JSON.stringify(stopRes.map((r) => r.body)),
            );
            const stopped = stopRes.find((r) => r.status === 200)!.body;
            assert.equal(stopped.status, "ok");
            assert.equal(stopped.state, "stopped");
            for (const r of stopRes.filter((r) => r.status === 409)) {
              assert.equal(r.body.error.message, 'Instance "life" is stopped');
            }
            assert.deepEqual(startRes.map((r) => r.status), [409, 409]);
            // States only move forward: running → stopping → stopped.
            const order = ["running", "stopping", "stopped"];
            const idx = seen.map((s) => order.indexOf(s));
            assert.ok(idx.every((x, i) => x >= 0 && (i === 0 || x >= idx[i - 1])), seen.join());
            assert.equal(await isVmProcess(pid), false);
            await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
          } finally {
            for (const k of clients) k[Symbol.dispose]();
          }
        },
      );

      await t.step("after a restart the stopped VM is reported, refused and removed", async () => {
        serve = await serveProcess(home, socket);
        const st = await c.call("GET", "/status/life");
        assert.equal(st.body.state, "stopped");
        assert.equal(st.body.uptime_ms >= 0, true);
        const stop = await ovmIn(home, "stop", "--socket", socket, "life");
        assert.notEqual(stop.code, 0);
        assert.match(stop.stderr, /Instance "life" is stopped/);
        assert.equal((await c.call("DELETE", "/instances/life")).status, 200);
        assert.deepEqual((await c.call("GET", "/instances")).body, { instances: [] });
      });
    } finally {
      await serve?.[Symbol.asyncDispose]();
      await killAll(home);
      // The snapshot step left its template in the host-wide cache.
      await dropTemplates(await ContentStore.open(home)).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await Deno.remove(home, { recursive: true }).catch(() => {});
    }
  },
});
