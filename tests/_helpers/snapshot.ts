/**
 * @module
 * Helpers for the RAM snapshot tests and benches: a guest that counts on its
 * console (busybox sh, one line every ~200 ms), built once per file into a
 * temp home, and console probes.
 */
import { join } from "node:path";
import { pack } from "../../src/cli/pack.ts";
import { buildDemoDisks } from "../../examples/demo/build.ts";
import { ContentStore } from "../../src/store/mod.ts";
import type { Device } from "../../src/manifest/mod.ts";
import { ensureSystem, initCmdline } from "../../src/system/mod.ts";
import { instancePaths } from "../../src/runtime/mod.ts";
import { SNAPSHOT_CACHE } from "../../src/runtime/mod.ts";
import { isVmProcess, killAll } from "./runtime.ts";
import { TEST_CACHE } from "./vm.ts";

export const COUNTER_TAG = "test/counter:1";

export const COUNTER_SCRIPT = `#!/bin/sh
i=0
while true; do
  i=$((i+1))
  echo "count $i"
  usleep 200000
done
`;

export interface CounterHome extends AsyncDisposable {
  home: string;
  ref: string;
  store: ContentStore;
}

/** What a counter-like guest is made of (default: {@linkcode COUNTER_SCRIPT}, no devices). */
export interface CounterOptions {
  script?: string;
  tag?: string;
  devices?: Device[];
}

/**
 * A guest that counts like {@linkcode COUNTER_SCRIPT} and, at count
 * `writeAt`, writes `mib` MiB of random bytes into a tmpfs file; every tenth
 * count (and right after writing) it prints the file's sha256 prefix
 * ("count N blob <hex>"), read back from the file. Snapshot chains test with
 * it that a restore sees what the guest wrote, and that a diff layer holds
 * about what it wrote.
 */
export function writerScript(writeAt: number, mib: number): string {
  return `#!/bin/sh
mount -t tmpfs -o size=${mib + 16}m tmpfs /mnt
i=0
while true; do
  i=$((i+1))
  if [ $i -eq ${writeAt} ]; then
    dd if=/dev/urandom of=/mnt/blob bs=1M count=${mib} 2>/dev/null
  fi
  if [ -f /mnt/blob ] && [ $((i % 10)) -eq 0 -o $i -eq ${writeAt} ]; then
    echo "count $i blob $(sha256sum /mnt/blob | cut -c1-16)"
  else
    echo "count $i"
  fi
  usleep 200000
done
`;
}

/** Every sha256 prefix "count N blob <hex>" lines show, in order. */
export async function blobHashes(home: string, id: string): Promise<string[]> {
  const text = await Deno.readTextFile(instancePaths(home, id).consoleLog).catch(() => "");
  return [...text.matchAll(/count \d+ blob ([0-9a-f]{16})/g)].map((m) => m[1]);
}

/** Packs the counter artifact (as {@linkcode COUNTER_TAG} by default) into `store` (any home); returns its ref. */
export async function packCounter(
  store: ContentStore,
  options: CounterOptions = {},
): Promise<string> {
  const work = await Deno.makeTempDir({ prefix: "ovm-snap-build-" });
  try {
    const system = await ensureSystem(store.paths.home, { cacheDir: TEST_CACHE });
    const disks = await buildDemoDisks(work, {
      diffFiles: { "count.sh": options.script ?? COUNTER_SCRIPT },
    });
    const bootstrap = join(work, "bootstrap.json");
    await Deno.writeTextFile(bootstrap, JSON.stringify({ cmd: ["/count.sh"] }));
    const res = await pack(store, {
      kernel: system.kernel.path,
      initrd: system.initrd.path,
      disks: [{ path: disks.base, format: "qcow2" }, { path: disks.diff, format: "qcow2" }],
      args: initCmdline({ root: "/dev/vda", rootFs: "ext4", rootMode: "rw", mode: "exec" }),
      devices: options.devices ?? [],
      bootstrap,
      tag: options.tag ?? COUNTER_TAG,
      preferredRuntime: ["qemu"],
    });
    return res.ref;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** A temp home with the counter artifact; dispose kills its VMs and removes it and its templates. */
export async function counterHome(options: CounterOptions = {}): Promise<CounterHome> {
  const home = await Deno.makeTempDir({ prefix: "ovm-snap-test-" });
  try {
    const store = await ContentStore.open(home);
    const ref = await packCounter(store, options);
    return {
      home,
      ref,
      store,
      async [Symbol.asyncDispose]() {
        await killAll(home);
        await dropTemplates(store);
        await Deno.remove(home, { recursive: true }).catch(() => {});
      },
    };
  } catch (e) {
    await Deno.remove(home, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Removes the decoded templates of every ramsnap blob in `store` from the tmpfs cache. */
export async function dropTemplates(store: ContentStore): Promise<void> {
  try {
    for await (const e of Deno.readDir(join(store.root, "blobs", "sha256"))) {
      await Deno.remove(join(SNAPSHOT_CACHE, e.name), { recursive: true }).catch(() => {});
    }
  } catch { /* no store */ }
}

/** The last "count N" the instance printed, or undefined. */
export async function lastCount(home: string, id: string): Promise<number | undefined> {
  const text = await Deno.readTextFile(instancePaths(home, id).consoleLog).catch(() => "");
  const all = [...text.matchAll(/count (\d+)/g)];
  return all.length ? Number(all[all.length - 1][1]) : undefined;
}

/** Every "count N" the instance printed, in order. */
export async function counts(home: string, id: string): Promise<number[]> {
  const text = await Deno.readTextFile(instancePaths(home, id).consoleLog).catch(() => "");
  return [...text.matchAll(/count (\d+)/g)].map((m) => Number(m[1]));
}

/** Live QEMU processes waiting in `home`'s warm pool (they hold files under `<home>/pool/`). */
export async function pooledQemus(home: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || !(await isVmProcess(Number(e.name)))) continue;
    try {
      for await (const fd of Deno.readDir(`/proc/${e.name}/fd`)) {
        const target = await Deno.readLink(`/proc/${e.name}/fd/${fd.name}`).catch(() => "");
        if (target.startsWith(join(home, "pool") + "/")) {
          out.push(Number(e.name));
          break;
        }
      }
    } catch { /* gone */ }
  }
  return out;
}

/** The names in the host-wide template cache. */
export async function cacheEntries(): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(SNAPSHOT_CACHE)) out.push(e.name);
  } catch { /* none */ }
  return out.sort();
}

/**
 * Nothing of a refused decode stays in the host-wide cache: no template of
 * `hexes`, and no temp directory that was not there `before` outlives the
 * wait (other tests decode their own snapshots into the cache meanwhile, so
 * the listing as a whole is not compared).
 */
export async function assertNoDecodeLeft(before: string[], hexes: string[]): Promise<void> {
  const now = await cacheEntries();
  for (const h of hexes) {
    if (now.includes(h)) throw new Error(`template ${h} was left in ${SNAPSHOT_CACHE}`);
  }
  const fresh = now.filter((e) => e.startsWith(".tmp-") && !before.includes(e));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const still = (await cacheEntries()).filter((e) => fresh.includes(e));
    if (!still.length) return;
    if (Date.now() > deadline) {
      throw new Error(`temp directories ${still.join(", ")} were left in ${SNAPSHOT_CACHE}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
