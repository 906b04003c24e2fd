/**
 * What the non-QEMU runtimes pay to give a VMM real disk files (spec 12.2):
 * copying the layers out of their blobs (Cherrybomb, Cloud Hypervisor) and
 * flattening the chain to one sparse raw file (Firecracker), against a plain
 * `cp` of the same blobs (baseline). QEMU uses the blobs in place (no cost).
 *
 * Layers: a 256 MiB qcow2 base holding 64 MiB of data and a qcow2 diff of
 * 16 MiB, each at offset 512 of its blob like an OVMS disk-layer tar.
 */
import { join } from "node:path";
import { flattenToRaw, materializeLayers } from "../src/vmm/descriptor/chain_files.ts";
import type { DiskLayerFile } from "../src/vmm/adapter.ts";

const dir = await Deno.makeTempDir({ prefix: "ovm-bench-disks-" });
function sh(cmd: string, ...args: string[]) {
  const out = new Deno.Command(cmd, { args, stderr: "piped", stdout: "null" }).outputSync();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}
const base = join(dir, "base.qcow2");
const top = join(dir, "top.qcow2");
sh("qemu-img", "create", "-q", "-f", "qcow2", base, "256M");
sh("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64M", base);
sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top);
sh("qemu-io", "-f", "qcow2", "-c", "write -P 0xa5 128M 16M", top);
sh("qemu-img", "rebase", "-u", "-b", "", top);
const layers: DiskLayerFile[] = [];
for (const [name, img] of [["base.blob", base], ["top.blob", top]]) {
  const data = Deno.readFileSync(img);
  const blob = new Uint8Array(512 + data.byteLength);
  blob.set(data, 512);
  Deno.writeFileSync(join(dir, name), blob);
  layers.push({
    path: join(dir, name),
    offset: 512,
    length: data.byteLength,
    format: "qcow2",
    virtualSize: 256 << 20,
  });
}
let n = 0;
const fresh = () => {
  const d = join(dir, `out${n++}`);
  Deno.mkdirSync(d);
  return d;
};

Deno.bench("cp of both layer blobs (baseline)", { group: "disks", baseline: true }, async () => {
  const d = fresh();
  for (const l of layers) await Deno.copyFile(l.path, join(d, "x" + l.path.slice(-8)));
  await Deno.remove(d, { recursive: true });
});

Deno.bench("materializeLayers (cherrybomb, cloud-hypervisor)", { group: "disks" }, async () => {
  const d = fresh();
  await materializeLayers(layers, d, { adapter: "bench" });
  await Deno.remove(d, { recursive: true });
});

Deno.bench("flattenToRaw (firecracker)", { group: "disks" }, async () => {
  const d = fresh();
  await flattenToRaw(layers, join(d, "root.raw"), { adapter: "bench" });
  await Deno.remove(d, { recursive: true });
});

globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
