/**
 * Snapshot chains, measured (issue 17). A 1 GiB guest (TCG, 1 vCPU) that
 * writes `--mib` MiB of random bytes into a tmpfs once it has counted to 25:
 *
 * - chained: boot, snapshot (flat, s1), restore, let it write, snapshot the
 *   restored VM (a diff layer, s2): time the guest was paused, RAM blob size,
 *   push time of s2 to a registry that has s1 (only the new layers go);
 * - flat: boot, let it write, snapshot (flat): the same three figures, the
 *   push into an empty repository;
 * - restore: s2 restored and snapshotted again (s3, three RAM layers); a
 *   restore of s3 with no template cached (built from its layers), and with
 *   it cached, vs the flat snapshot's.
 *
 *   deno run -A bench/snapshot_chain.ts [--mib 32]
 */
import { parseArgs } from "node:util";
import {
  dropTemplate,
  removeInstance,
  snapshotInstance,
  startInstance,
  stopInstance,
} from "../src/runtime/mod.ts";
import { loadArtifact, ramLayers } from "../src/store/mod.ts";
import { pushFromStore } from "../src/oci/mod.ts";
import { blobHashes, counterHome, lastCount, writerScript } from "../tests/_helpers/snapshot.ts";
import { startRegistry } from "../tests/_helpers/registry.ts";

const { values } = parseArgs({ args: Deno.args, options: { mib: { type: "string" } } });
const MIB = Number(values.mib ?? 32);
const VM = { cpus: 1, accel: "tcg" as const, net: "none" as const, memoryBytes: 1 << 30 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ms = (n: number) => `${n.toFixed(0)} ms`;
const mb = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;

await using h = await counterHome({ script: writerScript(25, MIB), tag: "bench/chain:1" });
await using reg = await startRegistry();
const { home, store } = h;
const run = crypto.randomUUID().slice(0, 6);

async function until(id: string, pred: () => Promise<boolean>): Promise<void> {
  const t0 = performance.now();
  while (!(await pred())) {
    if (performance.now() - t0 > 180_000) throw new Error(`${id}: timed out`);
    await sleep(100);
  }
}
const written = (id: string) => until(id, async () => (await blobHashes(home, id)).length > 0);
const counting = (id: string) => until(id, async () => ((await lastCount(home, id)) ?? 0) > 3);

/** A snapshot, timed: total, and paused (from "pausing" to the message after the source went on). */
async function snap(id: string, tag: string, after: "resume" | "stop" = "stop") {
  let paused = 0;
  let pausedAt = 0;
  const t0 = performance.now();
  const res = await snapshotInstance(home, id, {
    tag,
    after,
    onProgress: (m) => {
      if (m.startsWith("pausing")) pausedAt = performance.now();
      else if (/^(writing|compressing)/.test(m)) paused = performance.now() - pausedAt;
    },
  });
  const total = performance.now() - t0;
  const a = await loadArtifact(store, res.ref);
  const top = a.manifest.ramSnapshot!.ref;
  return { total, paused, ram: (await store.stat(top)).size, a };
}

async function restore(ref: string, drop: string[]): Promise<number> {
  for (const d of drop) await dropTemplate(d);
  const id = `bench-r-${crypto.randomUUID().slice(0, 6)}`;
  const t0 = performance.now();
  await startInstance(store, ref, { detach: true, name: id });
  const t = performance.now() - t0;
  await stopInstance(home, id, { force: true });
  await removeInstance(home, id, { force: true });
  return t;
}

// Chained: boot → s1 → restore → write → s2 (diff).
const src = `bench-src-${run}`;
await startInstance(store, h.ref, { ...VM, detach: true, name: src });
await counting(src);
const s1 = await snap(src, "bench/chain:s1");
const r1 = `bench-r1-${run}`;
await startInstance(store, "bench/chain:s1", { detach: true, name: r1 });
await written(r1);
const s2 = await snap(r1, "bench/chain:s2");
let t0 = performance.now();
await pushFromStore(store, "bench/chain:s1", `${reg.host}/bench/chain:s1`, { home });
const pushS1 = performance.now() - t0;
t0 = performance.now();
const p2 = await pushFromStore(store, "bench/chain:s2", `${reg.host}/bench/chain:s2`, { home });
const pushS2 = performance.now() - t0;

// Flat: boot → write → snapshot.
const flatSrc = `bench-flat-${run}`;
await startInstance(store, h.ref, { ...VM, detach: true, name: flatSrc });
await written(flatSrc);
const flat = await snap(flatSrc, "bench/chain:flat");
t0 = performance.now();
const pf = await pushFromStore(store, "bench/chain:flat", `${reg.host}/bench/flat:1`, { home });
const pushFlat = performance.now() - t0;

// A third layer: restore s2, snapshot it.
const r2 = `bench-r2-${run}`;
await startInstance(store, "bench/chain:s2", { detach: true, name: r2 });
await until(r2, async () => ((await lastCount(home, r2)) ?? 0) > 30);
const s3 = await snap(r2, "bench/chain:s3");
const layers3 = ramLayers(s3.a.manifest);
const chainCold = await restore("bench/chain:s3", layers3);
const chainWarm = await restore("bench/chain:s3", []);
const flatRef = flat.a.manifest.ramSnapshot!.ref;
const flatCold = await restore("bench/chain:flat", [flatRef]);
const flatWarm = await restore("bench/chain:flat", []);

console.log(`guest: 1 GiB, wrote ${MIB} MiB of random bytes after its restore (TCG, 1 vCPU)`);
console.log("| what | chained (diff layer) | flat |");
console.log("| --- | --- | --- |");
console.log(`| snapshot: guest paused | ${ms(s2.paused)} | ${ms(flat.paused)} |`);
console.log(`| snapshot: total | ${ms(s2.total)} | ${ms(flat.total)} |`);
console.log(`| RAM blob | ${mb(s2.ram)} | ${mb(flat.ram)} |`);
console.log(
  `| push (registry has the parent / empty) | ${ms(pushS2)} (${mb(p2.transferred)} sent) | ${
    ms(pushFlat)
  } (${mb(pf.transferred)} sent) |`,
);
console.log(
  `| restore, template not cached | ${ms(chainCold)} (3 layers) | ${ms(flatCold)} |`,
);
console.log(`| restore, template cached | ${ms(chainWarm)} (3 layers) | ${ms(flatWarm)} |`);
console.log(
  `(base s1: paused ${ms(s1.paused)}, RAM ${mb(s1.ram)}, push ${ms(pushS1)}; ` +
    `s3 layer: ${mb(s3.ram)}, paused ${ms(s3.paused)})`,
);
