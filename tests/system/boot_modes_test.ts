import assert from "node:assert/strict";
import { join } from "node:path";
import { buildConfigDisk, ensureSystem, initCmdline } from "../../src/system/mod.ts";
import { tempDir } from "../_helpers/cli.ts";
import { bootVm, consoleTail, makeBusyboxRootDisk, TEST_CACHE } from "../_helpers/vm.ts";

Deno.test("switch_root mode boots the image's own /sbin/init from a read-only erofs root with an overlay disk and a static address", async () => {
  await using tmp = await tempDir();
  const set = await ensureSystem(join(tmp.path, "home"), { cacheDir: TEST_CACHE });
  const root = join(tmp.path, "root.erofs");
  await makeBusyboxRootDisk(root, {
    fs: "erofs",
    files: {
      "sbin/init": `#!/bin/sh
echo "IMAGE-INIT: pid $$"
echo kept >/written && echo "OVERLAY: writable"
echo "ADDR: $(ip -4 -o addr show dev eth0 | grep -o 'inet [0-9./]*')"
echo "HOSTNAME: $(hostname)"
sync
poweroff -f
`,
    },
  });
  // A blank disk: the guest formats it and keeps the overlay's upper layer there.
  const upper = join(tmp.path, "upper.img");
  await Deno.writeFile(upper, new Uint8Array(0));
  await Deno.truncate(upper, 8 << 20);
  const r = await bootVm({
    kernel: set.kernel.path,
    initrd: set.initrd.path,
    cmdline: initCmdline({
      rootFs: "erofs",
      rootMode: "ro",
      overlay: "/dev/vdb",
      mode: "switch_root",
      hostname: "imgbox",
      net: { address: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" },
    }),
    disks: [{ path: root, readOnly: true }, { path: upper }],
    net: true,
  });
  const lines = r.console.split("\n");
  for (
    const want of [
      "IMAGE-INIT: pid 1",
      "OVERLAY: writable",
      "ADDR: inet 10.0.2.15/24",
      "HOSTNAME: imgbox",
    ]
  ) assert.ok(lines.includes(want), `console lacks "${want}":\n${consoleTail(r.console)}`);
  assert.equal(r.exitCode, undefined);
  const cat = await new Deno.Command("debugfs", {
    args: ["-R", "cat /upper/written", upper],
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(new TextDecoder().decode(cat.stdout), "kept\n");
});

Deno.test("PID 1 reaps orphans, and a stop request from the host reaches the workload as its stop signal with its exit code reported", async () => {
  await using tmp = await tempDir();
  const set = await ensureSystem(join(tmp.path, "home"), { cacheDir: TEST_CACHE });
  const root = join(tmp.path, "root.ext4");
  const cfg = join(tmp.path, "config.img");
  await makeBusyboxRootDisk(root, {
    files: {
      "bin/serve": `#!/bin/sh
trap 'echo "STOPPING on TERM"; exit 3' TERM
# An orphan: its parent exits at once, so PID 1 must reap it.
sh -c 'sleep 0.2 &'
sleep 1
echo "ZOMBIES: $(cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ')"
echo READY
while :; do sleep 1; done
`,
    },
  });
  await buildConfigDisk(cfg, { env: [], entrypoint: ["/bin/serve"], exposedPorts: [] });
  const r = await bootVm({
    kernel: set.kernel.path,
    initrd: set.initrd.path,
    cmdline: initCmdline({ configDevice: "/dev/vdb", rootMode: "ro" }),
    disks: [{ path: root, readOnly: true }, { path: cfg, readOnly: true }],
    interact: [{ waitFor: /^READY\r?$/m, monitor: "sendkey ctrl-alt-delete" }],
  });
  assert.match(r.console, /^ZOMBIES: 0$/m, consoleTail(r.console));
  assert.match(r.console, /STOPPING on TERM/, consoleTail(r.console));
  assert.equal(r.exitCode, 3, consoleTail(r.console));
});
