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
import { ensureSystem, initCmdline } from "../../src/system/mod.ts";
import { instancePaths } from "../../src/runtime/mod.ts";
import { SNAPSHOT_CACHE } from "../../src/runtime/mod.ts";
import { killAll } from "./runtime.ts";
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

/** Packs the counter artifact as {@linkcode COUNTER_TAG} into `store` (any home); returns its ref. */
export async function packCounter(store: ContentStore): Promise<string> {
  const work = await Deno.makeTempDir({ prefix: "ovm-snap-build-" });
  try {
    const system = await ensureSystem(store.paths.home, { cacheDir: TEST_CACHE });
    const disks = await buildDemoDisks(work, { diffFiles: { "count.sh": COUNTER_SCRIPT } });
    const bootstrap = join(work, "bootstrap.json");
    await Deno.writeTextFile(bootstrap, JSON.stringify({ cmd: ["/count.sh"] }));
    const res = await pack(store, {
      kernel: system.kernel.path,
      initrd: system.initrd.path,
      disks: [{ path: disks.base, format: "qcow2" }, { path: disks.diff, format: "qcow2" }],
      args: initCmdline({ root: "/dev/vda", rootFs: "ext4", rootMode: "rw", mode: "exec" }),
      devices: [],
      bootstrap,
      tag: COUNTER_TAG,
      preferredRuntime: ["qemu"],
    });
    return res.ref;
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

/** A temp home with the counter artifact; dispose kills its VMs and removes it and its templates. */
export async function counterHome(): Promise<CounterHome> {
  const home = await Deno.makeTempDir({ prefix: "ovm-snap-test-" });
  try {
    const store = await ContentStore.open(home);
    const ref = await packCounter(store);
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
