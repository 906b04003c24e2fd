/**
 * @module
 * The task's metrics for containerd's `Stats` (spec §13.2): a VM has no
 * cgroup of its own that describes it, so the shim reports its VMM process —
 * CPU time from `/proc/PID/stat`, memory from `/proc/PID/status` (guest RAM
 * the guest touched is the VMM's shared-memory RSS) — as the cgroup v2
 * `io.containerd.cgroups.v2.Metrics` that containerd 1.6's `ctr task metrics`
 * and CRI's container stats decode.
 */
import { NotFoundError } from "../errors.ts";
import type { Message } from "./proto/mod.ts";

/** The type containerd's typeurl registers for cgroup v2 metrics. */
export const METRICS_V2 = "io.containerd.cgroups.v2.Metrics";

/** Linux's USER_HZ on every architecture ovm runs on: /proc's CPU times are in these ticks. */
const CLOCK_TICKS = 100;

/** `key:  value kB` lines of /proc/PID/status as bytes (or plain counts). */
function statusFields(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+):\s+(\d+)(\s+kB)?$/.exec(line);
    if (m) out.set(m[1], Number(m[2]) * (m[3] ? 1024 : 1));
  }
  return out;
}

/**
 * The metrics of process `pid` (a VMM) as a plain `io.containerd.cgroups.v2.Metrics`:
 * `memory.usage` its resident set, `usage_limit` the VM's RAM size `limitBytes`.
 */
export async function processMetrics(
  pid: number,
  options: { limitBytes?: number } = {},
): Promise<Message> {
  let stat: string;
  let status: string;
  try {
    [stat, status] = await Promise.all([
      Deno.readTextFile(`/proc/${pid}/stat`),
      Deno.readTextFile(`/proc/${pid}/status`),
    ]);
  } catch (e) {
    throw new NotFoundError(`The VMM process ${pid} is gone`, { cause: e });
  }
  // Fields after the command name (which may hold spaces): state is [0], utime [11], stime [12].
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const usec = (ticks: string) => Math.round(Number(ticks) * (1_000_000 / CLOCK_TICKS));
  const user = usec(rest[11]);
  const system = usec(rest[12]);
  const s = statusFields(status);
  return {
    pids: { current: s.get("Threads") ?? 1, limit: 0 },
    cpu: { usage_usec: user + system, user_usec: user, system_usec: system },
    memory: {
      usage: s.get("VmRSS") ?? 0,
      usage_limit: options.limitBytes ?? 0,
      anon: s.get("RssAnon") ?? 0,
      file: s.get("RssFile") ?? 0,
      shmem: s.get("RssShmem") ?? 0,
      swap_usage: s.get("VmSwap") ?? 0,
      max_usage: s.get("VmHWM") ?? 0,
    },
  };
}
