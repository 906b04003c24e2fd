/**
 * @module
 * The runtime controller: the one place API actions are applied. The HTTP
 * layer (`server.ts`) only turns requests into {@linkcode Action}s; the
 * controller serialises the actions of one instance (a stop waits for the
 * start before it), refuses actions invalid in the instance's current state
 * with a ConflictError (409), and owns nothing the disk does not: every VM is
 * started detached and recorded in its state.json, so a restarted server
 * reattaches to what the last one left running.
 */
import { ConflictError, describeError, NotFoundError, ValidationError } from "../errors.ts";
import type { ContentStore } from "../store/mod.ts";
import { loadArtifact } from "../store/mod.ts";
import {
  followConsole,
  getInstance,
  importExportDir,
  type InstanceState,
  InstanceStore,
  isActive,
  isExportDir,
  listInstances,
  newInstanceId,
  removeInstance,
  startInstance,
  stopInstance,
} from "../runtime/mod.ts";
import { enforcePolicy } from "../sign/mod.ts";
import { snapshotInstance, type WarmPool } from "../runtime/snapshot.ts";
import { parseReference } from "../oci/reference.ts";
import { adapterNames } from "../vmm/mod.ts";
import { exists } from "../util/fs.ts";
import { VERSION } from "../version.ts";
import { cpuTimeMs, diskUsage, memoryUse } from "./metrics.ts";
import {
  API_VERSION,
  type InjectResponse,
  type InstancesResponse,
  type InstanceSummary,
  type LogRecord,
  type SnapshotResponse,
  type StartResponse,
  type StatusResponse,
  type StopResponse,
  type VersionResponse,
} from "./schemas.ts";

/** The action vocabulary: what every request becomes once parsed and validated. */
export type Action =
  | {
    kind: "start";
    manifest: string;
    memoryBytes?: number;
    cpus?: number;
    runtime?: string;
    accel?: "auto" | "kvm" | "tcg";
    name?: string;
    /** Answer once the guest printed its first console output (`POST /start?wait=true`). */
    wait?: boolean;
  }
  | { kind: "stop"; id: string; timeoutMs?: number; force?: boolean }
  | { kind: "snapshot"; id: string; tag: string }
  | { kind: "inject"; id: string; device: string; offset: number; data: Uint8Array }
  | { kind: "status"; id: string }
  | { kind: "logs"; id: string; follow: boolean; offset: number; signal?: AbortSignal }
  | { kind: "list" }
  | { kind: "delete"; id: string; force: boolean }
  | { kind: "health" }
  | { kind: "version" };

/** What applying an action gives: a JSON body, or an NDJSON stream. */
export type ActionResult =
  | { status: number; body: unknown; timing?: Record<string, number> }
  | { status: number; stream: ReadableStream<Uint8Array> };

export interface ControllerOptions {
  /** `--policy FILE` for /start; default `$OVM_HOME/policy.json` when it exists. */
  policyFile?: string;
  /** Boot watchdog of started VMs (default 60 s). */
  bootTimeoutMs?: number;
  /** Notes for the server's log (accelerator fallback, policy warnings). */
  note?: (message: string) => void;
  /**
   * Warm VMs for snapshot artifacts (spec 8.5): a /start of a snapshot the
   * pool holds takes a prepared QEMU instead of restoring from scratch.
   */
  pool?: WarmPool;
}

interface Pending {
  ref: string;
  createdAt: string;
  done: Promise<void>;
}

interface Failed {
  ref: string;
  createdAt: string;
  reason: string;
}

export class Controller {
  readonly home: string;
  readonly #store: ContentStore;
  readonly #options: ControllerOptions;
  readonly #queues = new Map<string, Promise<unknown>>();
  readonly #pending = new Map<string, Pending>();
  readonly #failed = new Map<string, Failed>();
  /** Start request to first console output (or to the restored VM running), per instance. */
  readonly #bootMs = new Map<string, { ms: number; restore?: boolean }>();
  readonly #closing = new AbortController();

  constructor(store: ContentStore, options: ControllerOptions = {}) {
    this.#store = store;
    this.home = store.paths.home;
    this.#options = options;
  }

  /** Aborted when the server shuts down: log streams end; accepted actions still finish. */
  get closing(): AbortSignal {
    return this.#closing.signal;
  }

  close(): void {
    this.#closing.abort();
  }

  /** Resolves when every queued action has finished (graceful shutdown waits for it). */
  async drain(): Promise<void> {
    while (this.#queues.size || this.#pending.size) {
      await Promise.allSettled([
        ...this.#queues.values(),
        ...[...this.#pending.values()].map((p) => p.done),
      ]);
    }
  }

  async apply(action: Action): Promise<ActionResult> {
    switch (action.kind) {
      case "health":
        return { status: 200, body: { status: "ok" } };
      case "version":
        return {
          status: 200,
          body: {
            version: VERSION,
            api: API_VERSION,
            runtimes: adapterNames(),
            home: this.home,
          } satisfies VersionResponse,
        };
      case "list":
        return { status: 200, body: await this.#list() };
      case "status":
        return { status: 200, body: await this.#status(action.id) };
      case "logs":
        return { status: 200, stream: await this.#logs(action) };
      case "start":
        return await this.#start(action);
      case "stop":
        return { status: 200, body: await this.#serial(action.id, () => this.#stop(action)) };
      case "snapshot":
        return {
          status: 200,
          body: await this.#serial(action.id, () => this.#snapshot(action)),
        };
      case "inject":
        return { status: 200, body: await this.#serial(action.id, () => this.#inject(action)) };
      case "delete":
        return {
          status: 200,
          body: await this.#serial(action.id, async () => {
            if (this.#failed.has(action.id) && !(await this.#onDisk(action.id))) {
              this.#failed.delete(action.id);
            } else {
              await removeInstance(this.home, action.id, { force: action.force });
              this.#failed.delete(action.id);
              this.#bootMs.delete(action.id);
            }
            return { instance_id: action.id, removed: true };
          }),
        };
    }
  }

  /** Runs `fn` after every earlier action on instance `id` (one queue per instance). */
  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.then(() => {}, () => {});
    this.#queues.set(id, tail);
    tail.then(() => {
      if (this.#queues.get(id) === tail) this.#queues.delete(id);
    });
    return run;
  }

  async #onDisk(id: string): Promise<boolean> {
    return await exists(new InstanceStore(this.home).paths(id).state);
  }

  /** The instance's state, counting a start still resolving and a start that failed before a state existed. */
  async #state(id: string): Promise<InstanceState | Pending | Failed> {
    try {
      return await getInstance(this.home, id);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      const p = this.#pending.get(id) ?? this.#failed.get(id);
      if (p) return p;
      throw e;
    }
  }

  async #start(a: Extract<Action, { kind: "start" }>): Promise<ActionResult> {
    if (a.memoryBytes !== undefined && a.memoryBytes < 64 * 1024 * 1024) {
      throw new ValidationError(`Memory "${a.memoryBytes}" is below 64M`, {
        hint: "ask for at least 64M",
      });
    }
    if (a.runtime !== undefined && !adapterNames().includes(a.runtime)) {
      throw new ValidationError(`Unknown runtime "${a.runtime}"`, {
        hint: `available: ${adapterNames().join(", ")}`,
      });
    }
    const id = a.name ?? newInstanceId();
    // Claim the id synchronously: two concurrent starts of one name cannot both pass.
    if (this.#pending.has(id) || this.#queues.has(id)) {
      throw new ConflictError(`Instance "${id}" already exists`, {
        hint: "pick another name, or remove it with DELETE /instances/{id}",
      });
    }
    const createdAt = new Date().toISOString();
    let release!: () => void;
    const pending: Pending = {
      ref: a.manifest,
      createdAt,
      done: new Promise<void>((r) => (release = r)),
    };
    this.#pending.set(id, pending);
    let admittedRef: string;
    const marks: number[] = [];
    try {
      marks.push(performance.now());
      // (A waiting start learns it from the store's exclusive create instead.)
      if (!a.wait && await this.#onDisk(id)) {
        throw new ConflictError(`Instance "${id}" already exists`, {
          hint: "pick another name, or remove it with DELETE /instances/{id}",
        });
      }
      const ref = await isExportDir(a.manifest)
        ? await importExportDir(this.#store, a.manifest)
        : a.manifest;
      const admitted = await enforcePolicy(ref, {
        kind: "start",
        home: this.home,
        store: this.#store,
        policyFile: this.#options.policyFile,
        warn: this.#options.note,
      });
      marks.push(performance.now());
      admittedRef = admitted?.pinned ?? ref;
      // Resolve now (an index lookup): an unknown manifest is a 404 to this
      // request, not a failed start later. A waiting request gets the start's
      // own error anyway.
      if (!a.wait) await this.#store.resolve(admittedRef);
      marks.push(performance.now());
      this.#failed.delete(id);
    } catch (e) {
      this.#pending.delete(id);
      release();
      throw e;
    }
    const t0 = performance.now();
    let inStart = 0;
    let s0q = 0;
    const boot = this.#serial(id, async () => {
      const s0 = performance.now();
      s0q = s0;
      try {
        const started = await startInstance(this.#store, admittedRef, {
          name: id,
          detach: true,
          memoryBytes: a.memoryBytes,
          cpus: a.cpus,
          runtime: a.runtime,
          accel: a.accel,
          bootTimeoutMs: this.#options.bootTimeoutMs,
          note: this.#options.note,
          pool: this.#options.pool,
        });
        // The VM belongs to its state.json from here: it outlives this server.
        started.vm.release();
        inStart = performance.now() - s0;
        this.#bootMs.set(id, { ms: performance.now() - t0 });
        return started.state;
      } catch (e) {
        if (!a.wait && !(await this.#onDisk(id))) {
          this.#failed.set(id, { ref: a.manifest, createdAt, reason: describeError(e) });
        }
        throw e;
      } finally {
        this.#pending.delete(id);
        release();
      }
    });
    if (!a.wait) {
      boot.catch((e) => this.#options.note?.(`start of ${id} failed: ${describeError(e)}`));
      return { status: 202, body: { instance_id: id, status: "starting" } satisfies StartResponse };
    }
    const state = await boot;
    return {
      status: 200,
      body: { instance_id: id, status: state.state } satisfies StartResponse,
      // The runtime's own share: what the API adds is the round trip minus this.
      timing: {
        start: inStart,
        admit: marks[1] - marks[0],
        resolve: marks[2] - marks[1],
        queue: s0q - marks[2],
      },
    };
  }

  async #stop(a: Extract<Action, { kind: "stop" }>): Promise<StopResponse> {
    const state = await this.#state(a.id);
    if (!("id" in state) || !isActive(state)) {
      throw new ConflictError(`Instance "${a.id}" is ${"id" in state ? state.state : "error"}`, {
        hint: "only a starting, running or paused instance can be stopped",
      });
    }
    const s = await stopInstance(this.home, a.id, {
      timeoutMs: a.timeoutMs ?? 10_000,
      force: a.force,
      reason: "stopped through the API",
    });
    return {
      instance_id: a.id,
      status: s.state,
      ...(s.reason ? { reason: s.reason } : {}),
      ...(s.exitCode !== undefined ? { exit_code: s.exitCode } : {}),
    };
  }

  async #running(id: string, what: string): Promise<InstanceState> {
    const state = await this.#state(id);
    if (!("id" in state) || (state.state !== "running" && state.state !== "paused")) {
      throw new ConflictError(
        `Cannot ${what} instance "${id}": it is ${"id" in state ? state.state : "error"}`,
        { hint: "only a running or paused instance accepts this" },
      );
    }
    return state;
  }

  async #snapshot(a: Extract<Action, { kind: "snapshot" }>): Promise<SnapshotResponse> {
    await this.#running(a.id, "snapshot");
    // A registry reference is pushed; the local tag is its repository path and tag.
    let tag = a.tag;
    let push: string | undefined;
    if (isRemoteRef(a.tag)) {
      const r = parseReference(a.tag);
      if (!r.tag) {
        throw new ValidationError(`Snapshot tag "${a.tag}" has no tag`, {
          hint: "use REGISTRY/NAME:TAG",
        });
      }
      tag = `${r.repository}:${r.tag}`;
      push = a.tag;
    }
    const res = await snapshotInstance(this.home, a.id, {
      tag,
      push,
      // No shutdown signal: a snapshot in flight is finished, like every accepted request.
      after: "resume",
    });
    return {
      instance_id: a.id,
      snapshot_ref: res.digest,
      tag: res.ref,
      ...(typeof res.pushed === "string" ? { pushed: res.pushed } : {}),
    };
  }

  async #inject(a: Extract<Action, { kind: "inject" }>): Promise<InjectResponse> {
    const state = await this.#running(a.id, "inject into");
    const dev = state.devices.find((d) => d.name === a.device);
    if (!dev || !dev.hostPath) {
      throw new NotFoundError(`Instance "${a.id}" has no device "${a.device}"`, {
        hint: `its devices: ${state.devices.map((d) => d.name).join(", ") || "none"}`,
      });
    }
    if (a.offset + a.data.byteLength > dev.size) {
      throw new ValidationError(
        `Writing ${a.data.byteLength} bytes at offset ${a.offset} overflows device "${a.device}" (${dev.size} bytes)`,
        { hint: "keep offset + length within the region" },
      );
    }
    await writeRegion(dev.hostPath, a.offset, a.data);
    return {
      instance_id: a.id,
      device: a.device,
      offset: a.offset,
      bytes_written: a.data.byteLength,
    };
  }

  #summary(s: InstanceState | Pending | Failed, id: string): InstanceSummary {
    if (!("id" in s)) {
      return {
        instance_id: id,
        state: "reason" in s ? "error" : "starting",
        ...("reason" in s ? { reason: s.reason } : {}),
        manifest: s.ref,
        created_at: s.createdAt,
      };
    }
    return {
      instance_id: s.id,
      state: s.state,
      ...(s.reason ? { reason: s.reason } : {}),
      manifest: s.ref,
      manifest_digest: s.manifestDigest,
      name: s.name,
      version: s.version,
      runtime: s.adapter,
      ...(s.pid && isActive(s) ? { pid: s.pid } : {}),
      created_at: s.createdAt,
      ...(s.exitCode !== undefined ? { exit_code: s.exitCode } : {}),
    };
  }

  async #list(): Promise<InstancesResponse> {
    const disk = await listInstances(this.home);
    const seen = new Set(disk.map((s) => s.id));
    const out = disk.map((s) => this.#summary(s, s.id));
    for (const [id, p] of [...this.#pending, ...this.#failed]) {
      if (!seen.has(id)) {
        seen.add(id);
        out.push(this.#summary(p, id));
      }
    }
    return { instances: out };
  }

  async #status(id: string): Promise<StatusResponse> {
    const s = await this.#state(id);
    const dir = new InstanceStore(this.home).paths(id).dir;
    if (!("id" in s)) {
      return {
        ...this.#summary(s, id),
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
    const boot = this.#bootMs.get(id);
    if (boot && boot.restore === undefined) {
      // Whether the start restored a RAM snapshot: learnt once, off the start's path.
      boot.restore = await loadArtifact(this.#store, s.manifestDigest).then(
        (a) => a.manifest.ramSnapshot !== undefined,
        () => false,
      );
    }
    const mem = live ? await memoryUse(s.pid!) : { rss: null, pss: null };
    const started = s.startedAt ? Date.parse(s.startedAt) : undefined;
    const end = isActive(s) ? Date.now() : s.stoppedAt ? Date.parse(s.stoppedAt) : undefined;
    return {
      ...this.#summary(s, id),
      uptime_ms: started !== undefined && end !== undefined ? Math.max(0, end - started) : null,
      accel: s.accel,
      memory_bytes: s.memoryBytes,
      cpus: s.cpus,
      devices: s.devices.map((d) => ({ type: d.type, name: d.name, size: d.size })),
      metrics: {
        cpu_time_ms: live ? await cpuTimeMs(s.pid!) : null,
        rss_bytes: mem.rss,
        pss_bytes: mem.pss,
        disk_bytes: await diskUsage(dir),
        start_ms: started !== undefined ? Math.max(0, started - Date.parse(s.createdAt)) : null,
        boot_ms: boot?.ms ?? null,
        restore_ms: boot?.restore ? boot.ms : null,
      },
    };
  }

  async #logs(a: Extract<Action, { kind: "logs" }>): Promise<ReadableStream<Uint8Array>> {
    await this.#state(a.id);
    const home = this.home;
    const path = new InstanceStore(home).paths(a.id).consoleLog;
    const closing = this.#closing.signal;
    const stop = new AbortController();
    const abort = () => stop.abort();
    closing.addEventListener("abort", abort, { once: true });
    a.signal?.addEventListener("abort", abort, { once: true });
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    let pending = new Uint8Array(0);
    let lineStart = a.offset;
    return new ReadableStream<Uint8Array>({
      async start(ctrl) {
        const emit = (rec: LogRecord) => {
          try {
            ctrl.enqueue(enc.encode(JSON.stringify(rec) + "\n"));
          } catch {
            stop.abort();
          }
        };
        const flushLines = (final: boolean) => {
          let nl: number;
          while ((nl = pending.indexOf(0x0a)) >= 0) {
            const text = dec.decode(pending.subarray(0, nl)).replace(/\r$/, "");
            emit({ offset: lineStart, line: text });
            lineStart += nl + 1;
            pending = pending.slice(nl + 1);
          }
          if (final && pending.byteLength) {
            emit({ offset: lineStart, line: dec.decode(pending).replace(/\r$/, "") });
            lineStart += pending.byteLength;
            pending = new Uint8Array(0);
          }
        };
        let lastCheck = 0;
        let active = true;
        try {
          await followConsole(path, (chunk) => {
            const next = new Uint8Array(pending.byteLength + chunk.byteLength);
            next.set(pending);
            next.set(chunk, pending.byteLength);
            pending = next;
            flushLines(false);
          }, {
            offset: a.offset,
            signal: stop.signal,
            until: async () => {
              if (!a.follow) return true;
              if (Date.now() - lastCheck > 250) {
                lastCheck = Date.now();
                active = await getInstance(home, a.id).then(isActive, () => false);
              }
              return !active;
            },
          });
          flushLines(true);
          ctrl.close();
        } catch (e) {
          try {
            ctrl.error(e);
          } catch { /* already cancelled */ }
        } finally {
          closing.removeEventListener("abort", abort);
          a.signal?.removeEventListener("abort", abort);
        }
      },
      cancel() {
        stop.abort();
      },
    });
  }
}

/** An action this runtime does not implement (HTTP 501). */
export class NotImplementedError extends Error {
  readonly code = "not_implemented";
  constructor(message: string) {
    super(message);
    this.name = "NotImplementedError";
  }
}

/**
 * Writes into an ivshmem region's host file. The file lives in world-writable
 * /dev/shm and belongs to the VMM's uid, so the path is checked to be the same
 * regular file before and after opening (no symlink or swapped file), and
 * never created or truncated.
 */
async function writeRegion(path: string, offset: number, data: Uint8Array): Promise<void> {
  const before = await Deno.lstat(path).catch((e) => {
    throw new ConflictError(`The region file "${path}" is gone`, { cause: e });
  });
  if (!before.isFile) {
    throw new ConflictError(`The region file "${path}" is not a regular file`);
  }
  using f = await Deno.open(path, { write: true });
  const after = await f.stat();
  if (after.ino !== before.ino || after.dev !== before.dev || !after.isFile) {
    throw new ConflictError(`The region file "${path}" changed while opening it`);
  }
  if (offset + data.byteLength > after.size) {
    throw new ValidationError(`The region file "${path}" is smaller than the write`);
  }
  await f.seek(offset, Deno.SeekMode.Start);
  let off = 0;
  while (off < data.byteLength) off += await f.write(data.subarray(off));
}

/** Docker's rule: a first component with a dot, a colon, or "localhost" names a registry. */
export function isRemoteRef(ref: string): boolean {
  const slash = ref.indexOf("/");
  if (slash < 0) return false;
  const first = ref.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost";
}
