/**
 * The shim's pure parts: containerd's Go-style flags, the names derived from
 * (namespace, id, bundle), the OCI spec → VM plan (what is honoured, what is
 * refused and how the refusal reads), the console line router, and the
 * launcher `ovm shim install` writes (run for real with -v), and a process's
 * metrics in the cgroup v2 shape containerd decodes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  decodeMessage,
  encodeMessage,
  installLauncher,
  launcherScript,
  METRICS_V2,
  parseShimArgs,
  parseTaskNet,
  planFromSpec,
  processMetrics,
  shimSocketPath,
  stateDirOf,
  TaggedLineRouter,
  taskInstanceId,
} from "../../src/shim/mod.ts";
import { INSTANCE_ID_RE } from "../../src/runtime/mod.ts";
import { NotFoundError, ValidationError } from "../../src/errors.ts";

Deno.test("shim flags parse as Go's flag package reads them, the action after them", () => {
  const a = parseShimArgs([
    "-namespace",
    "k8s.io",
    "-address",
    "/run/containerd/containerd.sock",
    "-publish-binary=/usr/bin/containerd",
    "--id",
    "abc",
    "-debug",
    "start",
  ], "/b");
  assert.deepEqual(a, {
    namespace: "k8s.io",
    address: "/run/containerd/containerd.sock",
    publishBinary: "/usr/bin/containerd",
    id: "abc",
    bundle: "/b",
    debug: true,
    version: false,
    action: "start",
  });
  assert.equal(parseShimArgs(["-id", "x", "-bundle", "/other", "delete"], "/b").bundle, "/other");
  assert.equal(parseShimArgs(["-v"], "/").version, true);
  assert.throws(() => parseShimArgs(["-bogus", "1", "start"], "/"), /Unknown shim flag "-bogus"/);
  assert.throws(() => parseShimArgs(["-id"], "/"), /needs a value/);
});

Deno.test("the socket lives under containerd's state dir and the names are stable and valid", () => {
  const bundle = "/var/run/ctd/io.containerd.runtime.v2.task/default/web";
  assert.equal(stateDirOf(bundle), "/var/run/ctd");
  assert.equal(stateDirOf("/somewhere/else/x"), "/run/containerd");
  const s = shimSocketPath(bundle, "default", "web");
  assert.match(s, /^\/var\/run\/ctd\/s\/[0-9a-f]{32}$/);
  assert.equal(s, shimSocketPath(bundle, "default", "web"));
  assert.notEqual(s, shimSocketPath(bundle, "k8s.io", "web"));
  const id = taskInstanceId(bundle, "default", "Web_1.x");
  assert.match(id, INSTANCE_ID_RE);
  // Another containerd's task of the same name is another VM.
  const other = "/run/other/io.containerd.runtime.v2.task/default/Web_1.x";
  assert.notEqual(taskInstanceId(other, "default", "Web_1.x"), id);
});

const base = {
  process: {
    args: ["/bin/app", "--flag"],
    env: ["PATH=/bin", "A=b c"],
    cwd: "/srv",
    user: { uid: 1000, gid: 100 },
  },
  root: { path: "rootfs" },
  mounts: [
    { destination: "/proc", type: "proc", source: "proc" },
    { destination: "/dev/shm", type: "bind", source: "/run/x/shm", options: ["rbind"] },
    { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup" },
  ],
};

Deno.test("the OCI process, hostname, read-only root and limits become the VM's plan", () => {
  const p = planFromSpec({
    ...base,
    hostname: "web-1",
    root: { path: "rootfs", readonly: true },
    linux: {
      resources: {
        memory: { limit: 200 * 1024 * 1024 + 1 },
        cpu: { quota: 150000, period: 100000 },
      },
    },
    annotations: { "io.ovms.artifact": "vms/app:warm" },
  });
  assert.deepEqual(p.bootstrap, {
    entrypoint: ["/bin/app", "--flag"],
    env: ["PATH=/bin", "A=b c"],
    workdir: "/srv",
    user: "1000:100",
    exposedPorts: [],
    hostname: "web-1",
  });
  assert.equal(p.readonly, true);
  assert.equal(p.memoryBytes, 201 * 1024 * 1024);
  assert.equal(p.cpus, 2);
  assert.equal(p.artifact, "vms/app:warm");
  assert.equal(planFromSpec({ ...base, linux: { resources: { cpu: { cpus: "0-2,5" } } } }).cpus, 4);
});

Deno.test("io.ovms.net is read with ovm run's --net parser; a bad value names itself and the forms", () => {
  const net = (v: string) => planFromSpec({ ...base, annotations: { "io.ovms.net": v } }).net;
  assert.equal(planFromSpec(base).net, undefined);
  assert.deepEqual(net("none"), { mode: "none" });
  assert.deepEqual(net("user"), { mode: "user" });
  assert.deepEqual(net("bridge"), { mode: "bridge" });
  assert.deepEqual(net("bridge=pods"), { mode: "bridge", network: "pods" });
  for (const bad of ["tap", "bridge=", "user=x", "bridge=a=b", ""]) {
    assert.throws(
      () => net(bad),
      (e: unknown) =>
        e instanceof ValidationError &&
        e.message === `Invalid network "${bad}" (annotation io.ovms.net)` &&
        /bridge\[=NETWORK\]/.test(e.hint ?? ""),
      bad,
    );
  }
  assert.deepEqual(parseTaskNet("bridge=x", "test"), { mode: "bridge", network: "x" });
});

Deno.test("file bind mounts are copied in; what a VM cannot honour is refused by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const f = join(dir, "hosts");
    await Deno.writeTextFile(f, "127.0.0.1 localhost\n");
    const p = planFromSpec({
      ...base,
      mounts: [...base.mounts, {
        destination: "/etc/hosts",
        type: "bind",
        source: f,
        options: ["rbind", "ro"],
      }],
    });
    assert.deepEqual(p.copies, [{ source: f, destination: "/etc/hosts" }]);
    const refused = (spec: Record<string, unknown>, re: RegExp) =>
      assert.throws(
        () => planFromSpec({ ...base, ...spec }),
        (e: unknown) => e instanceof ValidationError && re.test(e.message),
      );
    refused(
      { mounts: [{ destination: "/data", type: "bind", source: dir, options: ["rbind"] }] },
      /mounts\["\/data"\] is not supported by the ovm shim: bind mounts of host directories/,
    );
    refused({ mounts: [{ destination: "/x", type: "nfs", source: "srv:/x" }] }, /mount type "nfs"/);
    refused({ process: { ...base.process, terminal: true } }, /process\.terminal/);
    refused({ process: { ...base.process, args: [] } }, /process\.args/);
    refused({ linux: { devices: [{ path: "/dev/kvm" }] } }, /linux\.devices/);
    refused({ hooks: { prestart: [{ path: "/bin/hook" }] } }, /hooks\.prestart/);
    refused({ linux: { resources: { memory: { limit: 32 << 20 } } } }, /below the 64 MiB/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("only tagged console lines reach stdout and stderr, split at any byte", () => {
  const text = "[    1.0] kernel says\r\n@o|hello\r\novms-init: noise\r\n@e|bad thing\r\n" +
    "junk@o|after junk\r\n@o|no newline";
  const bytes = new TextEncoder().encode(text);
  for (const cut of [1, 7, 13, bytes.length - 3]) {
    const out: string[] = [];
    const err: string[] = [];
    const r = new TaggedLineRouter((l) => out.push(l), (l) => err.push(l));
    r.push(bytes.slice(0, cut));
    r.push(bytes.slice(cut));
    r.flush();
    assert.deepEqual(out, ["hello\n", "after junk\n", "no newline\n"]);
    assert.deepEqual(err, ["bad thing\n"]);
  }
});

Deno.test("ovm shim install writes an executable launcher that runs ovm's shim mode", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = await installLauncher(dir, { home: "/var/lib/ovm it's" });
    assert.equal(path, join(dir, "containerd-shim-ovm-v2"));
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o755);
    const text = await Deno.readTextFile(path);
    assert.match(text, /^#!\/bin\/sh\n/);
    assert.match(text, /export OVM_HOME='\/var\/lib\/ovm it'\\''s'/);
    const out = await new Deno.Command(path, { args: ["-v"], stdout: "piped", stderr: "piped" })
      .output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(stdout, /^containerd-shim-ovm-v2:\n {2}Version: \d+\.\d+\.\d+/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ovm shim install --net writes the node's default network into the launcher", async () => {
  assert.match(
    launcherScript({ home: "/h", net: "bridge=pods" }),
    /^\[ -n "\$OVM_SHIM_NET" \] \|\| export OVM_SHIM_NET='bridge=pods'$/m,
  );
  assert.doesNotMatch(launcherScript({ home: "/h" }), /OVM_SHIM_NET/);
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => installLauncher(dir, { net: "bridge=a=b" }),
      /Invalid network "bridge=a=b" \(ovm shim install --net\)/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a process's metrics read from /proc encode as io.containerd.cgroups.v2.Metrics", async () => {
  // Burn some CPU so the usage is not zero at 10 ms resolution.
  const until = performance.now() + 50;
  while (performance.now() < until) Math.sqrt(Math.random());
  const m = await processMetrics(Deno.pid, { limitBytes: 256 << 20 });
  const round = decodeMessage(METRICS_V2, encodeMessage(METRICS_V2, m));
  assert.ok(round.cpu.usage_usec > 0, JSON.stringify(round.cpu));
  assert.equal(round.cpu.usage_usec, round.cpu.user_usec + round.cpu.system_usec);
  const rss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/self/status"))![1]);
  assert.ok(Math.abs(round.memory.usage - rss * 1024) < 64 << 20, `usage ${round.memory.usage}`);
  assert.equal(round.memory.usage_limit, 256 << 20);
  assert.ok(round.pids.current >= 1);
  await assert.rejects(() => processMetrics(2 ** 22 + 1), NotFoundError);
});
