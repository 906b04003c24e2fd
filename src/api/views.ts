/**
 * @module
 * What the API reports of an instance: its summary (`GET /instances`) and
 * status (`GET /status/{id}`), from its state or the claim of a start that
 * has none yet. Pure reads: nothing here writes.
 */
import { pidAlive } from "../process/mod.ts";
import { type InstanceState, isActive, type StartClaim, type VmState } from "../runtime/mod.ts";
import { cpuTimeMs, diskUsage, memoryUse } from "./metrics.ts";
import type { InstanceSummary, StatusResponse } from "./schemas.ts";

/** What the controller knows of an instance: its state, or the claim of a start not yet resolved. */
export type Known = InstanceState | StartClaim;

export function isClaim(k: Known): k is StartClaim {
  return !("state" in k);
}

/** A claim's state: starting while the ovm that claimed it lives, else error. */
export function claimState(c: StartClaim): VmState {
  return c.reason !== undefined || !pidAlive(c.ownerPid) ? "error" : "starting";
}

export function summary(k: Known): InstanceSummary {
  if (isClaim(k)) {
    const state = claimState(k);
    const reason = k.reason ??
      (state === "error" ? `ovm (pid ${k.ownerPid}) exited while starting the VM` : undefined);
    return {
      instance_id: k.id,
      state,
      ...(reason ? { reason } : {}),
      manifest: k.ref,
      created_at: k.createdAt,
    };
  }
  return {
    instance_id: k.id,
    state: k.state,
    ...(k.reason ? { reason: k.reason } : {}),
    manifest: k.ref,
    manifest_digest: k.manifestDigest,
    name: k.name,
    version: k.version,
    runtime: k.adapter,
    ...(k.pid && isActive(k) ? { pid: k.pid } : {}),
    created_at: k.createdAt,
    ...(k.exitCode !== undefined ? { exit_code: k.exitCode } : {}),
  };
}

export async function statusOf(s: Known, dir: string): Promise<StatusResponse> {
  if (isClaim(s)) {
    return {
      ...summary(s),
      uptime_ms: null,
      devices: [],
      metrics: {
        cpu_time_ms: null,
        rss_bytes: null,
        pss_bytes: null,
        disk_bytes: await diskUsage(dir),
        start_ms: null,
        boot_ms: null,
        restore_ms: null,
      },
    };
  }
  const live = isActive(s) && s.pid !== undefined;
  const mem = live ? await memoryUse(s.pid!) : { rss: null, pss: null };
  const started = s.startedAt ? Date.parse(s.startedAt) : undefined;
  const end = isActive(s) ? Date.now() : s.stoppedAt ? Date.parse(s.stoppedAt) : undefined;
  return {
    ...summary(s),
    uptime_ms: started !== undefined && end !== undefined ? Math.max(0, end - started) : null,
    accel: s.accel,
    memory_bytes: s.memoryBytes,
    cpus: s.cpus,
    devices: s.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
    network: {
      mode: s.network.mode,
      ...(s.network.network ? { network: s.network.network } : {}),
      addresses: s.network.addresses ?? [],
    },
    metrics: {
      cpu_time_ms: live ? await cpuTimeMs(s.pid!) : null,
      rss_bytes: mem.rss,
      pss_bytes: mem.pss,
      disk_bytes: await diskUsage(dir),
      start_ms: started !== undefined ? Math.max(0, started - Date.parse(s.createdAt)) : null,
      boot_ms: s.bootMs ?? null,
      restore_ms: s.restored ? s.bootMs ?? null : null,
    },
  };
}
