/**
 * @module
 * The warm pool (spec §8.5): per snapshot, up to `size` VMMs started ahead
 * of time on the snapshot's memory template through the backend's two-phase
 * restore (`prepareRestore` with the vCPUs kept stopped), each with its own
 * overlay and pool directory, the device state already loaded. A start
 * from that snapshot then costs moving the directory into `instances/` and
 * `resume`. The pool refills in the background after every take. It lives
 * in a long-lived process (`ovm serve`, a test, a bench); `close()` stops
 * every waiting VMM and removes its directory. Starts reach it through the
 * {@linkcode RestorePool} interface.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import { ContentStore, loadArtifact } from "../store/mod.ts";
import { newInstanceId, vmPaths } from "./instance.ts";
import { pidAlive, processStartTime, signalPid } from "../process/mod.ts";
import type { PreparedRestore, RestorePool } from "./options.ts";
import { checkRestore, prepareRestore, restoringAdapter } from "./restore.ts";
import { ensureTemplate } from "./template_cache.ts";

interface Target {
  ref: string;
  fill: (id: string) => Promise<PreparedRestore>;
}

export class WarmPool implements RestorePool {
  readonly home: string;
  readonly size: number;
  readonly #ready = new Map<string, PreparedRestore[]>();
  readonly #targets = new Map<string, Target>();
  readonly #filling = new Map<string, Promise<void>>();
  /** Refs `fill` was called with → manifest digests (so `take(ref)` works too). */
  readonly #refs = new Map<string, string>();
  #closed = false;
  #reaped?: Promise<number>;
  /** The last background refill failure, for callers that report health. */
  lastError?: Error;

  constructor(home: string, options: { size: number }) {
    this.home = home;
    this.size = Math.max(0, Math.floor(options.size));
  }

  /**
   * Keeps `size` VMs ready for the snapshot `ref` (checks and decodes it
   * first); resolves once they are. Returns the artifact's manifest digest,
   * which {@linkcode take} is keyed by.
   */
  async fill(ref: string, options: { signal?: AbortSignal } = {}): Promise<string> {
    if (this.#closed) throw new Error("the warm pool is closed");
    this.#reaped ??= reapStalePools(join(this.home, "pool"));
    await this.#reaped;
    const store = await ContentStore.open(this.home);
    const artifact = await loadArtifact(store, ref);
    const digest = artifact.descriptor.digest;
    this.#refs.set(ref, digest);
    if (!this.#targets.has(digest)) {
      const checked = await checkRestore(store, artifact, {});
      const adapter = await restoringAdapter(checked.record);
      if (!adapter.capabilities.preparedRestore) {
        throw new ValidationError(
          `Runtime "${adapter.name}" cannot prepare restores ahead of time: no warm pool for "${ref}"`,
          { hint: "start the snapshot without a warm pool" },
        );
      }
      const template = await ensureTemplate(store, artifact, checked.record, {
        signal: options.signal,
      });
      this.#targets.set(digest, {
        ref,
        fill: async (id) => {
          const paths = vmPaths(join(this.home, "pool", id));
          const { adapter, prepared } = await prepareRestore(store, {
            artifact,
            id,
            paths,
            record: checked.record,
            files: checked.files,
            template,
            paused: true,
          }).catch(async (e) => {
            await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
            throw e;
          });
          const vm: PreparedRestore = {
            id,
            paths,
            adapter,
            prepared,
            artifactDigest: digest,
            record: checked.record,
            loaded: false,
          };
          // Load the device state now, vCPUs stopped: a take is then only
          // `resume`. Guest time does not advance while it waits.
          await prepared.load({ resume: false }).catch(async (e) => {
            await this.discard(vm);
            throw e;
          });
          const handle = prepared.vm.handle;
          // Who owns this waiting VMM: a later pool reaps it if this process dies.
          await Deno.writeTextFile(
            join(paths.dir, OWNER_FILE),
            JSON.stringify({
              ownerPid: Deno.pid,
              ownerStart: await processStartTime(Deno.pid),
              pid: handle.pid,
              pidStartTime: handle.pidStartTime,
            }),
          );
          return { ...vm, loaded: true };
        },
      });
    }
    await this.#refill(digest);
    if (this.lastError && this.ready(digest) === 0 && this.size > 0) throw this.lastError;
    return digest;
  }

  /** How many VMs wait for the snapshot with manifest `digest` (or a ref `fill` was given). */
  ready(digest: string): number {
    return this.#ready.get(this.#refs.get(digest) ?? digest)?.length ?? 0;
  }

  /**
   * A prepared VM for the snapshot with manifest `digest` (or a ref `fill`
   * was given), if one waits. `startInstance(store, ref, {pool})` calls it.
   * The taker calls {@linkcode refill} once its start is done: spawning the
   * replacement meanwhile would compete with it for the CPU.
   */
  take(digest: string): PreparedRestore | undefined {
    return this.#ready.get(this.#refs.get(digest) ?? digest)?.shift();
  }

  /** Tops the pool up for `digest` in the background (after a take). */
  refill(digest: string): void {
    digest = this.#refs.get(digest) ?? digest;
    if (this.#targets.has(digest) && !this.#closed) this.#refill(digest).catch(() => {});
  }

  /** Resolves when no refill runs (tests and benches wait for a full pool). */
  async settled(): Promise<void> {
    while (this.#filling.size) await Promise.all([...this.#filling.values()]);
  }

  #refill(digest: string): Promise<void> {
    const running = this.#filling.get(digest);
    if (running) return running;
    const target = this.#targets.get(digest)!;
    const p = (async () => {
      const list = this.#ready.get(digest) ?? [];
      this.#ready.set(digest, list);
      while (!this.#closed && list.length < this.size) {
        try {
          const vm = await target.fill(newInstanceId());
          if (this.#closed) {
            await this.discard(vm);
            return;
          }
          list.push(vm);
          this.lastError = undefined;
        } catch (e) {
          this.lastError = e as Error;
          return;
        }
      }
    })().finally(() => this.#filling.delete(digest));
    this.#filling.set(digest, p);
    return p;
  }

  /** Stops every waiting VM and removes its directory. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.settled();
    for (const list of this.#ready.values()) {
      for (const vm of list.splice(0)) await this.discard(vm);
    }
    await Deno.remove(join(this.home, "pool"), { recursive: true }).catch(() => {});
  }

  /** Stops a prepared VM that will not be used and removes its directory. */
  async discard(vm: PreparedRestore): Promise<void> {
    vm.prepared.close();
    await vm.adapter.stop(vm.prepared.vm.handle, { force: true }).catch(() => {});
    await Deno.remove(vm.paths.dir, { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

const OWNER_FILE = "owner.json";

/**
 * Kills the waiting VMMs of pools whose process died without `close()` (a
 * SIGKILLed `ovm serve`) and removes their directories. Returns how many.
 */
export async function reapStalePools(dir: string): Promise<number> {
  let n = 0;
  let entries: Deno.DirEntry[] = [];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return 0;
  }
  for (const e of entries) {
    const vmDir = join(dir, e.name);
    let owner: { ownerPid: number; ownerStart?: number; pid: number; pidStartTime?: number };
    try {
      owner = JSON.parse(await Deno.readTextFile(join(vmDir, OWNER_FILE)));
    } catch {
      // Still being prepared by a live pool, or left half-made: only old ones go.
      const st = await Deno.stat(vmDir).catch(() => null);
      if (st?.mtime && Date.now() - st.mtime.getTime() > 10 * 60_000) {
        await Deno.remove(vmDir, { recursive: true }).catch(() => {});
      }
      continue;
    }
    const ownerAlive = pidAlive(owner.ownerPid) &&
      (owner.ownerStart === undefined ||
        (await processStartTime(owner.ownerPid)) === owner.ownerStart);
    if (ownerAlive) continue;
    if (
      owner.pidStartTime !== undefined &&
      (await processStartTime(owner.pid)) === owner.pidStartTime
    ) {
      signalPid(owner.pid, "SIGKILL");
    }
    await Deno.remove(vmDir, { recursive: true }).catch(() => {});
    n++;
  }
  return n;
}
