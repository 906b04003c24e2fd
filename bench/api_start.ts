/**
 * `POST /start?wait=true` of a RAM snapshot from the server's warm pool, end
 * to end over the UNIX socket (p50/p99), and what the API adds to a start:
 * the round trip minus the runtime's own share (`Server-Timing: start;dur=`,
 * the time inside `startInstance`). The API's share covers HTTP over the
 * socket, body parsing and validation, the policy check, resolving the
 * manifest, and the per-instance queue. Goal: under 1 ms.
 *
 *   deno run -A bench/api_start.ts [--runs 10]
 *
 * One counting guest (256 MiB, 1 vCPU, TCG) boots and is snapshotted through
 * the API; the pool (size 1) refills between runs, outside the measurement.
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Controller, createHandler, listen, OvmsClient } from "../src/api/mod.ts";
import { WarmPool } from "../src/runtime/mod.ts";
import { counterHome, lastCount } from "../tests/_helpers/snapshot.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string", default: "10" } },
});
const runs = Number(values.runs);
const VM = { memory: "256M", accel: "tcg" as const, cpus: 1 };

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))];
}

async function until(fn: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

await using h = await counterHome();
const sockDir = await Deno.makeTempDir({ dir: "/tmp", prefix: "ovm-bench-" });
const pool = new WarmPool(h.home, { size: 1 });
const controller = new Controller(h.store, { pool });
try {
  await using server = await listen(createHandler(controller), {
    path: join(sockDir, "ovm.sock"),
  });
  using client = new OvmsClient({ socket: server.path });
  await client.start(h.ref, { overrides: { ...VM, name: "src" }, wait: true });
  await until(async () => ((await lastCount(h.home, "src")) ?? 0) > 3, "the source to count");
  const snap = await client.snapshot("src", "bench/counter:snap");
  await client.stop("src", { force: true });
  const digest = await pool.fill("bench/counter:snap");

  const total: number[] = [];
  const inStart: number[] = [];
  const api: number[] = [];
  const floor: number[] = [];
  const handler: number[] = [];
  for (let i = 0; i < runs; i++) {
    await until(() => pool.ready(digest) >= 1, "the pool to refill");
    const body = JSON.stringify({
      manifest: "bench/counter:snap",
      overrides: { ...VM, name: `w${i}` },
    });
    const t0 = performance.now();
    const res = await client.request("POST", "/start?wait=true", {
      body,
      headers: { "content-type": "application/json" },
    });
    await res.arrayBuffer();
    const rt = performance.now() - t0;
    if (res.status !== 200) throw new Error(`start: ${res.status}`);
    const start = Number(/start;dur=([\d.]+)/.exec(res.headers.get("server-timing") ?? "")?.[1]);
    // The transport alone, under the same load (the pool refilling, the guest running).
    const h0 = performance.now();
    await (await client.request("GET", "/healthz")).arrayBuffer();
    floor.push(performance.now() - h0);
    handler.push(
      Number(/app;dur=([\d.]+)/.exec(res.headers.get("server-timing") ?? "")?.[1]) - start,
    );
    total.push(rt);
    inStart.push(start);
    api.push(rt - start);
    await client.stop(`w${i}`, { force: true });
    await client.remove(`w${i}`);
  }
  console.log(`snapshot ${snap.snapshot_ref}, ${runs} starts from the warm pool (TCG)`);
  console.log(`| measure | p50 ms | p99 ms |`);
  console.log(`|---|---|---|`);
  console.log(
    `| POST /start?wait=true round trip | ${pct(total, 0.5).toFixed(2)} | ${
      pct(total, 0.99).toFixed(2)
    } |`,
  );
  console.log(
    `| inside startInstance (pool take + restore) | ${pct(inStart, 0.5).toFixed(2)} | ${
      pct(inStart, 0.99).toFixed(2)
    } |`,
  );
  console.log(
    `| added by the API (round trip - start) | ${pct(api, 0.5).toFixed(3)} | ${
      pct(api, 0.99).toFixed(3)
    } |`,
  );
  console.log(
    `| of which in the handler (parse, policy, queue) | ${pct(handler, 0.5).toFixed(3)} | ${
      pct(handler, 0.99).toFixed(3)
    } |`,
  );
  console.log(
    `| GET /healthz right after (transport under load) | ${pct(floor, 0.5).toFixed(3)} | ${
      pct(floor, 0.99).toFixed(3)
    } |`,
  );
} finally {
  controller.close();
  await pool.close();
  await Deno.remove(sockDir, { recursive: true }).catch(() => {});
}
