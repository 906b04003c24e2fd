/**
 * Bridge networking against user-mode networking, inside a network namespace
 * this script creates and removes (TCG guests, 512 MiB, 1 vCPU):
 *
 * - iperf3 host → guest throughput: `--net user -p 127.0.0.1:15201:5201`
 *   (QEMU slirp hostfwd) against `--net bridge` (TAP on the ovm0 bridge), the
 *   guest running Debian's iperf3 3.12 (binary and libraries copied from this
 *   host into the guest's root disk);
 * - `ovm run -d` wall time with `--net none` against `--net bridge`
 *   (alternating), and the network step from `OVM_TRACE=1`;
 * - restore → reachable for bridge clones: from spawning `ovm run -d` of a
 *   snapshot to the first HTTP answer from the clone's own address.
 *
 *   deno run -A bench/net_bridge.ts [--runs 3] [--seconds 5]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pack } from "../src/cli/pack.ts";
import { ContentStore } from "../src/store/mod.ts";
import { ensureSystem, initCmdline } from "../src/system/mod.ts";
import { dropTemplate } from "../src/runtime/mod.ts";
import { loadArtifact } from "../src/store/mod.ts";

async function pruneTemplatesOf(store: ContentStore): Promise<void> {
  const snap = await loadArtifact(store, "bench/iperf:warm").catch(() => undefined);
  const ref = snap?.manifest.ramSnapshot?.ref;
  if (ref) await dropTemplate(ref);
}

const { values } = parseArgs({
  args: Deno.args,
  options: { runs: { type: "string" }, seconds: { type: "string" } },
});
const RUNS = Number(values.runs ?? 3);
const SECONDS = Number(values.seconds ?? 5);
const CACHE = Deno.env.get("OVM_TEST_CACHE") ?? "/tmp/ovm-test-cache";
const MAIN = new URL("../main.ts", import.meta.url).pathname;
const NS = `ovmb-${Deno.pid}`;
/** Instance ids name host-wide files (/dev/shm/ovm-<id>-ram): this run's own prefix. */
const P = `nb${Deno.pid}`;

async function sh(cmd: string, args: string[], env?: Record<string, string>) {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

async function must(cmd: string, args: string[]) {
  const r = await sh(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

const inNs = (cmd: string, args: string[], env?: Record<string, string>) =>
  sh("ip", ["netns", "exec", NS, cmd, ...args], env);

const BENCH_SCRIPT = `#!/bin/sh
mkdir -p /www
echo hello >/www/index.html
httpd -p 80 -h /www
iperf3 -s -D
while true; do sleep 3600; done
`;

/** A root disk: busybox, iperf3 with its libraries, the bench script. */
async function buildArtifact(home: string, work: string): Promise<string> {
  const root = join(work, "root");
  for (const d of ["bin", "etc", "proc", "sys", "dev", "tmp", "lib64", "usr/bin"]) {
    await Deno.mkdir(join(root, d), { recursive: true });
  }
  await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
  for (const a of (await must("/bin/busybox", ["--list"])).split("\n").filter(Boolean)) {
    await Deno.symlink("busybox", join(root, "bin", a)).catch(() => {});
  }
  const libs = (await must("ldd", ["/usr/bin/iperf3"])).matchAll(/(\/\S+\.so[.\d]*)/g);
  for (const f of ["/usr/bin/iperf3", ...[...libs].map((m) => m[1])]) {
    await Deno.mkdir(join(root, f, ".."), { recursive: true });
    await Deno.copyFile(f, join(root, f));
  }
  await Deno.writeTextFile(join(root, "etc/passwd"), "root:x:0:0:root:/:/bin/sh\n");
  await Deno.writeTextFile(join(root, "bench.sh"), BENCH_SCRIPT, { mode: 0o755 });
  const raw = join(work, "root.raw");
  await must("mkfs.ext4", ["-q", "-F", "-d", root, raw, "96M"]);
  const qcow = join(work, "root.qcow2");
  await must("qemu-img", ["convert", "-O", "qcow2", raw, qcow]);
  const bootstrap = join(work, "bootstrap.json");
  await Deno.writeTextFile(bootstrap, JSON.stringify({ cmd: ["/bin/sh", "/bench.sh"] }));
  const system = await ensureSystem(home, { cacheDir: CACHE });
  const store = await ContentStore.open(home);
  const res = await pack(store, {
    kernel: system.kernel.path,
    initrd: system.initrd.path,
    disks: [{ path: qcow, format: "qcow2" }],
    args: initCmdline({ root: "/dev/vda", rootFs: "ext4", rootMode: "rw", mode: "exec" }),
    devices: [],
    bootstrap,
    tag: "bench/iperf:1",
    preferredRuntime: ["qemu"],
  });
  return res.ref;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function ovm(home: string, args: string[], env?: Record<string, string>) {
  const t0 = performance.now();
  const r = await inNs(Deno.execPath(), ["run", "-A", MAIN, ...args, "--home", home], env);
  if (r.code !== 0) throw new Error(`ovm ${args.join(" ")}: ${r.stderr}`);
  return { ...r, ms: performance.now() - t0 };
}

async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 120_000) {
  const end = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function iperf(host: string, port: number): Promise<number> {
  // A one-second test until one passes: slirp's hostfwd accepts a connection before the
  // guest listens, so a bare connect proves nothing (and busybox nc has no -z).
  await until(
    `iperf3 on ${host}:${port}`,
    async () =>
      (await inNs("iperf3", [
        "-c",
        host,
        "-p",
        String(port),
        "-t",
        "1",
        "--connect-timeout",
        "1000",
      ]))
        .code === 0,
  );
  // The server takes one test at a time: right after the probe it may still answer "busy".
  let last = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const r = await inNs("iperf3", ["-c", host, "-p", String(port), "-t", String(SECONDS), "-J"]);
    const out = (() => {
      try {
        return JSON.parse(r.stdout);
      } catch {
        return undefined;
      }
    })();
    const bps = out?.end?.sum_received?.bits_per_second;
    if (r.code === 0 && typeof bps === "number") return bps / 1e6;
    last = out?.error ?? `${r.stdout.slice(-500)} ${r.stderr}`;
    await new Promise((res) => setTimeout(res, 1000));
  }
  throw new Error(`iperf3 to ${host}:${port}: ${last}`);
}

const home = await Deno.makeTempDir({ prefix: "ovm-bench-net-" });
const work = await Deno.makeTempDir({ prefix: "ovm-bench-net-build-" });
await must("ip", ["netns", "add", NS]);
try {
  await must("ip", ["-n", NS, "link", "set", "lo", "up"]);
  const ref = await buildArtifact(home, work);
  const tput: Record<string, number[]> = { user: [], bridge: [] };
  for (let i = 0; i < RUNS; i++) {
    await ovm(home, [
      "run",
      "-d",
      "--name",
      `${P}u${i}`,
      "--net",
      "user",
      "-p",
      "127.0.0.1:15201:5201",
      ref,
    ]);
    tput.user.push(await iperf("127.0.0.1", 15201));
    await ovm(home, ["rm", "-f", `${P}u${i}`]);
    await ovm(home, ["run", "-d", "--name", `${P}b${i}`, "--net", "bridge", ref]);
    tput.bridge.push(await iperf("10.89.0.2", 5201));
    await ovm(home, ["rm", "-f", `${P}b${i}`]);
  }
  const start: Record<string, number[]> = { none: [], bridge: [] };
  const netStep: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const mode of ["none", "bridge"]) {
      const r = await ovm(home, ["run", "-d", "--name", `${P}s${mode}${i}`, "--net", mode, ref], {
        OVM_TRACE: "1",
      });
      start[mode].push(r.ms);
      const m = /trace: network: address, TAP, published ports: ([\d.]+) ms/.exec(r.stderr);
      if (m) netStep.push(Number(m[1]));
      await ovm(home, ["rm", "-f", `${P}s${mode}${i}`]);
    }
  }
  // Clones: restore → reachable on the clone's own address.
  await ovm(home, ["run", "-d", "--name", `${P}src`, "--net", "bridge", ref]);
  await until(
    "the source's httpd",
    async () => (await inNs("curl", ["-s", "--max-time", "2", "http://10.89.0.2/"])).code === 0,
  );
  await ovm(home, ["snapshot", `${P}src`, "-t", "bench/iperf:warm"]);
  const runMs: number[] = [];
  const reachMs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const addr = `10.89.0.${3 + i}`;
    const t0 = performance.now();
    const p = ovm(home, [
      "run",
      "-d",
      "--name",
      `${P}c${i}`,
      "--net",
      "bridge",
      "bench/iperf:warm",
    ]);
    await until(
      `clone ${i} on ${addr}`,
      async () => (await inNs("curl", ["-s", "--max-time", "1", `http://${addr}/`])).code === 0,
    );
    reachMs.push(performance.now() - t0);
    runMs.push((await p).ms);
  }
  const f = (x: number) => x.toFixed(0);
  console.log(`iperf3 host → guest, ${SECONDS} s, ${RUNS} runs (Mbit/s, median):`);
  console.log(
    `  user   (slirp hostfwd): ${f(median(tput.user))}  [${tput.user.map(f).join(", ")}]`,
  );
  console.log(
    `  bridge (TAP on ovm0):   ${f(median(tput.bridge))}  [${tput.bridge.map(f).join(", ")}]`,
  );
  console.log(`  bridge / user: ${(median(tput.bridge) / median(tput.user)).toFixed(2)}×`);
  console.log(`ovm run -d to first console output (ms, median of ${RUNS}):`);
  console.log(`  --net none:   ${f(median(start.none))}  [${start.none.map(f).join(", ")}]`);
  console.log(`  --net bridge: ${f(median(start.bridge))}  [${start.bridge.map(f).join(", ")}]`);
  console.log(`  network step (lease, TAP, nft; OVM_TRACE): ${median(netStep).toFixed(1)} ms`);
  console.log(`clone restore (ms, median of ${RUNS}):`);
  console.log(
    `  ovm run -d returns (identity applied, TAP joined): ${f(median(runMs))}  [${
      runMs.map(f).join(", ")
    }]`,
  );
  console.log(
    `  spawn → first HTTP answer on the clone's address:  ${f(median(reachMs))}  [${
      reachMs.map(f).join(", ")
    }]`,
  );
} finally {
  const pids = await sh("ip", ["netns", "pids", NS]);
  for (const p of pids.stdout.split("\n").filter(Boolean)) {
    try {
      Deno.kill(Number(p), "SIGKILL");
    } catch { /* gone */ }
  }
  await sh("ip", ["netns", "del", NS]);
  for await (const e of Deno.readDir("/dev/shm")) {
    if (e.name.startsWith(`ovm-${P}`)) await Deno.remove(join("/dev/shm", e.name)).catch(() => {});
  }
  // The decoded snapshot template lives in the host-wide cache: drop this run's.
  const store = await ContentStore.open(home).catch(() => undefined);
  if (store) await pruneTemplatesOf(store);
  await Deno.remove(home, { recursive: true }).catch(() => {});
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
