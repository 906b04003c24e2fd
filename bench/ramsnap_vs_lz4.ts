/**
 * @module
 * RAM-snapshot decompression into tmpfs: ovm's parallel decoder against
 * `lz4 -d` of the same blob, alternating runs. Also encode throughput.
 *
 *   deno run -A bench/ramsnap_vs_lz4.ts [sizeMiB=1024] [runs=5]   (CONC=N: decoder concurrency)
 */
import { join } from "node:path";
import { decodeRamsnap, encodeRamsnap } from "../src/snapshot/mod.ts";

const sizeMiB = Number(Deno.args[0] ?? 1024);
const runs = Number(Deno.args[1] ?? 5);
const size = sizeMiB << 20;
const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "ovm-bench-ramsnap-" });

try {
  // Guest-like memory: a quarter random (incompressible), a quarter text-like, half zero pages.
  const mem = join(dir, "mem");
  {
    using f = await Deno.open(mem, { write: true, create: true });
    const chunk = new Uint8Array(1 << 20);
    for (let i = 0; i < sizeMiB; i++) {
      const kind = i % 4;
      if (kind === 0) {
        for (let o = 0; o < chunk.length; o += 65536) {
          crypto.getRandomValues(chunk.subarray(o, o + 65536));
        }
      } else if (kind === 1) {
        for (let o = 0; o < chunk.length; o++) chunk[o] = 97 + ((o * 7) % 26);
      } else chunk.fill(0);
      await f.write(chunk);
    }
  }
  const blob = join(dir, "snap.lz4");
  let t = performance.now();
  {
    using f = await Deno.open(blob, { write: true, create: true });
    for await (const c of encodeRamsnap([{ name: "memory", path: mem, size }])) {
      let off = 0;
      while (off < c.length) off += await f.write(c.subarray(off));
    }
  }
  const encMs = performance.now() - t;
  const blobSize = (await Deno.stat(blob)).size;
  console.log(
    `encode: ${sizeMiB} MiB in ${encMs.toFixed(0)} ms (${
      (size / encMs / 1e6).toFixed(2)
    } GB/s), blob ${(blobSize / 2 ** 20).toFixed(1)} MiB`,
  );

  const ovm: number[] = [];
  const lz4: number[] = [];
  for (let r = 0; r < runs; r++) {
    const out = join(dir, "out");
    t = performance.now();
    await decodeRamsnap(blob, { memory: out }, {
      concurrency: Number(Deno.env.get("CONC") ?? 0) || undefined,
    });
    ovm.push(performance.now() - t);
    await Deno.remove(out);
    t = performance.now();
    const res = await new Deno.Command("lz4", {
      args: ["-d", "-q", "-f", blob, out],
      stderr: "piped",
    }).output();
    lz4.push(performance.now() - t);
    if (!res.success) throw new Error(new TextDecoder().decode(res.stderr));
    await Deno.remove(out);
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const gbs = (ms: number) => (size / ms / 1e6).toFixed(2);
  console.log(
    `decode into tmpfs, median of ${runs}: ovm ${med(ovm).toFixed(0)} ms (${
      gbs(med(ovm))
    } GB/s), lz4 -d ${med(lz4).toFixed(0)} ms (${gbs(med(lz4))} GB/s)`,
  );
  console.log(
    `ratio ovm/lz4 time: ${(med(ovm) / med(lz4)).toFixed(2)} (speed ${
      (med(lz4) / med(ovm)).toFixed(2)
    }x of lz4 -d)`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
