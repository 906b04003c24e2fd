/**
 * `ctr run` to the workload's first output, through a real containerd 1.6
 * (own root/state/sockets under a temp dir, as the shim tests run it):
 *
 * - `ovm`: `ctr run --rm --runtime io.containerd.ovm.v2 IMAGE ID sh -c 'echo first'`
 *   — the shim mounts the snapshot, builds the ext4 disk and artifact, boots
 *   the VM under TCG; time from spawning ctr to "first" on its stdout, and to
 *   ctr's exit.
 * - `ovm-snapshot`: the same with `--annotation io.ovms.artifact=` a RAM
 *   snapshot of a counting guest (restored, no warm pool), to the first
 *   "count" line; the task is then killed.
 * - `ovm-pool`: the same snapshot with the node's `ovm serve --warm-snapshot
 *   --warm-pool 1` answering on containerd's `$OVM_SOCKET`, so the shim takes
 *   the pool's prepared VM; each run waits until the pool has refilled.
 * - `runc`: the same image and command under containerd's default runtime
 *   (`io.containerd.runc.v2`, Debian's runc), the peer.
 *
 *   deno run -A bench/shim_ctr_run.ts [--runs 5]
 */
import { parseArgs } from "node:util";
import { TEST_IMAGE, TestContainerd } from "../tests/_helpers/containerd.ts";
import { serveProcess } from "../tests/_helpers/api.ts";
import { ovmIn, waitFor } from "../tests/_helpers/runtime.ts";
import { dropTemplates, lastCount, packCounter, pooledQemus } from "../tests/_helpers/snapshot.ts";
import { ContentStore } from "../src/store/mod.ts";

// Unique: guest RAM files in /dev/shm are named by instance id, across homes.
const SRC = `shim-src-${crypto.randomUUID().slice(0, 8)}`;

const { values } = parseArgs({ args: Deno.args, options: { runs: { type: "string" } } });
const runs = Number(values.runs ?? "5");

/** Spawns ctr; resolves with the ms to the first stdout match and to exit. */
async function timeCtr(
  c: TestContainerd,
  args: string[],
  match: RegExp,
  onMatch?: () => Promise<void>,
): Promise<{ first: number; exit: number; code: number }> {
  const t0 = performance.now();
  const child = new Deno.Command("ctr", {
    args: ["--address", c.socket, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let first = NaN;
  let text = "";
  const dec = new TextDecoder();
  const err = new Response(child.stderr).text();
  for await (const chunk of child.stdout) {
    text += dec.decode(chunk, { stream: true });
    if (Number.isNaN(first) && match.test(text)) {
      first = performance.now() - t0;
      await onMatch?.();
    }
  }
  const st = await child.status;
  if (Number.isNaN(first)) throw new Error(`no ${match} in ctr output: ${text} ${await err}`);
  return { first, exit: performance.now() - t0, code: st.code };
}

/** `ctr run` of the counting snapshot (through the pool when `ovm serve` answers), to its first count. */
function snapshotTask(c: TestContainerd, id: string) {
  const args = ["run", "--rm", "--runtime", "io.containerd.ovm.v2"];
  args.push("--annotation", "io.ovms.artifact=bench/counter:warm", TEST_IMAGE, id, "/bin/true");
  return timeCtr(c, args, /count \d+/, async () => {
    await c.ctr("task", "kill", "--signal", "SIGKILL", id);
  });
}

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const med = s[Math.floor(s.length / 2)];
  return `median ${(med / 1000).toFixed(2)} s (min ${(s[0] / 1000).toFixed(2)}, max ${
    (s[s.length - 1] / 1000).toFixed(2)
  })`;
}

// Other processes share the host: sample its 1-minute load average through the run.
const loads: number[] = [];
const sampleLoad = async () =>
  loads.push(Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]));
await sampleLoad();
const sampler = setInterval(() => void sampleLoad(), 5000);

await using c = await TestContainerd.start();
const store = await ContentStore.open(c.home);
try {
  const ref = await packCounter(store);
  const run = await ovmIn(c.home, "run", "-d", "--name", SRC, "--memory", "256M", ref);
  if (run.code !== 0) throw new Error(`ovm run: ${run.stderr}`);
  await waitFor(async () => ((await lastCount(c.home, SRC)) ?? 0) > 3 || undefined, {
    timeoutMs: 120_000,
    what: "the counting guest",
  });
  const snap = await ovmIn(c.home, "snapshot", SRC, "-t", "bench/counter:warm");
  if (snap.code !== 0) throw new Error(snap.stderr);
  await ovmIn(c.home, "rm", "-f", SRC);

  const results: Record<string, { first: number[]; exit: number[] }> = {};
  const add = (k: string, r: { first: number; exit: number }) => {
    results[k] ??= { first: [], exit: [] };
    results[k].first.push(r.first);
    results[k].exit.push(r.exit);
  };
  const cmd = ["/bin/sh", "-c", "echo first"];
  const mem = ["--memory-limit", String(256 << 20)];
  for (let i = 0; i < runs; i++) {
    add(
      "runc",
      await timeCtr(c, ["run", "--rm", ...mem, TEST_IMAGE, `b-runc-${i}`, ...cmd], /first/),
    );
    add(
      "ovm",
      await timeCtr(
        c,
        [
          "run",
          "--rm",
          "--runtime",
          "io.containerd.ovm.v2",
          ...mem,
          TEST_IMAGE,
          `b-ovm-${i}`,
          ...cmd,
        ],
        /first/,
      ),
    );
    add("ovm-snapshot", await snapshotTask(c, `b-snap-${i}`));
  }
  // The warm pool last: while `ovm serve` answers, every snapshot task goes through it.
  const serve = await serveProcess(
    c.home,
    c.ovmSocket,
    "--warm-snapshot",
    "bench/counter:warm",
    "--warm-pool",
    "1",
  );
  try {
    for (let i = 0; i < runs; i++) {
      await waitFor(async () => (await pooledQemus(c.home)).length === 1 || undefined, {
        timeoutMs: 180_000,
        what: "the warm pool to hold a prepared VM",
      });
      add("ovm-pool", await snapshotTask(c, `b-pool-${i}`));
    }
  } finally {
    await serve.stop("SIGTERM");
  }
  console.log(`ctr run to first output, ${runs} runs each (${new Date().toISOString()}):`);
  console.log(
    `  host load average (1 min) during the run: ${Math.min(...loads).toFixed(1)}–${
      Math.max(...loads).toFixed(1)
    }, mean ${
      (loads.reduce((a, b) => a + b, 0) / loads.length).toFixed(1)
    }, ${navigator.hardwareConcurrency} CPUs`,
  );
  for (const [k, v] of Object.entries(results)) {
    console.log(`  ${k.padEnd(13)} first output ${stats(v.first)}; ctr exit ${stats(v.exit)}`);
  }
  const med = (k: string) => [...results[k].first].sort((a, b) => a - b)[Math.floor(runs / 2)];
  console.log(
    `  ratios (first output): ovm/runc ${(med("ovm") / med("runc")).toFixed(1)}x, ` +
      `ovm-snapshot/runc ${(med("ovm-snapshot") / med("runc")).toFixed(1)}x, ` +
      `ovm-pool/runc ${(med("ovm-pool") / med("runc")).toFixed(1)}x`,
  );
} finally {
  clearInterval(sampler);
  await dropTemplates(store);
}
