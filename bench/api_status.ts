/**
 * `GET /status/{id}` over the UNIX socket with concurrent clients: requests
 * per second and p50/p99 latency, next to `GET /healthz` (the HTTP floor:
 * no controller work). The instance is a stopped one written to a temp home
 * (state.json read + refresh + disk usage walk; no VM needed). The server is
 * a real `ovm serve` process; the clients share this process's event loop.
 *
 *   deno run -A bench/api_status.ts [--requests 4000] [--clients 1,4,16]
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { OvmsClient, socketLive } from "../src/api/mod.ts";
import { InstanceStore } from "../src/runtime/mod.ts";
import { ContentStore } from "../src/store/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "4000" },
    clients: { type: "string", default: "1,4,16" },
  },
});
const total = Number(values.requests);
const levels = values.clients!.split(",").map(Number);

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

const home = await Deno.makeTempDir({ prefix: "ovm-bench-api-" });
const sockDir = await Deno.makeTempDir({ dir: "/tmp", prefix: "ovm-bench-" });
try {
  await ContentStore.open(home);
  const d = `sha256:${"ab".repeat(32)}` as const;
  const instances = new InstanceStore(home);
  await instances.create("bench");
  await Deno.mkdir(instances.paths("bench").vmDir, { recursive: true });
  await Deno.writeTextFile(instances.paths("bench").consoleLog, "booted\n");
  const now = new Date().toISOString();
  await instances.write({
    schemaVersion: 1,
    id: "bench",
    ref: "bench/x:1",
    manifestDigest: d,
    name: "bench/x",
    version: "1",
    adapter: "qemu",
    state: "stopped",
    kernelDigest: d,
    accel: "tcg",
    memoryBytes: 256 << 20,
    cpus: 1,
    network: { mode: "none", publish: [] },
    devices: [],
    detached: true,
    createdAt: now,
    startedAt: now,
    stoppedAt: now,
  });
  const socket = join(sockDir, "ovm.sock");
  const serve = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("../main.ts", import.meta.url).pathname,
      "serve",
      "--home",
      home,
      "--socket",
      socket,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  while (!(await socketLive(socket))) await new Promise((r) => setTimeout(r, 50));
  const server = { path: socket };
  console.log(`| endpoint | clients | requests | req/s | p50 ms | p99 ms |`);
  console.log(`|---|---|---|---|---|---|`);
  for (const path of ["/healthz", "/status/bench"]) {
    for (const n of levels) {
      const clients = Array.from({ length: n }, () => new OvmsClient({ socket: server.path }));
      // Warm the connections.
      await Promise.all(clients.map(async (c) => (await c.request("GET", path)).body?.cancel()));
      const lat: number[] = [];
      let left = total;
      const t0 = performance.now();
      await Promise.all(clients.map(async (c) => {
        while (left-- > 0) {
          const s = performance.now();
          const res = await c.request("GET", path);
          await res.arrayBuffer();
          if (res.status !== 200) throw new Error(`${path}: ${res.status}`);
          lat.push(performance.now() - s);
        }
      }));
      const secs = (performance.now() - t0) / 1000;
      lat.sort((a, b) => a - b);
      console.log(
        `| GET ${path.replace("bench", "{id}")} | ${n} | ${lat.length} | ${
          (lat.length / secs).toFixed(0)
        } | ${pct(lat, 0.5).toFixed(3)} | ${pct(lat, 0.99).toFixed(3)} |`,
      );
      for (const c of clients) c.close();
    }
  }
  serve.kill("SIGTERM");
  await serve.status;
} finally {
  await Deno.remove(sockDir, { recursive: true }).catch(() => {});
  await Deno.remove(home, { recursive: true }).catch(() => {});
}
