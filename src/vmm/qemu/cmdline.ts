/**
 * @module
 * Builds the `qemu-system-x86_64` command line for a {@linkcode VmSpec}. Pure:
 * no I/O, so tests can read the exact argv.
 *
 * Every host file QEMU reads or writes is opened by ovm's spawn wrapper and
 * handed over as a file descriptor (`/proc/self/fd/N`), so QEMU — running as an
 * unprivileged user under seccomp — needs no path access into `$OVM_HOME`. The
 * QMP socket is created relative to QEMU's working directory (the instance's
 * `vm/` directory), which also keeps it clear of the 108-byte socket path limit.
 *
 * The root disk is a chain of `-blockdev` nodes built from the disk-layer blobs
 * in place: `file` (read-only blob) → `raw` (offset 512, length of the image)
 * → `qcow2` (backing = the layer below, or null for the base). A raw base stops
 * at the `raw` node. The instance's overlay is a qcow2 created without a
 * backing name whose backing is given here, at run time, as the top layer's node.
 */
import type { PassedFile } from "../../process/mod.ts";
import { passedFdPath } from "../../process/mod.ts";
import type { DeviceStatus, VmSpec } from "../adapter.ts";

export interface QemuCommand {
  args: string[];
  /** Files the wrapper opens for QEMU, index i seen as `passedFdPath(i)`. */
  passFiles: PassedFile[];
  /** QMP socket, relative to the working directory `spec.vmDir`. */
  qmpSocketName: string;
  /** Files QEMU creates that must be removed after it exits. */
  runtimeFiles: string[];
  devices: DeviceStatus[];
}

export const QMP_SOCKET_NAME = "qmp.sock";

/** The virtio-serial port ovms-init gives the workload as stdin (`ovms.stdin=port`). */
export const STDIN_PORT = "ovms.stdin";

/** The fw_cfg file that carries the guest identity document. */
export const IDENTITY_FW_CFG = "opt/ovms/identity";

export const SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/** The guest RAM file of a VM booted cold (spec section 8.2): snapshots read it back. */
export function ramPath(instanceId: string): string {
  return `/dev/shm/ovm-${instanceId}-ram`;
}

/** The migration socket, relative to the VM's working directory (spec section 8.3). */
export const MIGRATION_SOCKET_NAME = "migrate.sock";

/** The shared-memory file of an ivshmem device (spec section 7). */
export function ivshmemPath(instanceId: string, deviceName: string): string {
  return `/dev/shm/ovm-${instanceId}-${deviceName}`;
}

export function buildQemuCommand(
  spec: VmSpec,
  options: {
    incoming?: boolean;
    paused?: boolean;
    /** Bridge mode: the inherited TAP queue of each NIC (else QEMU opens the TAP by name). */
    tapFds?: number[];
  } = {},
): QemuCommand {
  const passFiles: PassedFile[] = [];
  const fd = (path: string, mode: PassedFile["mode"]): string => {
    passFiles.push({ path, mode });
    return passedFdPath(passFiles.length - 1);
  };
  const memMiB = Math.ceil(spec.memoryBytes / (1024 * 1024));
  const mem = spec.memory ?? { path: ramPath(spec.id), share: true, create: true };
  const args: string[] = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-name",
    `ovm-${spec.id}`,
    "-accel",
    spec.accel,
    "-cpu",
    spec.accel === "kvm" ? "host" : "max",
    "-smp",
    String(spec.cpus),
    "-m",
    `${memMiB}M`,
    // Guest RAM is a named file backend: shared for a cold boot, so a RAM
    // snapshot reads the file back once the guest is stopped (migration with
    // x-ignore-shared then carries only device state); private for a
    // restore, so the snapshot's template is copy-on-write and never written.
    "-object",
    `memory-backend-file,id=ram0,size=${memMiB}M,share=${
      mem.share ? "on" : "off"
    },mem-path=${mem.path}`,
    "-machine",
    "q35,memory-backend=ram0",
    "-no-reboot",
    "-sandbox",
    SANDBOX,
    "-qmp",
    `unix:${QMP_SOCKET_NAME},server=on,wait=off`,
    "-chardev",
    // append=on: QEMU reopens the path, and would truncate it otherwise (a
    // resumed instance's console log goes on, spec 8.7).
    `file,id=console0,path=${fd(spec.consoleLog, "append")},append=on`,
    "-serial",
    "chardev:console0",
    "-kernel",
    fd(spec.kernel, "read"),
  ];
  if (spec.initrd) args.push("-initrd", fd(spec.initrd, "read"));
  args.push("-append", spec.cmdline);

  if (spec.rootDisk) {
    let lower: string | null = null;
    spec.rootDisk.layers.forEach((layer, i) => {
      const n = `layer${i}`;
      args.push(
        "-blockdev",
        json({
          driver: "file",
          "node-name": `${n}-file`,
          filename: fd(layer.path, "read"),
          "read-only": true,
        }),
      );
      args.push(
        "-blockdev",
        json({
          driver: "raw",
          "node-name": layer.format === "raw" ? n : `${n}-raw`,
          file: `${n}-file`,
          offset: layer.offset,
          size: layer.length,
          "read-only": true,
        }),
      );
      if (layer.format === "qcow2") {
        args.push(
          "-blockdev",
          json({
            driver: "qcow2",
            "node-name": n,
            file: `${n}-raw`,
            backing: lower,
            "read-only": true,
          }),
        );
      }
      lower = n;
    });
    args.push(
      "-blockdev",
      json({
        driver: "file",
        "node-name": "overlay-file",
        filename: fd(spec.rootDisk.overlay, "readwrite"),
      }),
    );
    args.push(
      "-blockdev",
      json({
        driver: "qcow2",
        "node-name": "overlay",
        file: "overlay-file",
        backing: lower,
      }),
    );
    args.push("-device", "virtio-blk-pci,drive=overlay,id=root,serial=ovm-root");
  }
  spec.extraDisks.forEach((d, i) => {
    args.push(
      "-blockdev",
      json({
        driver: "file",
        "node-name": `extra${i}-file`,
        filename: fd(d.path, d.readOnly ? "read" : "readwrite"),
        "read-only": d.readOnly,
      }),
    );
    args.push(
      "-blockdev",
      json({
        driver: "raw",
        "node-name": `extra${i}`,
        file: `extra${i}-file`,
        "read-only": d.readOnly,
      }),
    );
    args.push("-device", `virtio-blk-pci,drive=extra${i},id=extra${i},serial=ovm-extra${i}`);
  });

  const runtimeFiles: string[] = [];
  const devices: DeviceStatus[] = [];
  for (const dev of spec.devices) {
    const path = ivshmemPath(spec.id, dev.name);
    runtimeFiles.push(path);
    args.push(
      "-object",
      `memory-backend-file,id=shm-${dev.name},share=on,mem-path=${path},size=${dev.size}`,
      "-device",
      `ivshmem-plain,memdev=shm-${dev.name},id=ivshmem-${dev.name},master=on`,
    );
    devices.push({
      type: dev.type,
      name: dev.name,
      size: dev.size,
      mmioAddr: dev.mmio_addr,
      hostPath: path,
      guestLocation: "PCI device 1af4:1110 (ivshmem-plain), region in BAR2; " +
        "the guest firmware assigns its address (see /sys/bus/pci/devices/*/resource)",
    });
  }

  // A new generation id per VM: a restored clone's guest sees it change
  // (ACPI notify), the signal for it to reseed its RNG (spec section 8.4).
  if (spec.vmgenid) args.push("-device", `vmgenid,id=vmgenid0,guid=${spec.vmgenid}`);

  if (spec.network.mode === "user") {
    const fwd = spec.network.publish.map((p) =>
      `,hostfwd=${p.protocol}:${p.hostIp}:${p.hostPort}-:${p.guestPort}`
    ).join("");
    args.push("-netdev", `user,id=net0${fwd}`, "-device", "virtio-net-pci,netdev=net0,id=nic0");
  } else if (spec.network.mode === "bridge") {
    // ovm opened each TAP's queue and QEMU inherits it: QEMU needs neither
    // /dev/net/tun nor privileges, and runs no helper script.
    (spec.network.nics ?? []).forEach((nic, i) => {
      const fd = options.tapFds?.[i];
      args.push(
        "-netdev",
        fd !== undefined
          ? `tap,id=net${i},fd=${fd}`
          : `tap,id=net${i},ifname=${nic.tap},script=no,downscript=no`,
        "-device",
        `virtio-net-pci,netdev=net${i},id=nic${i},mac=${nic.mac}`,
      );
    });
  }
  if (spec.stdin) {
    // The workload's stdin (spec 13.3): QEMU's own stdin (the wrapper opens spec.stdin as fd 0)
    // feeds a virtio-serial port; QEMU reads it only while the guest holds the port open, and
    // its end of file closes the port, which the guest reads as end of file.
    args.push(
      "-device",
      "virtio-serial-pci,id=vser0",
      "-chardev",
      "stdio,id=stdin0,signal=off",
      "-device",
      `virtserialport,bus=vser0.0,chardev=stdin0,name=${STDIN_PORT}`,
    );
  }
  // The guest identity (spec section 7.6.6), read by ovms-init through qemu_fw_cfg.
  if (spec.identity) args.push("-fw_cfg", `name=${IDENTITY_FW_CFG},string=${spec.identity}`);
  if (mem.create) runtimeFiles.push(mem.path);
  if (options.incoming) args.push("-incoming", "defer");
  // -S: the vCPUs stay stopped after an incoming migration until `cont`.
  if (options.paused) args.push("-S");
  return { args, passFiles, qmpSocketName: QMP_SOCKET_NAME, runtimeFiles, devices };
}

function json(v: Record<string, unknown>): string {
  return JSON.stringify(v);
}
