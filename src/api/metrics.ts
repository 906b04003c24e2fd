/**
 * @module
 * Host-side metrics of an instance for `GET /status`: the VMM's CPU time
 * (/proc/<pid>/stat), its RSS and PSS (/proc/<pid>/smaps_rollup), and the
 * disk space of the instance directory. Missing files (a VM that ended, a
 * kernel without smaps_rollup) give null, not an error.
 */
import { join } from "node:path";

/** USER_HZ: the unit of utime/stime in /proc/<pid>/stat; 100 on every Linux ABI ovm runs on. */
const CLOCK_TICKS = 100;

export async function cpuTimeMs(pid: number): Promise<number | null> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
    return ((utime + stime) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

export async function memoryUse(
  pid: number,
): Promise<{ rss: number | null; pss: number | null }> {
  try {
    const text = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`);
    const kb = (key: string) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text);
      return m ? Number(m[1]) * 1024 : null;
    };
    return { rss: kb("Rss"), pss: kb("Pss") };
  } catch {
    return { rss: null, pss: null };
  }
}

/** Allocated bytes under `dir` (sparse overlays count for what they hold), without following links. */
export async function diskUsage(dir: string): Promise<number> {
  let total = 0;
  const walk = async (d: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      try {
        const st = await Deno.lstat(p);
        total += st.blocks !== null ? st.blocks * 512 : st.size;
        if (st.isDirectory) await walk(p);
      } catch { /* removed meanwhile */ }
    }
  };
  await walk(dir);
  return total;
}
