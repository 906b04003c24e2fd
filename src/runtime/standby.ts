/**
 * @module
 * Standby and resume (spec 8.7): `ovm standby ID` snapshots an instance and
 * stops it, keeping the instance — its id, its console log and its disk (the
 * overlay became the snapshot's top disk layer) — with the snapshot recorded
 * in its `state.json`; `ovm resume ID` restores that snapshot into the same
 * instance id, its console log going on where it stopped. A standby snapshot
 * of a restored VM is a chain layer like any other (spec 8.6), so a VM put to
 * standby again and again stores only what it changed each time.
 */
import { join } from "node:path";
import { ConflictError, ValidationError } from "../errors.ts";
import type { ContentStore } from "../store/mod.ts";
import { InstanceStore, isActive } from "./instance.ts";
import type { StartedInstance } from "./options.ts";
import { getInstance } from "./lifecycle.ts";
import { startInstance } from "./start.ts";
import { snapshotInstance } from "./snapshot.ts";

/** The local tag of an instance's standby snapshot (replaced by its next standby). */
export function standbyTag(id: string): string {
  return `standby/${id}:latest`;
}

/** Snapshots instance `id` and stops it; the instance stays, on standby. */
export async function standbyInstance(
  home: string,
  id: string,
  options: {
    tag?: string;
    push?: string;
    signal?: AbortSignal;
    onProgress?: (msg: string) => void;
  } = {},
): Promise<{ ref: string; digest: string; pushed?: string }> {
  const res = await snapshotInstance(home, id, {
    tag: options.tag ?? standbyTag(id),
    push: options.push,
    after: "stop",
    signal: options.signal,
    onProgress: options.onProgress,
  });
  const instances = new InstanceStore(home);
  const state = await instances.read(id);
  await instances.write({
    ...state,
    reason: "on standby ('ovm resume' restores it)",
    standby: { ref: res.ref, digest: res.digest, at: new Date().toISOString() },
  });
  return res;
}

/**
 * Restores the standby snapshot of instance `id` into the same id. Refused
 * (nothing changes) when the instance runs or was not put on standby.
 */
export async function resumeInstance(
  store: ContentStore,
  id: string,
  options: { detach?: boolean; signal?: AbortSignal } = {},
): Promise<StartedInstance> {
  const home = store.paths.home;
  const state = await getInstance(home, id);
  if (isActive(state)) {
    throw new ConflictError(`Instance "${id}" is ${state.state}, not on standby`, {
      hint: `put it on standby first with 'ovm standby ${id}'`,
    });
  }
  if (!state.standby) {
    throw new ValidationError(`Instance "${id}" is stopped, not on standby`, {
      hint: `'ovm standby ${id}' puts a running instance on standby; start this one with 'ovm run'`,
    });
  }
  // The snapshot must still be in the store before the instance is touched.
  const target = await store.resolve(state.standby.ref).catch(() => undefined);
  if (target?.digest !== state.standby.digest) {
    throw new ValidationError(
      `The standby snapshot "${state.standby.ref}" of instance "${id}" is no longer ` +
        `${state.standby.digest}`,
      { hint: `pull or re-tag it, or remove the instance with 'ovm rm ${id}'` },
    );
  }
  const instances = new InstanceStore(home);
  const dir = instances.paths(id).dir;
  // The old directory steps aside (its console log seeds the new one) and
  // comes back if the restore fails.
  const aside = join(instances.dir, `.resume-${id}-${crypto.randomUUID().slice(0, 8)}`);
  await Deno.rename(dir, aside);
  try {
    const started = await startInstance(store, state.standby.digest, {
      name: id,
      detach: options.detach,
      signal: options.signal,
      consoleFrom: join(aside, "vm", "console.log"),
    });
    const next = { ...started.state, ref: state.standby.ref, createdAt: state.createdAt };
    await instances.write(next);
    await Deno.remove(aside, { recursive: true }).catch(() => {});
    return { ...started, state: next };
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.rename(aside, dir).catch(() => {});
    throw e;
  }
}
