/**
 * @module
 * The memory templates of RAM snapshots (spec §8.3): a ramsnap blob decoded
 * once per digest into the host-wide tmpfs cache `/dev/shm/ovm/snapshots/<hex>/`
 * (`memory` and `device-state`), that every restore of the snapshot maps
 * privately (copy-on-write: the template is never written, clones share its
 * clean pages). The process that restores `mlock_required` snapshots (the
 * foreground `ovm run`, `ovm serve`) owns the locks that keep their templates
 * resident. Each ovm home marks the templates it uses, so `ovm gc` drops only
 * what no home needs.
 */
import { join, resolve } from "node:path";
import { NotFoundError, ValidationError } from "../errors.ts";
import { type Digest, sha256Hex } from "../manifest/mod.ts";
import { type Artifact, type ContentStore, ramLayers } from "../store/mod.ts";
import {
  type CheckedRamChain,
  decodeRamsnap,
  readRamsnapLayout,
  sparseCopy,
} from "../snapshot/mod.ts";
import { buildChainTemplate, checkArtifactChain } from "./ram_chain.ts";
import { lockFileInMemory, type Mapping } from "../../ffi/mod.ts";
import { MAX_DEVICE_STATE } from "../vmm/mod.ts";
import { exists } from "../util/fs.ts";
import type { RestoreRecord } from "./restore_record.ts";
import { snapshotGid } from "./vm_spec.ts";

/** Where decoded snapshots live: tmpfs, shared by every ovm home (content-addressed). */
export const SNAPSHOT_CACHE = "/dev/shm/ovm/snapshots";

/** The decoded files of one snapshot. */
export interface SnapshotTemplate {
  dir: string;
  memory: string;
  deviceState: string;
  memoryBytes: number;
}

/** Mappings that keep `mlock_required` templates resident while this process lives. */
const LOCKS = new Map<string, Mapping>();

/**
 * Decodes a snapshot's ramsnap blob into the tmpfs cache (once per digest)
 * and returns the template. Refuses before writing when the blob's sections
 * exceed the recorded sizes or free memory; leaves nothing behind on failure.
 */
export async function ensureTemplate(
  store: ContentStore,
  artifact: Artifact,
  record: RestoreRecord,
  options: { signal?: AbortSignal; lock?: boolean } = {},
): Promise<SnapshotTemplate> {
  const ram = artifact.manifest.ramSnapshot!;
  const digest = ram.ref as Digest;
  if (!(await store.has(digest))) {
    throw new NotFoundError(`The RAM snapshot blob "${digest}" is not in the store`, {
      hint: "pull the snapshot again with 'ovm pull'",
    });
  }
  const hex = digest.slice(7);
  const dir = join(SNAPSHOT_CACHE, hex);
  const tpl: SnapshotTemplate = {
    dir,
    memory: join(dir, "memory"),
    deviceState: join(dir, "device-state"),
    memoryBytes: record.memoryBytes,
  };
  // A chain's layers are checked on every restore (headers and range lists
  // only, once per process), cached template or not: a bad chain is refused.
  const chain = ramLayers(artifact.manifest).length > 1
    ? await checkArtifactChain(store, artifact, {
      memoryBytes: record.memoryBytes,
      machine: record.machine,
    })
    : undefined;
  // Marked before it is looked at: a concurrent 'ovm gc' of another home
  // then sees a user (or a fresh use, see pruneTemplates) and keeps it.
  const home = store.paths.home;
  if (await exists(dir)) await markTemplateUser(digest, home);
  if (!(await exists(tpl.deviceState)) || !(await exists(tpl.memory))) {
    if (chain) await decodeChain(chain, tpl, home, options.signal);
    else await decodeTemplate(store.blobPath(digest), tpl, record, home, options.signal);
  }
  if (ram.mlock_required && options.lock !== false && !LOCKS.has(hex)) {
    // This process holds the lock: the foreground `ovm run` or `ovm serve`.
    LOCKS.set(hex, lockFileInMemory(tpl.memory, record.memoryBytes));
  }
  return tpl;
}

async function decodeTemplate(
  blob: string,
  tpl: SnapshotTemplate,
  record: RestoreRecord,
  home: string,
  signal?: AbortSignal,
): Promise<void> {
  const layout = await readRamsnapLayout(blob);
  const mem = layout.header.sections.find((s) => s.name === "memory");
  if (!mem || mem.size !== record.memoryBytes) {
    throw new ValidationError(
      `RAM snapshot "${blob}" is invalid: its memory section is ${mem?.size ?? "missing"} bytes, ` +
        `the snapshot declares ${record.memoryBytes}`,
      { hint: "the blob is corrupt; pull or create the snapshot again" },
    );
  }
  const needed = layout.header.sections.reduce((n, s) => n + s.size, 0);
  const free = Deno.systemMemoryInfo().available;
  if (needed > free) {
    throw new ValidationError(
      `Restoring needs ${needed} bytes of memory for the snapshot, only ${free} are available`,
      { hint: "stop other VMs or remove cached snapshots under " + SNAPSHOT_CACHE },
    );
  }
  const tmp = await newTemplateDir();
  try {
    await decodeRamsnap(blob, {
      memory: join(tmp, "memory"),
      "device-state": join(tmp, "device-state"),
    }, {
      limits: { memory: record.memoryBytes, "device-state": MAX_DEVICE_STATE },
      signal,
    });
    await installTemplate(tmp, `sha256:${tpl.dir.slice(-64)}`, home);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** Builds a chain's template (base decoded, diffs overlaid) into the cache. */
async function decodeChain(
  chain: CheckedRamChain,
  tpl: SnapshotTemplate,
  home: string,
  signal?: AbortSignal,
): Promise<void> {
  const free = Deno.systemMemoryInfo().available;
  if (chain.memoryBytes > free) {
    throw new ValidationError(
      `Restoring needs up to ${chain.memoryBytes} bytes of memory for the snapshot, only ` +
        `${free} are available`,
      { hint: "stop other VMs or remove cached snapshots under " + SNAPSHOT_CACHE },
    );
  }
  const tmp = await newTemplateDir();
  try {
    await buildChainTemplate(chain, tmp, { cache: SNAPSHOT_CACHE, signal });
    await installTemplate(tmp, `sha256:${tpl.dir.slice(-64)}`, home);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    throw e;
  }
}

/** A fresh directory in the template cache to assemble a template in. */
export async function newTemplateDir(): Promise<string> {
  await Deno.mkdir(SNAPSHOT_CACHE, { recursive: true, mode: 0o711 });
  await Deno.chmod("/dev/shm/ovm", 0o711).catch(() => {});
  await Deno.chmod(SNAPSHOT_CACHE, 0o711).catch(() => {});
  const tmp = join(SNAPSHOT_CACHE, `.tmp-${crypto.randomUUID()}`);
  await Deno.mkdir(tmp, { mode: 0o711 });
  return tmp;
}

/**
 * Moves a directory holding `memory` and `device-state` into the cache as
 * the template of ramsnap blob `digest` (or drops it when one is there),
 * marked as used by `home`: the marker is in place before the template is
 * visible, so no 'ovm gc' ever sees it unclaimed.
 */
export async function installTemplate(tmp: string, digest: string, home: string): Promise<void> {
  // QEMU 7.2 opens a private memory file read-write (it has no read-only
  // RAM backend that stays writable for the guest): the snapshot's group
  // may open it, and its mapping is MAP_PRIVATE so no write reaches it.
  await Deno.chmod(join(tmp, "memory"), 0o660);
  if (Deno.uid() === 0) await Deno.chown(join(tmp, "memory"), 0, snapshotGid(digest));
  const dir = join(SNAPSHOT_CACHE, digest.replace(/^sha256:/, ""));
  await Deno.mkdir(join(tmp, "homes"), { mode: 0o700 });
  await Deno.writeTextFile(join(tmp, "homes", homeMarker(home)), resolve(home) + "\n");
  try {
    await Deno.rename(tmp, dir).catch(async (e) => {
      // A directory without its files (left by an older ovm) is moved aside once.
      if (await exists(join(dir, "device-state")) || !(await exists(dir))) throw e;
      const stale = join(SNAPSHOT_CACHE, `.tmp-stale-${crypto.randomUUID()}`);
      await Deno.rename(dir, stale).catch(() => {});
      await Deno.remove(stale, { recursive: true }).catch(() => {});
      await Deno.rename(tmp, dir);
    });
  } catch (e) {
    // Another ovm decoded the same snapshot first: use theirs.
    if (!(await exists(join(dir, "device-state")))) throw e;
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    await markTemplateUser(digest, home);
  }
}

/**
 * How long a template stays after its last use even when no home claims it:
 * a restore marks its template and then QEMU opens it, and an 'ovm gc' of
 * another home must not fall between the two.
 */
export const TEMPLATE_GRACE_MS = 5 * 60_000;

/** The newest time the template in `dir` was installed, or marked by one of `markers`. */
async function lastUse(dir: string, markers: string[]): Promise<number> {
  let newest = 0;
  for (const p of [dir, ...markers.map((m) => join(dir, "homes", m))]) {
    const st = await Deno.stat(p).catch(() => null);
    newest = Math.max(newest, st?.mtime?.getTime() ?? 0);
  }
  return newest;
}

/** Removes a decoded snapshot from the tmpfs cache (its running clones keep their mappings). */
export async function dropTemplate(ramsnapDigest: string): Promise<void> {
  const hex = ramsnapDigest.replace(/^sha256:/, "");
  const m = LOCKS.get(hex);
  if (m) {
    m[Symbol.dispose]();
    LOCKS.delete(hex);
  }
  await Deno.remove(join(SNAPSHOT_CACHE, hex), { recursive: true }).catch(() => {});
}

/** The marker a home leaves in a template it uses: the cache is shared by every home. */
function homeMarker(home: string): string {
  return sha256Hex(resolve(home)).slice(0, 16);
}

/** Whether the home a marker names still has a store; an unreadable marker counts as live. */
async function homeExists(marker: string): Promise<boolean> {
  const home = (await Deno.readTextFile(marker).catch(() => "")).trim();
  if (!home) return true;
  return await Deno.stat(join(home, "store")).then(
    () => true,
    (e) => !(e instanceof Deno.errors.NotFound),
  );
}

/** Records that `home` uses the decoded template of ramsnap `digest`. */
export async function markTemplateUser(digest: string, home: string): Promise<void> {
  const dir = join(SNAPSHOT_CACHE, digest.replace(/^sha256:/, ""), "homes");
  // Not recursive: marking a template that is gone must not leave a stub of it.
  await Deno.mkdir(dir, { mode: 0o700 }).catch(() => {});
  await Deno.writeTextFile(join(dir, homeMarker(home)), resolve(home) + "\n").catch(() => {});
}

/**
 * Drops the decoded templates (in the host-wide cache) that no ovm home uses
 * any more: for each snapshot this store no longer holds, this home's marker
 * goes, and so does any marker whose home has no store any more (a removed
 * scratch or test home); a template with no marker left is removed. Running clones keep their
 * private mappings of a dropped file; a later restore decodes again. Returns
 * what was (or, with `dryRun`, would be) removed and the tmpfs bytes freed.
 */
export async function pruneTemplates(
  store: ContentStore,
  options: { dryRun?: boolean } = {},
): Promise<{ removed: string[]; freedBytes: number }> {
  const removed: string[] = [];
  let freedBytes = 0;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(SNAPSHOT_CACHE));
  } catch {
    return { removed, freedBytes };
  }
  const mine = homeMarker(store.paths.home);
  for (const e of entries) {
    if (!e.isDirectory || !/^[a-f0-9]{64}$/.test(e.name)) continue;
    const digest = `sha256:${e.name}`;
    if (await store.has(digest)) continue;
    const homes = join(SNAPSHOT_CACHE, e.name, "homes");
    const users: string[] = [];
    for (const m of await Array.fromAsync(Deno.readDir(homes)).catch(() => [])) {
      // A marker whose home is gone (a removed test or scratch home) holds nothing.
      if (m.name !== mine && !(await homeExists(join(homes, m.name)))) {
        if (!options.dryRun) await Deno.remove(join(homes, m.name)).catch(() => {});
        continue;
      }
      users.push(m.name);
    }
    if (users.some((u) => u !== mine)) {
      // Another home still uses it: only this home lets go.
      if (!options.dryRun) await Deno.remove(join(homes, mine)).catch(() => {});
      continue;
    }
    // Used a moment ago: a restore may be between marking it and mapping it.
    if (Date.now() - await lastUse(join(SNAPSHOT_CACHE, e.name), users) < TEMPLATE_GRACE_MS) {
      continue;
    }
    for (const f of ["memory", "device-state"]) {
      const st = await Deno.stat(join(SNAPSHOT_CACHE, e.name, f)).catch(() => null);
      // Templates are sparse: count the blocks in use, not the length.
      freedBytes += st ? (st.blocks ?? 0) * 512 : 0;
    }
    removed.push(digest);
    if (!options.dryRun) await dropTemplate(digest);
  }
  return { removed, freedBytes };
}

export { sparseCopy };
