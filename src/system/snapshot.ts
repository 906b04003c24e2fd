/**
 * @module
 * The rules tying RAM snapshots to system versions (spec §6.6): a snapshot
 * records the kernel and initrd it was taken with, may be restored only with
 * exactly those, and keeps them from being removed while it is stored.
 */
import { ConflictError } from "../errors.ts";
import type { ContentStore } from "../store/mod.ts";
import { loadArtifact } from "../store/mod.ts";
import type { SystemSet } from "./layout.ts";

/** OVMS manifest annotations a snapshot artifact carries (spec §6.6). */
export const SystemAnnotations = {
  kernelVersion: "ovms.system.kernel.version",
  kernelDigest: "ovms.system.kernel.digest",
  initrdVersion: "ovms.system.initrd.version",
  initrdDigest: "ovms.system.initrd.digest",
} as const;

/** What an instance or a snapshot records about the system it booted. */
export interface SystemRecord {
  kernelVersion: string;
  kernelDigest?: string;
  initrdVersion: string;
  initrdDigest?: string;
}

/** The record of a system set, for `state.json` and snapshot annotations. */
export function systemRecord(set: SystemSet): Required<SystemRecord> {
  return {
    kernelVersion: set.kernel.version,
    kernelDigest: set.kernel.digest,
    initrdVersion: set.initrd.version,
    initrdDigest: set.initrd.digest,
  };
}

/** The snapshot annotations for a system set. */
export function systemAnnotations(set: SystemSet): Record<string, string> {
  const r = systemRecord(set);
  return {
    [SystemAnnotations.kernelVersion]: r.kernelVersion,
    [SystemAnnotations.kernelDigest]: r.kernelDigest,
    [SystemAnnotations.initrdVersion]: r.initrdVersion,
    [SystemAnnotations.initrdDigest]: r.initrdDigest,
  };
}

/** Throws a ConflictError naming both sides unless `current` is exactly what the snapshot recorded. */
export function assertSnapshotSystem(recorded: SystemRecord, current: SystemSet): void {
  const now = systemRecord(current);
  const bad: string[] = [];
  if (
    recorded.kernelVersion !== now.kernelVersion ||
    (recorded.kernelDigest !== undefined && recorded.kernelDigest !== now.kernelDigest)
  ) {
    bad.push(
      `kernel "${recorded.kernelVersion}"${
        recorded.kernelDigest ? ` (${recorded.kernelDigest.slice(0, 19)})` : ""
      } vs "${now.kernelVersion}" (${now.kernelDigest.slice(0, 19)})`,
    );
  }
  if (
    recorded.initrdVersion !== now.initrdVersion ||
    (recorded.initrdDigest !== undefined && recorded.initrdDigest !== now.initrdDigest)
  ) {
    bad.push(
      `initrd "${recorded.initrdVersion}"${
        recorded.initrdDigest ? ` (${recorded.initrdDigest.slice(0, 19)})` : ""
      } vs "${now.initrdVersion}" (${now.initrdDigest.slice(0, 19)})`,
    );
  }
  if (bad.length) {
    throw new ConflictError(
      `The snapshot was taken with a different system: ${bad.join("; ")}`,
      {
        hint:
          `restore it with the recorded versions (ovm system ls; ovm system kernel add / initrd build), or boot cold`,
      },
    );
  }
}

/** The first stored snapshot artifact (by ref name) that records `version` as its kernel or initrd. */
export async function snapshotUsing(
  store: ContentStore,
  version: string,
): Promise<string | undefined> {
  for (const r of await store.listRefs()) {
    let annotations: Record<string, string> | undefined;
    try {
      const a = await loadArtifact(store, r.descriptor.digest);
      if (!a.manifest.ramSnapshot) continue;
      annotations = a.manifest.annotations;
    } catch {
      continue; // Not an OVMS artifact.
    }
    if (
      annotations?.[SystemAnnotations.kernelVersion] === version ||
      annotations?.[SystemAnnotations.initrdVersion] === version
    ) return r.name;
  }
  return undefined;
}
