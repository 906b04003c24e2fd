/**
 * Push and pull the same artifact with `ovm` and with `skopeo copy` against
 * one loopback docker-registry, alternating runs, and fetch its blobs with
 * `curl` as the floor. Prints medians and ratios.
 *
 *   deno run -A bench/pull_push_vs_skopeo.ts [--size 1G] [--runs 3]
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ContentStore } from "../src/store/mod.ts";
import { pack } from "../src/cli/pack.ts";
import { parseSize } from "../src/util/size.ts";
import { startRegistry } from "../tests/_helpers/registry.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { size: { type: "string", default: "1G" }, runs: { type: "string", default: "3" } },
});
const size = parseSize(values.size!);
const runs = Number(values.runs);
const main = new URL("../main.ts", import.meta.url).pathname;
const SKOPEO_CACHE = "/var/lib/containers/cache/blob-info-cache-v1.boltdb";

async function sh(cmd: string, args: string[], env?: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(cmd, { args, env, stdout: "null", stderr: "piped" }).output();
  const ms = performance.now() - t0;
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const work = await Deno.makeTempDir({ prefix: "ovm-bench-" });
await using reg = await startRegistry();
try {
  const srcHome = join(work, "src");
  const disk = join(work, "disk.raw");
  console.error(`making a ${values.size} disk of random bytes…`);
  await sh("sh", ["-c", `head -c ${size} /dev/urandom > ${disk}`]);
  await Deno.writeFile(join(work, "vmlinuz"), crypto.getRandomValues(new Uint8Array(65536)));
  const store = await ContentStore.open(srcHome);
  const packed = await pack(store, {
    kernel: join(work, "vmlinuz"),
    disks: [{ path: disk, format: "raw" }],
    devices: [],
    tag: "bench/vm:1.0",
  });
  await Deno.remove(disk);
  const digest = packed.descriptor.digest;
  // skopeo reads the same bytes from the store (an OCI layout) by digest.
  const layout = join(work, "layout");
  await sh("skopeo", ["copy", `oci:${store.root}:bench/vm:1.0`, `oci:${layout}:vm`]);
  const manifest = JSON.parse(new TextDecoder().decode(await store.readBlob(digest)));
  const blobs: { digest: string; size: number }[] = [manifest.config, ...manifest.layers];
  const total = blobs.reduce((n, b) => n + b.size, 0);

  const ovm = (home: string, ...args: string[]) =>
    sh(Deno.execPath(), ["run", "-A", main, ...args, "--home", home, "-q"]);
  const times: Record<string, number[]> = {
    "push ovm": [],
    "push skopeo": [],
    "pull ovm": [],
    "pull skopeo": [],
    "pull curl": [],
    "curl+sha256": [],
    "curl+sha+sync": [],
  };
  // Seed a repo both pull contenders read.
  await ovm(srcHome, "push", "bench/vm:1.0", `${reg.host}/bench/pull:1.0`);
  for (let i = 0; i < runs; i++) {
    console.error(`run ${i + 1}/${runs}`);
    // Push: a fresh registry per contender and run, and no skopeo blob-info
    // cache, so nothing is skipped or mounted.
    {
      await using r1 = await startRegistry();
      times["push ovm"].push(await ovm(srcHome, "push", "bench/vm:1.0", `${r1.host}/bench/o:1`));
    }
    {
      await using r2 = await startRegistry();
      await Deno.remove(SKOPEO_CACHE).catch(() => {});
      times["push skopeo"].push(
        await sh("skopeo", [
          "copy",
          "--dest-tls-verify=false",
          `oci:${layout}:vm`,
          `docker://${r2.host}/bench/s:1`,
        ]),
      );
    }
    const home = join(work, `pull-ovm-${i}`);
    times["pull ovm"].push(await ovm(home, "pull", `${reg.host}/bench/pull:1.0`));
    await Deno.remove(home, { recursive: true });
    const dir = join(work, `pull-skopeo-${i}`);
    times["pull skopeo"].push(
      await sh("skopeo", [
        "copy",
        "--src-tls-verify=false",
        `docker://${reg.host}/bench/pull:1.0`,
        `oci:${dir}:vm`,
      ]),
    );
    await Deno.remove(dir, { recursive: true });
    const cdir = join(work, `curl-${i}`);
    await Deno.mkdir(cdir);
    // curl fetches the blobs in parallel, as both contenders may.
    times["pull curl"].push(
      await sh("sh", [
        "-c",
        blobs.map((b) =>
          `curl -sf -o ${cdir}/${b.digest.slice(7)} ${reg.url}/v2/bench/pull/blobs/${b.digest}`
        ).map((c) => `${c} &`).join(" ") + " wait",
      ]),
    );
    await Deno.remove(cdir, { recursive: true });
    await Deno.mkdir(cdir);
    // The same, plus verifying the digests (what a pull must do at least).
    times["curl+sha256"].push(
      await sh("sh", [
        "-c",
        blobs.map((b) =>
          `(curl -sf ${reg.url}/v2/bench/pull/blobs/${b.digest} | tee ${cdir}/${
            b.digest.slice(7)
          } | openssl dgst -sha256 >/dev/null) &`
        ).join(" ") + " wait",
      ]),
    );
    await Deno.remove(cdir, { recursive: true });
    await Deno.mkdir(cdir);
    // …and making the files durable, as ovm and skopeo (oci: layout) both do.
    times["curl+sha+sync"].push(
      await sh("sh", [
        "-c",
        blobs.map((b) =>
          `(curl -sf ${reg.url}/v2/bench/pull/blobs/${b.digest} | tee ${cdir}/${
            b.digest.slice(7)
          } | openssl dgst -sha256 >/dev/null && sync ${cdir}/${b.digest.slice(7)}) &`
        ).join(" ") + " wait",
      ]),
    );
    await Deno.remove(cdir, { recursive: true });
  }
  const mib = total / (1 << 20);
  console.log(
    `artifact: ${blobs.length} blobs, ${mib.toFixed(0)} MiB; ${runs} alternating runs; median`,
  );
  for (const [k, v] of Object.entries(times)) {
    const m = median(v);
    console.log(
      `${k.padEnd(14)} ${(m / 1000).toFixed(2).padStart(6)} s  ${
        (mib / (m / 1000)).toFixed(0).padStart(5)
      } MiB/s  runs: ${v.map((x) => (x / 1000).toFixed(2)).join(" ")}`,
    );
  }
  const r = (a: string, b: string) => (median(times[a]) / median(times[b])).toFixed(2);
  console.log(`ratio push ovm/skopeo: ${r("push ovm", "push skopeo")}`);
  console.log(`ratio pull ovm/skopeo: ${r("pull ovm", "pull skopeo")}`);
  console.log(`ratio pull ovm/curl:   ${r("pull ovm", "pull curl")}`);
  console.log(`ratio pull ovm/(curl+sha256): ${r("pull ovm", "curl+sha256")}`);
  console.log(`ratio pull ovm/(curl+sha256+sync): ${r("pull ovm", "curl+sha+sync")}`);
} finally {
  await Deno.remove(work, { recursive: true });
}
