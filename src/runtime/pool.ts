/**
 * @module
 * The warm pool (spec §8.5): per snapshot, up to `size` QEMU processes
 * started ahead of time on the snapshot's memory template (`-incoming
 * defer -S`), each with its own overlay and pool directory, with the device
 * state already streamed in and the vCPUs stopped. A start from that
 * snapshot then costs moving the directory into `instances/` and `cont`. The pool refills in the background after every take. It lives
 * in a long-lived process (`ovm serve`, a test, a bench); `close()` stops
 * every waiting QEMU and removes its directory.
 */
import { join } from "node:path";
import { ContentStore, loadArtifact } from "../store/mod.ts";
import { getAdapter } from "../vmm/mod.ts";
import type { QemuAdapter } from "../vmm/qemu/adapter.ts";
import { newInstanceId } from "./instance.ts";
import {
  checkRestore,
  ensureTemplate,
  type PreparedRestore,
  prepareRestore,
  restorePaths,
} from "./restore.ts";

interface Target {
  ref: string;
  fill: (id: string) => Promise<PreparedRestore>;
}

export class WarmPool {
  readonly home: string;
  readonly size: number;
  readonly #ready = new Map<string, PreparedRestore[]>();
  readonly #targets = new Map<string, Target>();
  readonly #filling = new Map<string, Promise<void>>();
  /** Refs `fill` was called with → manifest digests (so `take(ref)` works too). */
  readonly #refs = new Map<string, string>();
  #closed = false;
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
    const store = await ContentStore.open(this.home);
    const artifact = await loadArtifact(store, ref);
    const digest = artifact.descriptor.digest;
    this.#refs.set(ref, digest);
    if (!this.#targets.has(digest)) {
      const checked = await checkRestore(store, artifact, {});
      const template = await ensureTemplate(store, artifact, checked.record, {
        signal: options.signal,
      });
      const deviceState = await Deno.readFile(template.deviceState);
      this.#targets.set(digest, {
        ref,
        fill: async (id) => {
          const paths = restorePaths(join(this.home, "pool", id));
          const incoming = await prepareRestore(store, artifact, {
            id,
            paths,
            record: checked.record,
            kernel: checked.kernel,
            initrd: checked.initrd,
            template,
            paused: true,
          }).catch(async (e) => {
            await Deno.remove(paths.dir, { recursive: true }).catch(() => {});
            throw e;
          });
          const vm: PreparedRestore = {
            id,
            paths,
            incoming,
            deviceState,
            artifactDigest: digest,
            record: checked.record,
          };
          // Load the device state now, vCPUs stopped (`-S`): a take is then
          // only `cont`. Guest time does not advance while it waits.
          const qemu = getAdapter("qemu") as QemuAdapter;
          await qemu.loadState(incoming, deviceState, { resume: false }).catch(async (e) => {
            await discard(vm);
            throw e;
          });
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
            await discard(vm);
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
      for (const vm of list.splice(0)) await discard(vm);
    }
    await Deno.remove(join(this.home, "pool"), { recursive: true }).catch(() => {});
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

async function discard(vm: PreparedRestore): Promise<void> {
  vm.incoming.qmp.close();
  await getAdapter("qemu").stop(vm.incoming.vm.handle, { force: true }).catch(() => {});
  await Deno.remove(vm.paths.dir, { recursive: true }).catch(() => {});
}
