import assert from "node:assert/strict";
import { join } from "node:path";
import { COMMANDS } from "../../src/cli/mod.ts";
import type { Command } from "../../src/cli/command.ts";
import { assertExit, listFiles, ovm, ovmRaw, tempDir } from "../_helpers/cli.ts";
import { digestOf, sha256Hex } from "../../src/manifest/mod.ts";

function allCommands(cmds: Command[], path: string[] = []): [string[], Command][] {
  return cmds.flatMap((c) => [
    [[...path, c.name], c] as [string[], Command],
    ...allCommands(c.subcommands ?? [], [...path, c.name]),
  ]);
}

Deno.test("every verb answers --help with its usage and exit code 0", async () => {
  for (const [path, cmd] of allCommands(COMMANDS)) {
    const r = await ovmRaw(...path, "--help");
    assertExit(r, 0);
    assert.ok(r.stdout.startsWith(`Usage: ovm ${cmd.usage}`), `help of ${path.join(" ")}`);
    assert.match(r.stdout, /--json/);
  }
});

Deno.test("ovm with no arguments lists the commands and exits 2", async () => {
  const r = await ovmRaw();
  assertExit(r, 2);
  for (const c of COMMANDS) assert.match(r.stdout, new RegExp(`\\b${c.name}\\b`));
});

Deno.test("an unknown verb or flag is a usage error naming it", async () => {
  let r = await ovmRaw("frobnicate");
  assertExit(r, 2);
  assert.match(r.stderr, /Unknown command "frobnicate"/);
  r = await ovmRaw("ls", "--frob");
  assertExit(r, 2);
  assert.match(r.stderr, /'--frob'/);
});

Deno.test("version prints JSON with --json", async () => {
  const r = await ovmRaw("version", "--json");
  assertExit(r, 0);
  const v = JSON.parse(r.stdout);
  assert.equal(v.ovms, "0.1");
});

async function makeFiles(dir: string) {
  const kernel = join(dir, "vmlinuz");
  const initrd = join(dir, "initrd");
  const base = join(dir, "base.qcow2");
  const diff = join(dir, "diff.qcow2");
  await Deno.writeFile(kernel, new Uint8Array(8192).fill(1));
  await Deno.writeFile(initrd, new Uint8Array(4096).fill(2));
  const sh = async (cmd: string, ...args: string[]) => {
    const r = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
    assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  };
  await sh("qemu-img", "create", "-q", "-f", "qcow2", base, "32M");
  await sh("qemu-io", "-c", "write -P 0x11 0 64k", base);
  await sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", diff);
  await sh("qemu-io", "-c", "write -P 0x22 64k 64k", diff);
  return { kernel, initrd, base, diff, sh };
}

Deno.test("pack, ls, inspect and export round-trip an artifact", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const f = await makeFiles(tmp.path);
  await f.sh("qemu-img", "rebase", "-u", "-b", "", f.diff);
  let r = await ovm(
    home,
    "pack",
    "--kernel",
    f.kernel,
    "--initrd",
    f.initrd,
    "--disk",
    f.base,
    "--disk",
    `${f.diff}:qcow2`,
    "--device",
    "ivshmem:name=mmio0,size=1M,addr=0x10000000",
    "--args",
    "console=ttyS0 quiet",
    "-t",
    "demo/vm:1.0",
    "--json",
  );
  assertExit(r, 0);
  const packed = JSON.parse(r.stdout);
  assert.equal(packed.ref, "demo/vm:1.0");

  r = await ovm(home, "ls", "--json");
  assertExit(r, 0);
  const rows = JSON.parse(r.stdout);
  assert.equal(rows.length, 1);
  assert.equal(rows[0].digest, packed.digest);

  r = await ovm(home, "inspect", "demo/vm:1.0", "--json");
  assertExit(r, 0);
  const info = JSON.parse(r.stdout);
  assert.equal(info.manifest.kernel.args, "console=ttyS0 quiet");
  assert.equal(info.manifest.diskLayers.length, 2);
  assert.equal(info.manifest.diskLayers[0].size, 32 * 1024 * 1024);
  assert.equal(info.manifest.devices[0].size, 1024 * 1024);
  assert.equal(info.layers[2].annotations["ovms.format"], "qcow2");

  const out = join(tmp.path, "export");
  r = await ovm(home, "export", "demo/vm:1.0", out);
  assertExit(r, 0);
  const files = await listFiles(out);
  assert.ok(files.includes("manifest.json"));
  assert.ok(files.includes("metadata/oci-manifest.json"));
  const ociBytes = await Deno.readFile(join(out, "metadata/oci-manifest.json"));
  assert.equal(digestOf(ociBytes), packed.digest);
  for (const l of info.layers) {
    const hex = l.digest.slice(7);
    assert.equal(sha256Hex(await Deno.readFile(join(out, "blobs", `sha256-${hex}`))), hex);
  }
  r = await ovm(home, "inspect", out, "--json");
  assertExit(r, 0);

  // Export never overwrites a non-empty directory.
  r = await ovm(home, "export", "demo/vm:1.0", out);
  assertExit(r, 1);
  assert.match(r.stderr, /exists and is not empty/);
});

Deno.test("pack refuses a qcow2 layer that names a backing file and writes nothing", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const f = await makeFiles(tmp.path);
  const r = await ovm(
    home,
    "pack",
    "--kernel",
    f.kernel,
    "--disk",
    f.base,
    "--disk",
    f.diff,
    "-t",
    "x/y:1",
  );
  assertExit(r, 2);
  assert.match(r.stderr, /names its own backing file/);
  assert.match(r.stderr, /qemu-img rebase -u -b ''/);
  assert.deepEqual(await listFiles(join(home, "store", "blobs")), []);
});

Deno.test("pack refuses bad flags with exit 2 and writes nothing", async () => {
  await using tmp = await tempDir();
  const home = join(tmp.path, "home");
  const f = await makeFiles(tmp.path);
  const cases: [string[], RegExp][] = [
    [["-t", "x:1"], /--kernel is required/],
    [["--kernel", f.kernel], /--tag is required/],
    [["--kernel", join(tmp.path, "nope"), "-t", "x:1"], /--kernel ".*nope": no such file/],
    [["--kernel", f.kernel, "-t", "UPPER/case:1"], /Invalid reference "UPPER\/case:1"/],
    [["--kernel", f.kernel, "-t", "x@sha256:abc"], /Invalid reference/],
    [["--kernel", f.kernel, "--device", "gpu:name=a", "-t", "x:1"], /unknown device type "gpu"/],
    [["--kernel", f.kernel, "--device", "ivshmem:name=a,size=3M", "-t", "x:1"], /power of two/],
    [
      ["--kernel", f.kernel, "--device", "ivshmem:name=a,size=lots", "-t", "x:1"],
      /Invalid --device size "lots"/,
    ],
    [
      ["--kernel", f.kernel, "--disk", f.kernel, "--disk", f.initrd, "-t", "x:1"],
      /only the base \(first\) disk may be raw/,
    ],
  ];
  for (const [args, pattern] of cases) {
    const r = await ovm(home, "pack", ...args);
    assertExit(r, 2);
    assert.match(r.stderr, pattern, args.join(" "));
  }
  const badBootstrap = join(tmp.path, "b.json");
  await Deno.writeTextFile(badBootstrap, JSON.stringify({ env: ["NOEQUALS"] }));
  const r = await ovm(home, "pack", "--kernel", f.kernel, "--bootstrap", badBootstrap, "-t", "x:1");
  assertExit(r, 2);
  assert.match(r.stderr, /field "env\[0\]"/);
  assert.deepEqual(await listFiles(join(home, "store", "blobs")), []);
});

Deno.test("inspect reports the JSON path of an invalid manifest file with exit 2", async () => {
  await using tmp = await tempDir();
  const bad = join(tmp.path, "bad.json");
  await Deno.writeTextFile(
    bad,
    JSON.stringify({
      schemaVersion: 1,
      mediaType: "application/vnd.ovms.manifest.v1+json",
      name: "n",
      version: "1",
      kernel: { ref: digestOf("k") },
      diskLayers: [{ ref: "sha256:../../x", format: "qcow2", size: 1 }],
    }),
  );
  const r = await ovm(join(tmp.path, "home"), "inspect", bad, "--json");
  assertExit(r, 2);
  const err = JSON.parse(r.stdout).error;
  assert.equal(err.code, "validation");
  assert.match(err.message, /diskLayers\[0\]\.ref/);
});

Deno.test("inspect of an unknown ref says how to find one", async () => {
  await using tmp = await tempDir();
  const r = await ovm(tmp.path, "inspect", "no/such:thing");
  assertExit(r, 1);
  assert.match(r.stderr, /No artifact "no\/such:thing"/);
  assert.match(r.stderr, /ovm ls/);
});

Deno.test("instance verbs load the runtime descriptors of --home; other verbs do not need them", async () => {
  await using tmp = await tempDir();
  await Deno.mkdir(join(tmp.path, "runtimes"), { recursive: true });
  await Deno.writeTextFile(
    join(tmp.path, "runtimes", "broken.json"),
    JSON.stringify({ nonsense: 1 }),
  );
  const ps = await ovm(tmp.path, "ps");
  assertExit(ps, 2);
  assert.match(ps.stderr, /broken\.json/);
  assertExit(await ovm(tmp.path, "ls"), 0);
});

/** Sets a template's install and use times an hour back, past gc's grace period. */
async function lastUsedLongAgo(dir: string): Promise<void> {
  const then = new Date(Date.now() - 3_600_000);
  const homes = join(dir, "homes");
  for (const m of await Array.fromAsync(Deno.readDir(homes)).catch(() => [])) {
    await Deno.utime(join(homes, m.name), then, then);
  }
  await Deno.utime(homes, then, then).catch(() => {});
  await Deno.utime(dir, then, then);
}

Deno.test("gc drops the decoded RAM templates of snapshots no longer in the store, and keeps the others", async () => {
  const { SNAPSHOT_CACHE } = await import("../../src/runtime/mod.ts");
  const { ContentStore } = await import("../../src/store/mod.ts");
  await using tmp = await tempDir();
  const store = await ContentStore.open(tmp.path);
  // A blob a ref still needs (standing in for a stored snapshot's ramsnap blob).
  const { pack } = await import("../../src/cli/pack.ts");
  await Deno.writeFile(join(tmp.path, "k"), crypto.getRandomValues(new Uint8Array(64)));
  const packed = await pack(store, {
    kernel: join(tmp.path, "k"),
    disks: [],
    devices: [],
    tag: "t/k:1",
  });
  const kept = { digest: packed.manifest.kernel.ref };
  const gone = digestOf(crypto.getRandomValues(new Uint8Array(64)));
  const dirs = [kept.digest, gone].map((d) => join(SNAPSHOT_CACHE, d.slice(7)));
  try {
    for (const d of dirs) {
      await Deno.mkdir(d, { recursive: true });
      await Deno.writeFile(join(d, "memory"), new Uint8Array(8192).fill(1));
      await Deno.writeFile(join(d, "device-state"), new Uint8Array(10));
    }
    // Freshly used templates are kept (a restore may be about to map one).
    // (The cache is host-wide: other homes' leftovers may be listed too.)
    let r = await ovm(tmp.path, "gc", "--dry-run", "--json");
    assertExit(r, 0);
    assert.ok(!JSON.parse(r.stdout).templates.removed.includes(gone));
    for (const d of dirs) await lastUsedLongAgo(d);
    r = await ovm(tmp.path, "gc", "--dry-run", "--json");
    assertExit(r, 0);
    assert.ok(JSON.parse(r.stdout).templates.removed.includes(gone));
    assert.ok((await Deno.stat(dirs[1])).isDirectory, "a dry run removes nothing");
    // While another home still uses a template, this home's gc only lets go of it.
    const { markTemplateUser } = await import("../../src/runtime/mod.ts");
    const other = join(tmp.path, "other-home");
    await ContentStore.open(other);
    await markTemplateUser(gone, other);
    await lastUsedLongAgo(dirs[1]);
    r = await ovm(tmp.path, "gc", "--json");
    assertExit(r, 0);
    assert.ok(!JSON.parse(r.stdout).templates.removed.includes(gone));
    assert.ok((await Deno.stat(join(dirs[1], "memory"))).isFile);
    // Once that home is removed (a deleted scratch or test home), its marker holds nothing.
    await Deno.remove(other, { recursive: true });
    r = await ovm(tmp.path, "gc", "--json");
    assertExit(r, 0);
    const t = JSON.parse(r.stdout).templates;
    assert.ok(t.removed.includes(gone) && !t.removed.includes(kept.digest));
    assert.ok(t.freedBytes >= 8192);
    assert.equal(await Deno.stat(dirs[1]).catch(() => null), null);
    assert.ok((await Deno.stat(join(dirs[0], "memory"))).isFile);
  } finally {
    for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
  }
});
