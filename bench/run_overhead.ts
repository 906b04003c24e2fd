/**
 * `ovm run --detach` against the same QEMU command line launched directly:
 * time from spawning each to the guest's first console line, alternating runs
 * (256 MiB, 1 vCPU, TCG, the demo artifact). Also times ovm's own steps
 * in-process: manifest resolution, chain assembly (header checks), config
 * disk, overlay creation.
 *
 *   deno run -A bench/run_overhead.ts [--runs 5]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { buildDemoArtifact } from "../examples/demo/build.ts";
import { assembleChain } from "../src/runtime/mod.ts";
import { ContentStore, loadArtifact } from "../src/store/mod.ts";
import { buildConfigDisk } from "../src/system/mod.ts";

const { values } = parseArgs({ args: Deno.args, options: { runs: { type: "string" } } });
const RUNS = Number(values.runs ?? 5);
const CACHE = Deno.env.get("OVM_TEST_CACHE") ?? "/tmp/ovm-test-cache";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

const home = await Deno.makeTempDir({ prefix: "ovm-bench-run-" });
const children: Deno.ChildProcess[] = [];
/** ovm's own steps as `OVM_TRACE=1 ovm run` reports them, per step name. */
const traces: Record<string, number[]> = {};

async function firstLine(path: string, t0: number, timeoutMs = 120_000): Promise<number> {
  while (performance.now() - t0 < timeoutMs) {
    try {
      const text = await Deno.readTextFile(path);
      if (text.includes("\n")) return performance.now() - t0;
    } catch { /* not yet created */ }
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`no console line in ${path}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function runOvm(i: number): Promise<{ ms: number; argv: string[]; passFiles: string[] }> {
  const id = `bench-${i}`;
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "run",
      "--home",
      home,
      "-d",
      "--name",
      id,
      "--memory",
      "256M",
      "--accel",
      "tcg",
      "--net",
      "none",
      "demo/busybox:1.0",
    ],
    stdout: "null",
    stderr: "piped",
    env: { OVM_TRACE: "1" },
  }).spawn();
  children.push(child);
  const ms = await firstLine(join(home, "instances", id, "vm", "console.log"), t0);
  const out = await child.output();
  const err = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(err);
  for (const m of err.matchAll(/^trace: (.+): ([\d.]+) ms$/gm)) {
    (traces[m[1]] ??= []).push(Number(m[2]));
  }
  const state = JSON.parse(await Deno.readTextFile(join(home, "instances", id, "state.json")));
  await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "rm", "-f", "--home", home, id],
    stdout: "null",
    stderr: "null",
  }).output();
  return { ms, argv: state.vm.argv, passFiles: [] };
}

/** The argv ovm used, with `/proc/self/fd/N` replaced by the files the wrapper opened. */
function directArgv(argv: string[], files: string[], dir: string): string[] {
  return argv.slice(1).map((a) =>
    a.replace(/\/proc\/self\/fd\/(\d+)/g, (_, n) => files[Number(n) - 3])
      .replace(/mem-path=\/dev\/shm\/ovm-[a-z0-9-]+-/, `mem-path=/dev/shm/ovm-direct-`)
      .replace("unix:qmp.sock", `unix:${join(dir, "qmp.sock")}`)
  );
}

async function runDirect(argv: string[], files: string[], i: number): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-bench-direct-" });
  try {
    const console = join(dir, "console.log");
    const overlay = join(dir, "overlay.qcow2");
    const size = files[files.length - 1];
    await new Deno.Command("qemu-img", {
      args: ["create", "-q", "-f", "qcow2", "-o", `size=${size}`, overlay],
    }).output();
    const fileList = files.slice(0, -1).map((f) =>
      f === "CONSOLE" ? console : f === "OVERLAY" ? overlay : f
    );
    const args = directArgv(argv, fileList, dir);
    const t0 = performance.now();
    const child = new Deno.Command(argv[0], { args, stdout: "null", stderr: "piped" }).spawn();
    children.push(child);
    const ms = await firstLine(console, t0);
    child.kill("SIGKILL");
    await child.status;
    return ms;
  } finally {
    for await (const e of Deno.readDir("/dev/shm")) {
      if (e.name.startsWith("ovm-direct-")) await Deno.remove(`/dev/shm/${e.name}`);
    }
    await Deno.remove(dir, { recursive: true });
    void i;
  }
}

try {
  const artifact = await buildDemoArtifact(home, { cacheDir: CACHE });
  const store = await ContentStore.open(home);

  // ovm's own steps, in-process (median of 20).
  const steps: Record<string, number[]> = { resolve: [], chain: [], config: [], overlay: [] };
  for (let i = 0; i < 20; i++) {
    let t = performance.now();
    const a = await loadArtifact(store, artifact.ref);
    steps.resolve.push(performance.now() - t);
    t = performance.now();
    const chain = await assembleChain(store, a.manifest.diskLayers);
    steps.chain.push(performance.now() - t);
    t = performance.now();
    await buildConfigDisk(join(home, "cfg.tar"), { env: [], exposedPorts: [], cmd: ["/demo.sh"] });
    steps.config.push(performance.now() - t);
    t = performance.now();
    await new Deno.Command("qemu-img", {
      args: [
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        `size=${chain.at(-1)!.virtualSize}`,
        join(home, "o.qcow2"),
      ],
    }).output();
    steps.overlay.push(performance.now() - t);
    await Deno.remove(join(home, "o.qcow2"));
  }
  const startup = [];
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "version"],
      stdout: "null",
    }).output();
    startup.push(performance.now() - t);
  }

  // Learn ovm's exact argv and the files it passed (by fd order) from one warm-up run.
  const warm = await runOvm(0);
  const a = await loadArtifact(store, artifact.ref);
  const chain = await assembleChain(store, a.manifest.diskLayers);
  // fd order in the builder: console, kernel, initrd, layers..., overlay, config disk.
  const files = [
    "CONSOLE",
    store.blobPath(a.manifest.kernel.ref),
    store.blobPath(a.manifest.initrd!.ref),
    ...chain.map((l) => l.path),
    "OVERLAY",
    join(home, "cfg.tar"),
    String(chain.at(-1)!.virtualSize),
  ];
  await runDirect(warm.argv, files, 0);

  const ovmMs: number[] = [];
  const directMs: number[] = [];
  for (let i = 1; i <= RUNS; i++) {
    ovmMs.push((await runOvm(i)).ms);
    directMs.push(await runDirect(warm.argv, files, i));
  }
  const mo = median(ovmMs);
  const md = median(directMs);
  const r = (x: number) => x.toFixed(0);
  console.log(`runs: ${RUNS} each, alternating; time to the guest's first console line`);
  console.log(`ovm run --detach     median ${r(mo)} ms  (${ovmMs.map(r).join(", ")})`);
  console.log(`qemu directly        median ${r(md)} ms  (${directMs.map(r).join(", ")})`);
  console.log(
    `ovm overhead         ${r(mo - md)} ms = ${((mo - md) / md * 100).toFixed(1)}% of the boot`,
  );
  const paired = median(ovmMs.map((o, i) => o - directMs[i]));
  console.log(`paired difference    median ${r(paired)} ms`);
  for (const [k, v] of Object.entries(traces)) {
    if (k.startsWith("wait")) continue;
    console.log(`ovm step: ${k.padEnd(34)} median ${median(v).toFixed(1)} ms`);
  }
  console.log(`deno start-up (ovm version)  median ${r(median(startup))} ms`);
  for (const [k, v] of Object.entries(steps)) {
    console.log(`in-process ${k.padEnd(8)} median ${median(v).toFixed(2)} ms`);
  }
} finally {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* exited */ }
  }
  const dir = join(home, "instances");
  try {
    for await (const e of Deno.readDir(dir)) {
      const s = JSON.parse(await Deno.readTextFile(join(dir, e.name, "state.json")));
      try {
        if (s.pid) Deno.kill(s.pid, "SIGKILL");
      } catch { /* gone */ }
      for (const f of s.vm?.runtimeFiles ?? []) await Deno.remove(f).catch(() => {});
    }
  } catch { /* none */ }
  await Deno.remove(home, { recursive: true }).catch(() => {});
}
