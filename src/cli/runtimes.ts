/**
 * @module
 * `ovm runtimes`: every VM runtime this ovm knows — coded adapters, built-in
 * descriptors and `$OVM_HOME/runtimes/*.json` — whether its binary is
 * found, its version, and what it can do. Also the cold-start report of
 * `ovm run` (the manifest's `runtimeHints.coldStartTargetMs`).
 */
import type { ContentStore } from "../store/mod.ts";
import { loadArtifact } from "../store/mod.ts";
import { adapterNames, getAdapter, loadRuntimes } from "../vmm/mod.ts";
import type { AdapterCapabilities } from "../vmm/adapter.ts";
import type { Command } from "./command.ts";

export interface RuntimeInfo {
  name: string;
  kind: "adapter" | "descriptor";
  installed: boolean;
  version?: string;
  reason?: string;
  capabilities: AdapterCapabilities;
  /** Snapshot kinds the runtime can restore (descriptor runtimes restore but do not take them). */
  restoreKinds: string[];
}

/** Probes every known runtime (`available()` of each; descriptors run their version probe). */
export async function listRuntimes(home: string): Promise<RuntimeInfo[]> {
  await loadRuntimes(home);
  const out: RuntimeInfo[] = [];
  for (const name of adapterNames()) {
    const a = getAdapter(name);
    // Some backends skip the version probe on the start path; here it is wanted.
    const av = await a.available({ probeVersion: true });
    out.push({
      name,
      kind: a.kind,
      installed: av.ok,
      ...(av.ok ? { version: av.version } : { reason: av.reason }),
      capabilities: a.capabilities,
      restoreKinds: a.capabilities.restoreKinds,
    });
  }
  return out;
}

export const runtimesCommand: Command = {
  name: "runtimes",
  summary: "List the VM runtimes, whether each is installed, and what each can do",
  usage: "runtimes [--json]",
  description: "Runtimes are coded adapters (qemu, cloud-hypervisor, firecracker) and runtime\n" +
    "descriptors: built-in ones (cherrybomb) and $OVM_HOME/runtimes/*.json.",
  async run(ctx) {
    const list = await listRuntimes(ctx.home);
    ctx.out.result(list);
    ctx.out.table(
      ["NAME", "KIND", "INSTALLED", "VERSION", "DEVICES", "SNAPSHOTS", "PAUSE", "NETWORK"],
      list.map((r) => [
        r.name,
        r.kind,
        r.installed ? "yes" : "no",
        r.version ?? "-",
        r.capabilities.devices.join(",") || "-",
        r.capabilities.snapshotKinds.join(",") ||
        (r.restoreKinds.length ? `${r.restoreKinds.join(",")} (restore only)` : "-"),
        r.capabilities.pause ? "yes" : "no",
        r.capabilities.network.join(","),
      ]),
    );
    for (const r of list) if (!r.installed) ctx.out.info(`${r.name}: ${r.reason}`);
  },
};

/**
 * Logs the measured start (until the guest's first console output) against
 * the manifest's `runtimeHints.coldStartTargetMs`; a miss is a warning.
 */
export async function reportColdStart(
  store: ContentStore,
  manifestDigest: string,
  options: { ms: number; note: (m: string) => void; warn: (m: string) => void },
): Promise<void> {
  const target = (await loadArtifact(store, manifestDigest)).manifest.runtimeHints
    ?.coldStartTargetMs;
  if (target === undefined) return;
  const v = coldStartVerdict(target, options.ms);
  if (v.met) options.note(v.message);
  else options.warn(v.message);
}

/** Whether a start of `ms` met the target, and the sentence saying so. */
export function coldStartVerdict(targetMs: number, ms: number): { met: boolean; message: string } {
  const took = Math.round(ms);
  return took <= targetMs
    ? { met: true, message: `cold start took ${took} ms (target ${targetMs} ms)` }
    : {
      met: false,
      message: `cold start took ${took} ms, over the artifact's target of ${targetMs} ms`,
    };
}
