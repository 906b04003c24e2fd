/**
 * Runtime descriptors: validation (unknown fields, missing mappings,
 * placeholders), loading from `$OVM_HOME/runtimes`, binary lookup, the
 * generic CLI adapter's refusals and early-exit errors, and the RAM-snapshot
 * path of a CLI runtime (decoded, preloaded to tmpfs, locked, passed by flag).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  builtinDescriptors,
  CliRuntimeAdapter,
  loadUserDescriptors,
  parseRuntimeDescriptor,
} from "../../src/vmm/descriptor/mod.ts";
import { encodeRamsnap } from "../../src/snapshot/mod.ts";
import { ValidationError, VmmError } from "../../src/errors.ts";
import { manifestFromValue, MediaTypes } from "../../src/manifest/mod.ts";
import { selectAdapter } from "../../src/runtime/mod.ts";
import { ovmIn } from "../_helpers/runtime.ts";
import { coldStartVerdict } from "../../src/cli/runtimes.ts";
import { cherrybombFixture, fakeBin, makeSpec } from "../_helpers/vmm_runtimes.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

// A copy the VMM's uid can run, wherever the checkout is.
const FIXTURE = await cherrybombFixture();

function valid(): Record<string, unknown> {
  return JSON.parse(JSON.stringify({
    schemaVersion: 1,
    name: "mini",
    binary: FIXTURE,
    version: { args: ["--version"], pattern: "cherrybomb\\s+v?([0-9][^\\s]*)" },
    disks: "layers",
    network: ["none"],
    args: {
      kernel: ["--kernel", "{path}"],
      initrd: ["--initrd", "{path}"],
      disk: ["--disk", "{path}"],
      cmdline: ["--cmdline", "{cmdline}"],
    },
  }));
}

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ovm-descriptor-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("a runtime descriptor with an unknown field is refused, naming the field", () => {
  const d = valid();
  d.flavour = "x";
  assert.throws(
    () => parseRuntimeDescriptor(d, "test.json"),
    (e: Error) => e instanceof ValidationError && /unknown field "flavour"/.test(e.message),
  );
  const d2 = valid();
  (d2.args as Record<string, unknown>).kernal = ["--kernal", "{path}"];
  assert.throws(() => parseRuntimeDescriptor(d2, "test.json"), /args: unknown field "kernal"/);
});

Deno.test("a runtime descriptor without a required mapping is refused", () => {
  for (const key of ["kernel", "disk", "cmdline"]) {
    const d = valid();
    delete (d.args as Record<string, unknown>)[key];
    assert.throws(
      () => parseRuntimeDescriptor(d, "test.json"),
      new RegExp(`args\\.${key}: required mapping is missing`),
    );
  }
  const d = valid();
  delete d.binary;
  assert.throws(() => parseRuntimeDescriptor(d, "test.json"), /binary: required field is missing/);
});

Deno.test("a mapping that uses a placeholder it does not have is refused", () => {
  const d = valid();
  (d.args as Record<string, unknown>).kernel = ["--kernel={file}"];
  assert.throws(
    () => parseRuntimeDescriptor(d, "test.json"),
    /mapping "kernel" uses unknown placeholder "\{file\}"/,
  );
});

Deno.test("the built-in cherrybomb descriptor maps the spec's flags", () => {
  const [cb] = builtinDescriptors();
  assert.equal(cb.name, "cherrybomb");
  assert.deepEqual(cb.args.kernel, ["--kernel", "{path}"]);
  assert.deepEqual(cb.args.ramSnapshot, ["--ram-snapshot", "{path}"]);
  assert.deepEqual(cb.args.devices.ivshmem, [
    "--ivshmem",
    "{name}",
    "--size",
    "{size}",
    "--addr",
    "{mmio_addr}",
  ]);
});

Deno.test("descriptors in $OVM_HOME/runtimes are loaded, listed by ovm runtimes, and a bad one names its file", async () => {
  await withTemp(async (home) => {
    await Deno.mkdir(join(home, "runtimes"));
    await Deno.writeTextFile(join(home, "runtimes", "mini.json"), JSON.stringify(valid()));
    const [mini] = await loadUserDescriptors(home);
    assert.equal(mini.name, "mini");
    const r = await ovmIn(home, "runtimes", "--json");
    assert.equal(r.code, 0, r.stderr);
    const list = JSON.parse(r.stdout) as {
      name: string;
      installed: boolean;
      version?: string;
      kind: string;
      capabilities: { devices: string[] };
    }[];
    const names = list.map((x) => x.name);
    for (const n of ["qemu", "cloud-hypervisor", "firecracker", "cherrybomb", "mini"]) {
      assert.ok(names.includes(n), `${n} is listed`);
    }
    const m = list.find((x) => x.name === "mini")!;
    assert.equal(m.installed, true);
    assert.equal(m.version, "0.1.0");
    assert.equal(m.kind, "descriptor");
    assert.deepEqual(m.capabilities.devices, []);
    assert.equal(list.find((x) => x.name === "firecracker")!.installed, false);
    // Cherrybomb restores RAM snapshots (--ram-snapshot) but cannot take them.
    const cb = list.find((x) => x.name === "cherrybomb")! as unknown as {
      restoreKinds: string[];
      capabilities: { snapshotKinds: string[] };
    };
    assert.deepEqual([cb.restoreKinds, cb.capabilities.snapshotKinds], [["ram"], []]);

    await Deno.writeTextFile(
      join(home, "runtimes", "zz-bad.json"),
      JSON.stringify({ ...valid(), x: 1 }),
    );
    const bad = await ovmIn(home, "runtimes");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /zz-bad\.json.*unknown field "x"/);
  });
});

Deno.test("the runtime binary comes from --runtime-path, else the descriptor, else PATH", async () => {
  const [cb] = builtinDescriptors();
  assert.equal((await new CliRuntimeAdapter(cb, { binary: FIXTURE }).available()).ok, true);
  const missing = await new CliRuntimeAdapter(cb, { binary: "/nonexistent/cherrybomb" })
    .available();
  assert.equal(missing.ok, false);
  // PATH lookup in a separate ovm process: test modules share this process's environment.
  await withTemp(async (home) => {
    await using bin = await fakeBin();
    const fixtures = new URL("../fixtures", import.meta.url).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "runtimes", "--json", "--home", home],
      env: { PATH: `${fixtures}:${bin.dir}:${Deno.env.get("PATH")}` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const list = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      name: string;
      installed: boolean;
      version?: string;
    }[];
    const by = (n: string) => list.find((r) => r.name === n)!;
    assert.deepEqual([by("cherrybomb").installed, by("cherrybomb").version], [true, "0.1.0"]);
    assert.deepEqual([by("cloud-hypervisor").installed, by("cloud-hypervisor").version], [
      true,
      "53.0-fake",
    ]);
    assert.equal(by("firecracker").version, "1.17.0-fake");
  });
});

Deno.test("a device type the descriptor does not map is an error naming it", async () => {
  await withTemp(async (dir) => {
    const a = new CliRuntimeAdapter(parseRuntimeDescriptor(valid(), "t"));
    const spec = await makeSpec(dir);
    spec.devices = [{ type: "ivshmem", name: "shm0", size: 4096, mmio_addr: "0x1000" }];
    await assert.rejects(
      a.prepare(spec),
      (e: Error) =>
        e instanceof ValidationError &&
        /Device type "ivshmem" is not mapped by the mini runtime descriptor/.test(e.message),
    );
  });
});

Deno.test("a CLI runtime that exits at once fails the start with what it printed", async () => {
  await withTemp(async (dir) => {
    const d = valid();
    (d.args as Record<string, unknown>).prefix = ["--bogus"];
    const a = new CliRuntimeAdapter(parseRuntimeDescriptor(d, "t"));
    const spec = await makeSpec(dir);
    await a.prepare(spec);
    const err = await a.start(spec).then(() => undefined, (e) => e);
    assert.ok(err instanceof VmmError, String(err));
    assert.equal(err.step, "start");
    assert.match(err.message, /exited at once with code 2/);
    assert.match(err.hint ?? "", /cherrybomb: unknown flag "--bogus"/);
  });
});

Deno.test("preferred runtimes that are missing are warned about and selection falls through", async () => {
  const m = manifestFromValue({
    schemaVersion: 1,
    mediaType: MediaTypes.manifest,
    name: "m",
    version: "1",
    kernel: { ref: `sha256:${"a".repeat(64)}` },
    runtimeHints: { preferredRuntime: ["cherrybomb", "cloud-hypervisor", "qemu"] },
  });
  const warnings: string[] = [];
  const a = await selectAdapter(m, { warn: (w) => warnings.push(w) });
  assert.equal(a.name, "qemu");
  assert.equal(warnings.length, 2);
  assert.match(warnings[0], /preferred runtime "cherrybomb" is not installed/);
  assert.match(warnings[1], /preferred runtime "cloud-hypervisor" is not installed/);
});

Deno.test("a CLI runtime restores from a ramsnap blob decoded onto tmpfs, locked, and passed with --ram-snapshot", async () => {
  await withTemp(async (dir) => {
    // A stand-in binary that records its argv and waits (test code).
    const recorder = join(dir, "cherrybomb-recorder");
    await Deno.writeTextFile(
      recorder,
      `#!/bin/sh\nprintf '%s\\0' "$@" > "${dir}/argv"\nexec sleep 60\n`,
    );
    await Deno.chmod(recorder, 0o755);
    const mem = join(dir, "mem.bin");
    const memory = new Uint8Array(1 << 20);
    for (let i = 0; i < memory.length; i += 4096) memory[i] = (i >> 12) & 0xff;
    await Deno.writeFile(mem, memory);
    const dev = join(dir, "dev.bin");
    await Deno.writeTextFile(dev, "device state");
    const blob = join(dir, "ram.ramsnap");
    const stream = encodeRamsnap([
      { name: "memory", path: mem, size: memory.length },
      { name: "device-state", path: dev, size: 12 },
    ], { metadata: { vmm: "cherrybomb" } });
    using out = await Deno.open(blob, { write: true, create: true });
    await stream.pipeTo(out.writable);

    const [cb] = builtinDescriptors();
    const a = new CliRuntimeAdapter(cb, { binary: recorder, startGraceMs: 200 });
    const spec = await makeSpec(join(dir, "vm"), `rs${Date.now() % 100000}`);
    spec.memoryBytes = 64 << 20;
    await a.prepare(spec);
    const vm = await a.restore(spec, { kind: "ram", source: blob, preload: true, mlock: true });
    const shm = `/dev/shm/ovm-${spec.id}-ram`;
    try {
      const argv = (await Deno.readTextFile(join(dir, "argv"))).split("\0").slice(0, -1);
      const i = argv.indexOf("--ram-snapshot");
      assert.ok(i > 0, JSON.stringify(argv));
      assert.equal(argv[i + 1], shm);
      assert.deepEqual(await Deno.readFile(shm), memory);
      assert.ok(vm.handle.runtimeFiles.includes(shm));
    } finally {
      assert.equal((await a.stop(vm.handle, { timeoutMs: 3000 })).how, "quit");
      await vm.exited;
    }
    await assert.rejects(Deno.stat(shm), Deno.errors.NotFound);
  });
});

Deno.test("the measured cold start is compared with the artifact's coldStartTargetMs", () => {
  assert.deepEqual(coldStartVerdict(500, 420.4), {
    met: true,
    message: "cold start took 420 ms (target 500 ms)",
  });
  const miss = coldStartVerdict(500, 1234);
  assert.equal(miss.met, false);
  assert.match(miss.message, /1234 ms, over the artifact's target of 500 ms/);
});

Deno.test("a later ovm process finds a runtime from a descriptor file in $OVM_HOME (ovm stop, ps)", async () => {
  await withTemp(async (home) => {
    await Deno.mkdir(join(home, "runtimes"));
    await Deno.writeTextFile(join(home, "runtimes", "mini.json"), JSON.stringify(valid()));
    const mod = new URL("../../src/vmm/mod.ts", import.meta.url).href;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", `import { getAdapter } from "${mod}"; console.log(getAdapter("mini").name);`],
      env: { OVM_HOME: home },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(out.stdout).trim(),
      "mini",
      new TextDecoder().decode(out.stderr),
    );
  });
});

Deno.test("--runtime-path without --runtime is refused before anything runs", async () => {
  await withTemp(async (home) => {
    const r = await ovmIn(home, "run", "--runtime-path", FIXTURE, "demo/busybox:1.0");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--runtime-path needs --runtime/);
  });
});

Deno.test("a descriptor maps bridge NICs with its nic template, and bridge without one is refused", async () => {
  const d = valid();
  d.network = ["none", "bridge"];
  assert.throws(
    () => parseRuntimeDescriptor(d, "test.json"),
    (e) =>
      e instanceof ValidationError && /network "bridge" needs the "nic" mapping/.test(e.message),
  );
  (d.args as Record<string, unknown>).nic = ["--net", "tap={tap},mac={mac},id=n{index}"];
  const a = new CliRuntimeAdapter(parseRuntimeDescriptor(d, "test.json"));
  assert.deepEqual(a.capabilities.network, ["none", "bridge"]);
  const dir = await Deno.makeTempDir({ prefix: "ovm-desc-nic-" });
  try {
    const spec = await makeSpec(dir);
    spec.network = {
      mode: "bridge",
      publish: [],
      nics: [{ tap: "ovt12345678a0", mac: "02:4f:0a:59:00:02" }],
    };
    const args = a.buildArgs(spec, { disks: a.diskFiles(spec) });
    const i = args.indexOf("--net");
    assert.deepEqual(args.slice(i, i + 2), [
      "--net",
      "tap=ovt12345678a0,mac=02:4f:0a:59:00:02,id=n0",
    ]);
    const bad = valid();
    bad.network = ["bridge"];
    (bad.args as Record<string, unknown>).nic = ["--net", "{ip}"];
    assert.throws(() => parseRuntimeDescriptor(bad, "t"), /unknown placeholder "\{ip\}"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
