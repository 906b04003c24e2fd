/**
 * The QEMU command line ovm builds, read as plain argv (no VM starts).
 */
import assert from "node:assert/strict";
import { buildQemuCommand, SANDBOX } from "../../src/vmm/qemu/mod.ts";
import type { VmSpec } from "../../src/vmm/mod.ts";
import { identityDocument } from "../../src/system/mod.ts";

function spec(over: Partial<VmSpec> = {}): VmSpec {
  return {
    id: "t1",
    kernel: "/store/k",
    initrd: "/store/i",
    cmdline: "console=ttyS0",
    memoryBytes: 256 * 1024 * 1024,
    cpus: 1,
    accel: "tcg",
    rootDisk: {
      layers: [
        { path: "/store/base", offset: 512, length: 1000, format: "qcow2", virtualSize: 4096 },
        { path: "/store/diff", offset: 512, length: 2000, format: "qcow2", virtualSize: 4096 },
      ],
      overlay: "/inst/vm/overlay.qcow2",
    },
    extraDisks: [{ path: "/inst/config.tar", readOnly: true }],
    devices: [{ type: "ivshmem", name: "shm0", size: 1 << 20, mmio_addr: "0x10000000" }],
    network: {
      mode: "user",
      publish: [{ hostIp: "127.0.0.1", hostPort: 8080, guestPort: 80, protocol: "tcp" }],
    },
    vmDir: "/inst/vm",
    consoleLog: "/inst/vm/console.log",
    detach: false,
    ...over,
  };
}

function after(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));
}

Deno.test("the disk chain is built from the blobs in place, base first, under a runtime-set overlay", () => {
  const cmd = buildQemuCommand(spec());
  const nodes = after(cmd.args, "-blockdev").map((j) => JSON.parse(j));
  const byName = new Map(nodes.map((n) => [n["node-name"], n]));
  const fdOf = (path: string) =>
    `/proc/self/fd/${3 + cmd.passFiles.findIndex((f) => f.path === path)}`;
  assert.deepEqual(byName.get("layer0-file"), {
    driver: "file",
    "node-name": "layer0-file",
    filename: fdOf("/store/base"),
    "read-only": true,
  });
  assert.deepEqual(byName.get("layer0-raw"), {
    driver: "raw",
    "node-name": "layer0-raw",
    file: "layer0-file",
    offset: 512,
    size: 1000,
    "read-only": true,
  });
  assert.equal(byName.get("layer0").backing, null);
  assert.equal(byName.get("layer1").backing, "layer0");
  assert.equal(byName.get("layer1")["read-only"], true);
  assert.equal(byName.get("overlay").backing, "layer1");
  assert.equal(byName.get("overlay-file").filename, fdOf("/inst/vm/overlay.qcow2"));
  assert.ok(cmd.args.includes("virtio-blk-pci,drive=overlay,id=root,serial=ovm-root"));
  // Layers are opened read-only; only the overlay read-write.
  assert.deepEqual(
    cmd.passFiles.filter((f) => f.mode === "readwrite").map((f) => f.path),
    ["/inst/vm/overlay.qcow2"],
  );
});

Deno.test("a raw base layer is a raw node at the tar's data offset", () => {
  const cmd = buildQemuCommand(spec({
    rootDisk: {
      layers: [{ path: "/store/raw", offset: 512, length: 4096, format: "raw", virtualSize: 4096 }],
      overlay: "/inst/vm/overlay.qcow2",
    },
  }));
  const nodes = after(cmd.args, "-blockdev").map((j) => JSON.parse(j));
  const base = nodes.find((n) => n["node-name"] === "layer0");
  assert.equal(base.driver, "raw");
  assert.equal(base.offset, 512);
  assert.equal(nodes.find((n) => n["node-name"] === "overlay").backing, "layer0");
});

Deno.test("the command line is sandboxed, has no default devices and boots the kernel directly", () => {
  const cmd = buildQemuCommand(spec());
  assert.deepEqual(after(cmd.args, "-sandbox"), [SANDBOX]);
  assert.match(SANDBOX, /elevateprivileges=deny/);
  assert.match(SANDBOX, /spawn=deny/);
  assert.ok(cmd.args.includes("-nodefaults"));
  assert.deepEqual(after(cmd.args, "-display"), ["none"]);
  assert.deepEqual(after(cmd.args, "-append"), ["console=ttyS0"]);
  assert.deepEqual(after(cmd.args, "-qmp"), ["unix:qmp.sock,server=on,wait=off"]);
  assert.deepEqual(after(cmd.args, "-accel"), ["tcg"]);
  assert.deepEqual(after(cmd.args, "-m"), ["256M"]);
  assert.equal(cmd.passFiles.find((f) => f.path === "/inst/vm/console.log")?.mode, "append");
});

Deno.test("an ivshmem device is a shared-memory file named after the instance and device", () => {
  const cmd = buildQemuCommand(spec());
  assert.ok(cmd.args.includes(
    "memory-backend-file,id=shm-shm0,share=on,mem-path=/dev/shm/ovm-t1-shm0,size=1048576",
  ));
  // master=on: without it QEMU 7.2 blocks migration, hence RAM snapshots (spec 8.3).
  assert.ok(cmd.args.includes("ivshmem-plain,memdev=shm-shm0,id=ivshmem-shm0,master=on"));
  assert.deepEqual(cmd.runtimeFiles, ["/dev/shm/ovm-t1-shm0", "/dev/shm/ovm-t1-ram"]);
  assert.equal(cmd.devices[0].mmioAddr, "0x10000000");
  assert.equal(cmd.devices[0].hostPath, "/dev/shm/ovm-t1-shm0");
});

Deno.test("published ports become user-network host forwards; --net none adds no NIC", () => {
  const user = buildQemuCommand(spec());
  assert.deepEqual(after(user.args, "-netdev"), ["user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80"]);
  const none = buildQemuCommand(spec({ network: { mode: "none", publish: [] } }));
  assert.deepEqual(after(none.args, "-netdev"), []);
  assert.ok(!none.args.some((a) => a.startsWith("virtio-net")));
});

Deno.test("bridge NICs are tap netdevs on the inherited TAP queues with their MACs, and the identity a fw_cfg file", () => {
  const identity = identityDocument({
    generation: "0b9a6c2e-1f7e-4d55-9a0e-3c3d2f1e0a11",
    hostname: "t1",
    nics: [{ mac: "02:4f:0a:59:00:02", address: "10.89.0.2/24", gateway: "10.89.0.1" }],
  });
  const s = spec({
    network: {
      mode: "bridge",
      publish: [],
      nics: [{ tap: "ovt1234abcd0", mac: "02:4f:0a:59:00:02" }],
    },
    identity,
  });
  const byFd = buildQemuCommand(s, { tapFds: [64] });
  assert.deepEqual(after(byFd.args, "-netdev"), ["tap,id=net0,fd=64"]);
  assert.ok(
    byFd.args.includes("virtio-net-pci,netdev=net0,id=nic0,mac=02:4f:0a:59:00:02"),
    byFd.args.join(" "),
  );
  // Without an inherited queue QEMU opens the TAP by name, never through a helper script.
  const byName = buildQemuCommand(s);
  assert.deepEqual(after(byName.args, "-netdev"), [
    "tap,id=net0,ifname=ovt1234abcd0,script=no,downscript=no",
  ]);
  // No hostfwd in bridge mode: nftables publishes the ports.
  assert.ok(!byFd.args.some((a) => a.includes("hostfwd")));
  const fwcfg = after(byFd.args, "-fw_cfg");
  assert.equal(fwcfg.length, 1);
  assert.ok(fwcfg[0].startsWith("name=opt/ovms/identity,string=generation=0b9a6c2e-"));
  assert.ok(!fwcfg[0].slice("name=opt/ovms/identity,string=".length).includes(","));
});

Deno.test("a VM with stdin feeds QEMU's stdin to the virtio-serial port ovms.stdin", () => {
  const none = buildQemuCommand(spec());
  assert.ok(!none.args.some((a) => a.includes("virtserialport")));
  const cmd = buildQemuCommand(spec({ stdin: "/bundle/ovm-stdin" }));
  assert.deepEqual(after(cmd.args, "-chardev").filter((c) => c.startsWith("stdio")), [
    "stdio,id=stdin0,signal=off",
  ]);
  assert.ok(after(cmd.args, "-device").includes("virtio-serial-pci,id=vser0"));
  assert.ok(
    after(cmd.args, "-device").includes(
      "virtserialport,bus=vser0.0,chardev=stdin0,name=ovms.stdin",
    ),
  );
  // The FIFO is QEMU's stdin (the spawn wrapper opens it), not a passed file.
  assert.ok(!cmd.passFiles.some((f) => f.path === "/bundle/ovm-stdin"));
});
