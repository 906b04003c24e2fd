import assert from "node:assert/strict";
import { join } from "node:path";
import { buildConfigDisk, ensureSystem, initCmdline } from "../../src/system/mod.ts";
import { tempDir } from "../_helpers/cli.ts";
import { bootVm, consoleTail, makeBusyboxRootDisk, TEST_CACHE } from "../_helpers/vm.ts";

const SHOW = `#!/bin/sh
echo "ARGC: $#"
for a in "$@"; do echo "ARG: [$a]"; done
echo "CWD: $(pwd)"
echo "ID: $(id -u):$(id -g)"
echo "GREETING: [$GREETING]"
echo "HOME: [$HOME]"
echo "HOSTNAME: $(cat /proc/sys/kernel/hostname)"
echo "ADDR: $(ip -4 -o addr show dev eth0 | grep -o 'inet [0-9./]*')"
echo "DNS: $(cat /etc/resolv.conf)"
exit 7
`;

Deno.test("a workload booted from the default kernel and initrd gets its argv, env, workdir, user and a DHCP address, and its exit code reaches the console", async () => {
  await using tmp = await tempDir();
  const set = await ensureSystem(join(tmp.path, "home"), { cacheDir: TEST_CACHE });
  const root = join(tmp.path, "root.ext4");
  const cfg = join(tmp.path, "config.img");
  await makeBusyboxRootDisk(root, { files: { "usr/local/bin/show": SHOW, "srv/data/.keep": "" } });
  await buildConfigDisk(cfg, {
    env: ["GREETING=hello 'quoted' $world", "PATH=/usr/local/bin:/bin"],
    entrypoint: ["show"],
    cmd: ["one two", "it's", ""],
    workdir: "/srv/data",
    user: "app:staff",
    exposedPorts: [],
  }, { hostname: "box1" });
  const r = await bootVm({
    kernel: set.kernel.path,
    initrd: set.initrd.path,
    cmdline: initCmdline({ configDevice: "/dev/vdb", rootMode: "ro", net: "dhcp" }),
    disks: [{ path: root, readOnly: true }, { path: cfg, readOnly: true }],
    net: true,
  });
  const tail = consoleTail(r.console);
  const lines = r.console.split("\n");
  for (
    const want of [
      "ARGC: 3",
      "ARG: [one two]",
      "ARG: [it's]",
      "ARG: []",
      "CWD: /srv/data",
      "ID: 1000:50",
      "GREETING: [hello 'quoted' $world]",
      "HOME: [/home/app]",
      "HOSTNAME: box1",
      // QEMU user networking's DHCP server, written into the overlay's /etc/resolv.conf.
      "ADDR: inet 10.0.2.15/24",
      "DNS: nameserver 10.0.2.3",
    ]
  ) assert.ok(lines.includes(want), `console lacks "${want}":\n${tail}`);
  assert.equal(r.exitCode, 7, tail);
});

Deno.test("a bootstrap config naming a missing entrypoint makes the guest say so and power off with code 127", async () => {
  await using tmp = await tempDir();
  const set = await ensureSystem(join(tmp.path, "home"), { cacheDir: TEST_CACHE });
  const root = join(tmp.path, "root.ext4");
  const cfg = join(tmp.path, "config.img");
  await makeBusyboxRootDisk(root);
  await buildConfigDisk(cfg, { env: [], entrypoint: ["/opt/app/server"], exposedPorts: [] });
  const r = await bootVm({
    kernel: set.kernel.path,
    initrd: set.initrd.path,
    cmdline: initCmdline({ configDevice: "/dev/vdb" }),
    disks: [{ path: root }, { path: cfg, readOnly: true }],
  });
  assert.match(r.console, /entrypoint "\/opt\/app\/server" not found/, consoleTail(r.console));
  assert.equal(r.exitCode, 127, consoleTail(r.console));
});
