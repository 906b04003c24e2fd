/**
 * RAM snapshots, measured (issue 6). One counting guest (busybox sh printing
 * a line every 200 ms; TCG, 1 vCPU) is booted and snapshotted, then:
 *
 * - `pool`: starts from a warm pool, request → vCPU running and → the
 *   guest's next console byte; p50/p99 over `--runs`
 *   (request → vCPU running is the QMP RESUME event, before state.json is
 *   rewritten; "returned" includes that write).
 * - `restore`: restore without a pool (template cached) vs a cold boot of the
 *   same artifact, to running and to the first console byte.
 * - `sizes`: snapshot create and first restore (decode included) at 256 MiB,
 *   1 GiB, 4 GiB guest memory (`--sizes 256,1024,4096`).
 * - `pss`: summed PSS (and RSS) of 1, 4, 8 clones of one snapshot.
 *
 *   deno run -A bench/snapshot_restore.ts [--only pool,restore,sizes,pss] [--runs 40]
 */
import { parseArgs } from "node:util";
import { removeInstance, startInstance, stopInstance } from "../src/runtime/mod.ts";
import { snapshotInstance, WarmPool } from "../src/runtime/mod.ts";
import { dropTemplate } from "../src/runtime/mod.ts";
import { instancePaths } from "../src/runtime/mod.ts";
import { loadArtifact } from "../src/store/mod.ts";
import { counterHome, lastCount } from "../tests/_helpers/snapshot.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    only: { type: "string" },
    runs: { type: "string" },
    sizes: { type: "string" },
  },
});
const only = new Set((values.only ?? "pool,restore,sizes,pss").split(","));
const RUNS = Number(values.runs ?? 40);
const SIZES = (values.sizes ?? "256,1024,4096").split(",").map(Number);
const VM = { cpus: 1, accel: "tcg" as const, net: "none" as const };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
}
const f = (n: number) => n.toFixed(1);

async function consoleByte(home: string, id: string, t0: number): Promise<number> {
  const path = instancePaths(home, id).consoleLog;
  while (performance.now() - t0 < 60_000) {
    const st = await Deno.stat(path).catch(() => undefined);
    if (st && st.size > 0) return performance.now() - t0;
    await sleep(1);
  }
  throw new Error(`no console output from ${id}`);
}

async function bootCounting(
  h: Awaited<ReturnType<typeof counterHome>>,
  memoryBytes: number,
): Promise<string> {
  const s = await startInstance(h.store, h.ref, { ...VM, memoryBytes, detach: true });
  while (((await lastCount(h.home, s.state.id)) ?? 0) < 3) await sleep(100);
  return s.state.id;
}

async function discard(home: string, id: string): Promise<void> {
  await stopInstance(home, id, { force: true }).catch(() => {});
  await removeInstance(home, id, { force: true }).catch(() => {});
}

async function pss(pid: number): Promise<{ pss: number; rss: number }> {
  const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
  const kb = (k: string) => Number(text.match(new RegExp(`^${k}:\\s+(\\d+) kB`, "m"))?.[1] ?? 0);
  return { pss: kb("Pss") * 1024, rss: kb("Rss") * 1024 };
}

await using h = await counterHome();
const { home, store } = h;
const MiB = 1 << 20;

if (only.has("pool") || only.has("restore") || only.has("pss")) {
  const src = await bootCounting(h, 256 * MiB);
  const snap = await snapshotInstance(home, src, { tag: "bench/counter:snap", after: "stop" });

  if (only.has("pool")) {
    await using pool = new WarmPool(home, { size: 2 });
    await pool.fill(snap.ref);
    const running: number[] = [], returned: number[] = [], firstByte: number[] = [];
    const steps: Record<string, number[]> = {};
    for (let i = 0; i < RUNS; i++) {
      await pool.settled();
      await sleep(50);
      const t0 = performance.now();
      let atRunning = 0;
      const s = await startInstance(store, snap.ref, {
        pool,
        trace: (step, ms) => {
          (steps[step] ??= []).push(ms);
          if (step.startsWith("load device state") || step.startsWith("cont the")) {
            atRunning = performance.now() - t0;
          }
        },
      });
      returned.push(performance.now() - t0);
      running.push(atRunning);
      firstByte.push(await consoleByte(home, s.state.id, t0));
      await discard(home, s.state.id);
    }
    console.log(`warm pool (size 2), ${RUNS} starts, 256 MiB guest:`);
    console.log(
      `  request -> vCPU running (QMP RESUME seen): p50 ${f(pct(running, 50))} ms  p99 ${
        f(pct(running, 99))
      } ms  min ${f(Math.min(...running))} ms`,
    );
    console.log(
      `  request -> startInstance returned (state.json written): p50 ${
        f(pct(returned, 50))
      } ms  p99 ${f(pct(returned, 99))} ms`,
    );
    console.log(
      `  request -> next console byte: p50 ${f(pct(firstByte, 50))} ms  p99 ${
        f(pct(firstByte, 99))
      } ms`,
    );
    for (const [k, v] of Object.entries(steps)) console.log(`    ${k}: p50 ${f(pct(v, 50))} ms`);
  }

  if (only.has("restore")) {
    const n = Math.min(RUNS, 10);
    const restoreRun: number[] = [], restoreByte: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const s = await startInstance(store, snap.ref, {});
      restoreRun.push(performance.now() - t0);
      restoreByte.push(await consoleByte(home, s.state.id, t0));
      await discard(home, s.state.id);
    }
    const coldByte: number[] = [], coldCount: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const s = await startInstance(store, h.ref, { ...VM, memoryBytes: 256 * MiB, detach: true });
      coldByte.push(performance.now() - t0);
      while (!(await lastCount(home, s.state.id))) await sleep(5);
      coldCount.push(performance.now() - t0);
      await discard(home, s.state.id);
    }
    console.log(`restore without pool (${n} runs, template cached) vs cold boot (3 runs):`);
    console.log(
      `  restore -> running p50 ${f(pct(restoreRun, 50))} ms; -> console byte p50 ${
        f(pct(restoreByte, 50))
      } ms`,
    );
    console.log(
      `  cold -> first console byte p50 ${f(pct(coldByte, 50))} ms; -> first "count" line p50 ${
        f(pct(coldCount, 50))
      } ms`,
    );
    console.log(
      `  ratio cold(first count) / restore(running): ${
        f(pct(coldCount, 50) / pct(restoreRun, 50))
      }x`,
    );
  }

  if (only.has("pss")) {
    for (const k of [1, 4, 8]) {
      const ids: string[] = [];
      for (let i = 0; i < k; i++) ids.push((await startInstance(store, snap.ref, {})).state.id);
      await sleep(2000);
      let sum = 0, rss = 0;
      for (const id of ids) {
        const st = JSON.parse(await Deno.readTextFile(instancePaths(home, id).state));
        const m = await pss(st.pid);
        sum += m.pss;
        rss += m.rss;
      }
      console.log(
        `${k} clone(s): PSS total ${(sum / MiB).toFixed(1)} MiB (${
          (sum / k / MiB).toFixed(1)
        } per clone), RSS total ${(rss / MiB).toFixed(1)} MiB`,
      );
      for (const id of ids) await discard(home, id);
    }
  }
  await dropTemplate((await loadArtifact(store, snap.ref)).manifest.ramSnapshot!.ref);
}

if (only.has("sizes")) {
  for (const mib of SIZES) {
    const src = await bootCounting(h, mib * MiB);
    const t0 = performance.now();
    let paused = 0;
    const snap = await snapshotInstance(home, src, {
      tag: `bench/counter:${mib}`,
      onProgress: (m) => {
        if (m.startsWith("compressing")) paused = performance.now() - t0;
      },
    });
    const create = performance.now() - t0;
    const a = await loadArtifact(store, snap.ref);
    // The snapshot left its template in the cache; measure a real decode.
    await dropTemplate(a.manifest.ramSnapshot!.ref);
    const blob = (await store.stat(a.manifest.ramSnapshot!.ref)).size;
    const t1 = performance.now();
    const r1 = await startInstance(store, snap.ref, {});
    const first = performance.now() - t1;
    await discard(home, r1.state.id);
    const t2 = performance.now();
    const r2 = await startInstance(store, snap.ref, {});
    const second = performance.now() - t2;
    await discard(home, r2.state.id);
    await discard(home, src);
    console.log(
      `${mib} MiB: snapshot ${f(create)} ms (source paused ${f(paused)} ms; ramsnap ${
        (blob / MiB).toFixed(1)
      } MiB), first restore (decode) ${f(first)} ms, cached restore ${f(second)} ms`,
    );
    await dropTemplate(a.manifest.ramSnapshot!.ref);
    await store.untag(snap.ref);
    await store.gc();
  }
}
