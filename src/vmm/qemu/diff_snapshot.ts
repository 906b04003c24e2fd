/**
 * @module
 * RAM snapshots of a QEMU VM that was itself restored from a snapshot
 * (spec 8.6). Its guest RAM is the snapshot's memory template mapped
 * privately, which `migrate` with `x-ignore-shared` would send page by page.
 * Instead, with the vCPUs stopped:
 *
 * 1. QMP `xen-save-devices-state` (`live: false`) writes the device sections
 *    only — no configuration, no RAM (`qemu_save_device_state`,
 *    migration/savevm.c) — into a file in QEMU's working directory (it runs
 *    sandboxed and cannot be handed a descriptor by ovm).
 * 2. The pages the guest changed are the private pages of the template
 *    mapping (`/proc/<pid>/pagemap`), read from `/proc/<pid>/mem`.
 *
 * The device state restores through the ordinary `-incoming` path once it is
 * spliced behind the head (configuration, firmware RAM blocks) of the stream
 * the template came with ({@linkcode spliceDeviceState}).
 * `xen-load-devices-state` itself cannot load it on QEMU 7.2: it ends with
 * `migration_incoming_state_destroy()`, which unregisters a yank instance
 * that only `-incoming` registers, and QEMU aborts (util/yank.c:
 * `yank_unregister_instance: Assertion 'entry' failed`).
 */
import { dirname, join } from "node:path";
import { VmmError } from "../../errors.ts";
import {
  MAX_DEVICE_STATE,
  type SnapshotFiles,
  type SnapshotOptions,
  type VmHandle,
} from "../adapter.ts";
import { spliceDeviceState } from "./migration_stream.ts";
import { QmpClient } from "./qmp.ts";
import { changedRanges, copyRanges, fileMappings } from "../../snapshot/mod.ts";

/** The memory template a restored QEMU maps privately (from its command line), if any. */
export function restoredTemplate(handle: VmHandle): string | undefined {
  for (const a of handle.argv) {
    const m = /^memory-backend-file,id=ram0,.*share=off,mem-path=(.+)$/.exec(a);
    if (m) return m[1];
  }
  return undefined;
}

/**
 * Stops the vCPUs of restored VM `handle` and captures its device state,
 * changed pages and overlay into `options.dest`. The template's directory
 * holds the device state it came with (`device-state`, spec 8.3). The VM
 * stays stopped; the caller resumes it (also when this fails).
 */
export async function snapshotRestored(
  handle: VmHandle,
  options: SnapshotOptions,
  vm: { template: string; memoryBytes: number; cmdline: string; machine: string },
): Promise<SnapshotFiles> {
  await using qmp = await QmpClient.connect(handle.controlSocket, { cwdPid: handle.pid });
  await qmp.execute("stop");
  const name = `ovm-devices-${crypto.randomUUID()}`;
  // QEMU writes it relative to its working directory (the VM directory,
  // wherever it was moved to: /proc/<pid>/cwd follows it).
  const written = `/proc/${handle.pid}/cwd/${name}`;
  try {
    await qmp.execute("xen-save-devices-state", { filename: name, live: false });
    const devices = await readOwnedFile(written, handle);
    const parent = await Deno.readFile(join(dirname(vm.template), "device-state"));
    const deviceState = join(options.dest, "device-state");
    await Deno.writeFile(deviceState, spliceDeviceState(parent, devices), {
      createNew: true,
      mode: 0o600,
    });
    const maps = await fileMappings(handle.pid, vm.template);
    if (!maps.length) {
      throw new VmmError("qemu", "snapshot", `the VM does not map its template "${vm.template}"`);
    }
    const ranges = await changedRanges(handle.pid, maps, vm.memoryBytes);
    const pages = join(options.dest, "pages");
    await copyRanges(handle.pid, maps, ranges, pages, { signal: options.signal });
    let disk: SnapshotFiles["disk"];
    if (options.overlay) {
      // `stop` drained and flushed the disks; QEMU keeps the overlay open
      // (not inactivated), so the file may end mid-sector: the layer is used
      // as a raw range of whole sectors, and qcow2 ignores trailing zeros.
      disk = { path: join(options.dest, "disk.qcow2"), whole: false };
      await Deno.copyFile(options.overlay, disk.path);
      const len = (await Deno.stat(disk.path)).size;
      if (len % 512) await Deno.truncate(disk.path, len + 512 - (len % 512));
    }
    return {
      memory: vm.template,
      memoryBytes: vm.memoryBytes,
      deviceState,
      vmmVersion: qmp.version,
      machine: vm.machine,
      cmdline: vm.cmdline,
      diff: { ranges, pages },
      ...(disk ? { disk } : {}),
    };
  } finally {
    await Deno.remove(written).catch(() => {});
  }
}

/**
 * Reads a file QEMU wrote in its own directory. QEMU is not trusted: the
 * file must be a regular file owned by the VMM's user (not a link to a file
 * of root's, not a FIFO) and at most {@linkcode MAX_DEVICE_STATE} bytes.
 */
async function readOwnedFile(path: string, handle: VmHandle): Promise<Uint8Array> {
  const owner = (await Deno.stat(handle.controlSocket).catch(() => undefined))?.uid;
  const pre = await Deno.lstat(path);
  if (!pre.isFile) throw new VmmError("qemu", "snapshot", `"${path}" is not a regular file`);
  using f = await Deno.open(path, { read: true });
  const st = await f.stat();
  if (!st.isFile || (owner !== undefined && owner !== null && st.uid !== owner)) {
    throw new VmmError("qemu", "snapshot", `"${path}" is not a file the VMM wrote`);
  }
  if (st.size > MAX_DEVICE_STATE) {
    throw new VmmError("qemu", "snapshot", `device state exceeds ${MAX_DEVICE_STATE} bytes`);
  }
  const buf = new Uint8Array(st.size);
  let got = 0;
  while (got < buf.byteLength) {
    const n = await f.read(buf.subarray(got));
    if (n === null) break;
    got += n;
  }
  return buf.subarray(0, got);
}
