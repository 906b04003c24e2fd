/**
 * `ovm convert` against the same work done by hand: `umoci unpack` +
 * `mkfs.ext4 -d`. Builds an OCI image of about SIZE MiB (real files copied
 * from /usr, gzip layers, made with umoci), then runs each side RUNS times
 * and prints wall time and peak RSS (the largest process, from GNU time).
 *
 *   deno run -A bench/convert_vs_manual.ts [--size-mib 200] [--runs 2]
 *
 * ovm's side includes what the manual side does not: ensureSystem (already
 * installed: metadata only), layer digest checks, the reproducibility pass
 * (debugfs), and the copy of kernel, initrd and disk into the store.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ensureSystem } from "../src/system/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { "size-mib": { type: "string" }, runs: { type: "string" } },
});
const SIZE = Number(values["size-mib"] ?? 200) * 1024 * 1024;
const RUNS = Number(values.runs ?? 2);
const CACHE = Deno.env.get("OVM_TEST_CACHE") ?? "/tmp/ovm-test-cache";
const MAIN = new URL("../main.ts", import.meta.url).pathname;

async function sh(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const dec = new TextDecoder();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout) + dec.decode(out.stderr);
}

/** Wall seconds and peak RSS (KiB) of one command, via GNU time. */
async function timed(
  cmd: string,
  args: string[],
): Promise<{ secs: number; rssKiB: number; out: string }> {
  const out = await sh("/usr/bin/time", ["-f", "TIME %e %M", cmd, ...args]);
  const m = /TIME ([0-9.]+) ([0-9]+)/.exec(out);
  if (!m) throw new Error(`no timing in: ${out}`);
  return { secs: Number(m[1]), rssKiB: Number(m[2]), out };
}

/** Copies regular files from /usr/lib and /usr/share until `size` bytes are in `root`. */
async function fillRoot(root: string, size: number): Promise<number> {
  let total = 0;
  const walk = async (src: string, dst: string): Promise<boolean> => {
    let entries: Deno.DirEntry[] = [];
    try {
      for await (const e of Deno.readDir(src)) entries.push(e);
    } catch {
      return true;
    }
    entries = entries.sort((a, b) => a.name.localeCompare(b.name));
    await Deno.mkdir(dst, { recursive: true });
    for (const e of entries) {
      if (total >= size) return false;
      const s = join(src, e.name);
      const d = join(dst, e.name);
      if (e.isSymlink) {
        await Deno.symlink(await Deno.readLink(s), d).catch(() => {});
      } else if (e.isDirectory) {
        if (!(await walk(s, d))) return false;
      } else if (e.isFile) {
        await Deno.copyFile(s, d);
        total += (await Deno.stat(d)).size;
      }
    }
    return true;
  };
  for (const dir of ["/usr/lib/x86_64-linux-gnu", "/usr/share"]) {
    if (!(await walk(dir, join(root, dir.slice(1))))) break;
  }
  await Deno.mkdir(join(root, "bin"), { recursive: true });
  await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
  await Deno.symlink("busybox", join(root, "bin/sh"));
  return total;
}

const work = await Deno.makeTempDir({ prefix: "ovm-bench-convert-" });
try {
  const layout = join(work, "layout");
  const image = `${layout}:bench`;
  const bundle = join(work, "bundle");
  await sh("umoci", ["init", "--layout", layout]);
  await sh("umoci", ["new", "--image", image]);
  await sh("umoci", ["unpack", "--image", image, bundle]);
  const bytes = await fillRoot(join(bundle, "rootfs"), SIZE);
  await sh("umoci", ["repack", "--image", image, bundle]);
  await sh("umoci", ["config", "--image", image, "--config.cmd", "/bin/sh"]);
  await Deno.remove(bundle, { recursive: true });
  const layerBytes = Number((await sh("du", ["-sb", join(layout, "blobs")])).split("\t")[0]);
  console.log(
    `image: ${(bytes / 2 ** 20).toFixed(0)} MiB of files, ${
      (layerBytes / 2 ** 20).toFixed(0)
    } MiB of blobs (gzip)`,
  );

  const home = join(work, "home");
  await ensureSystem(home, { cacheDir: CACHE });
  const ovm: { secs: number; rssKiB: number; out: string }[] = [];
  const manual: { secs: number; rssKiB: number; out: string }[] = [];
  for (let i = 0; i < RUNS; i++) {
    ovm.push(
      await timed(Deno.execPath(), [
        "run",
        "-A",
        MAIN,
        "convert",
        "--home",
        home,
        `oci:${image}`,
        "-t",
        `bench/x:${i}`,
        "--progress",
        "none",
        "--json",
      ]),
    );
    const b = join(work, `manual-${i}`);
    const u = await timed("umoci", ["unpack", "--image", image, b]);
    // Same sizing rule as ovm: contents + 10 % + 64 MiB buffer, 4 MiB journal.
    const used = Number((await sh("du", ["-sb", join(b, "rootfs")])).split("\t")[0]);
    const sizeK = Math.ceil((used * 1.1 + 64 * 2 ** 20 + 8 * 2 ** 20) / 1024);
    const m = await timed("mkfs.ext4", [
      "-q",
      "-F",
      "-d",
      join(b, "rootfs"),
      join(work, `manual-${i}.raw`),
      `${sizeK}k`,
    ]);
    manual.push({
      secs: u.secs + m.secs,
      rssKiB: Math.max(u.rssKiB, m.rssKiB),
      out: `umoci unpack ${u.secs} s, mkfs.ext4 ${m.secs} s`,
    });
    await Deno.remove(b, { recursive: true });
    await Deno.remove(join(work, `manual-${i}.raw`));
  }
  const best = (xs: { secs: number; rssKiB: number; out: string }[]) =>
    xs.reduce((a, b) => (a.secs <= b.secs ? a : b));
  const o = best(ovm);
  const m = best(manual);
  console.log("| what | best wall time | peak RSS (largest process) |");
  console.log("|---|---|---|");
  console.log(
    `| umoci unpack + mkfs.ext4 -d | ${m.secs.toFixed(1)} s | ${
      (m.rssKiB / 1024).toFixed(0)
    } MiB |`,
  );
  console.log(`| ovm convert | ${o.secs.toFixed(1)} s | ${(o.rssKiB / 1024).toFixed(0)} MiB |`);
  const json = JSON.parse(o.out.slice(o.out.indexOf("{"), o.out.lastIndexOf("}") + 1));
  console.log(`ovm phases (ms): ${JSON.stringify(json.timings)}`);
  console.log(`manual phases: ${m.out}`);
  console.log(`ratio ovm/manual: time ${(o.secs / m.secs).toFixed(2)}, runs: ${RUNS}`);
} finally {
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
