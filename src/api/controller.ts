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
import { AlreadyExistsError, describeError, NotFoundError, ValidationError } from "../errors.ts";
import type { ContentStore } from "../store/mod.ts";
import {
  assertAllowed,
  getInstance,
  importExportDir,
  type InstanceState,
  InstanceStore,
  isExportDir,
  listInstances,
  newInstanceId,
  parseNetFlag,
  parsePublish,
  removeInstance,
  resumeInstance,
  snapshotInstance,
  standbyInstance,
  type StartClaim,
  startInstance,
  stopInstance,
  TransitionRefusedError,
  type WarmPool,
} from "../runtime/mod.ts";
import { enforcePolicy } from "../sign/mod.ts";
import { parseReference } from "../oci/reference.ts";
import { adapterNames } from "../vmm/mod.ts";
import { VERSION } from "../version.ts";
import { claimState, isClaim, type Known, statusOf, summary } from "./views.ts";
import { inject } from "./inject.ts";
import { logStream } from "./log_stream.ts";
import {
  API_VERSION,
  type InstancesResponse,
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
    /** `none`, `user` or `bridge[=NETWORK]` (default: the server's `net`). */
    net?: string;
    /** `-p` specs: `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]`. */
    publish?: string[];
    /** Answer once the guest printed its first console output (`POST /start?wait=true`). */
    wait?: boolean;
  }
  | { kind: "stop"; id: string; timeoutMs?: number; force?: boolean }
  | { kind: "snapshot"; id: string; tag: string; stop?: boolean }
  | { kind: "resume"; id: string }
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
  /** The network of starts that name none (`ovm serve --net`): `none`, `user`, `bridge[=NETWORK]`. */
  net?: string;
}

export class Controller {
  readonly home: string;
  readonly #store: ContentStore;
  readonly #instances: InstanceStore;
  readonly #options: ControllerOptions;
  /** Work in flight per instance (serialises its actions); no instance state lives here. */
  readonly #queues = new Map<string, Promise<unknown>>();
  /** Starts in flight, from the claim to the VM running (actions on a claim wait for them). */
  readonly #starts = new Map<string, Promise<unknown>>();
  readonly #closing = new AbortController();

  constructor(store: ContentStore, options: ControllerOptions = {}) {
    this.#store = store;
    this.home = store.paths.home;
    this.#instances = new InstanceStore(this.home);
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
    while (this.#queues.size || this.#starts.size) {
      await Promise.allSettled([...this.#queues.values(), ...this.#starts.values()]);
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
        await this.#known(action.id);
        return {
          status: 200,
          stream: logStream(this.home, { ...action, closing: this.#closing.signal }),
        };
      case "start":
        return await this.#start(action);
      case "stop":
        return { status: 200, body: await this.#serial(action.id, () => this.#stop(action)) };
      case "snapshot":
        return {
          status: 200,
          body: await this.#serial(action.id, () => this.#snapshot(action)),
        };
      case "resume":
        return {
          status: 200,
          body: await this.#serial(action.id, () => this.#resume(action.id)),
        };
      case "inject":
        return {
          status: 200,
          body: await this.#serial(action.id, async () => {
            return await inject(await this.#running(action.id, "inject"), action);
          }),
        };
      case "delete":
        return {
          status: 200,
          body: await this.#serial(action.id, async () => {
            await this.#delete(action.id, action.force);
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

  /**
   * The instance's state (read, never written), or the claim of a start
   * without one yet. With `settled`, a start this server has in flight is
   * waited for first (a stop waits for the start before it).
   */
  async #known(id: string, options: { settled?: boolean } = {}): Promise<Known> {
    if (options.settled) await this.#starts.get(id)?.catch(() => {});
    try {
      return await getInstance(this.home, id);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      const claim = await this.#instances.readClaim(id);
      if (claim) return claim;
      throw e;
    }
  }

  async #delete(id: string, force: boolean): Promise<void> {
    await this.#starts.get(id)?.catch(() => {});
    const claim = await this.#instances.readClaim(id);
    if (!claim) return await removeInstance(this.home, id, { force });
    // A start that has no state yet: gone once it failed (or its ovm died).
    assertAllowed(id, claimState(claim), "remove");
    await this.#instances.remove(id);
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
    // Checked before anything is claimed: a bad -p or --net is a 400 naming it.
    const publish = (a.publish ?? []).map(parsePublish);
    const netFlag = a.net ?? this.#options.net;
    const parsed = netFlag !== undefined || publish.length
      ? parseNetFlag(netFlag, publish)
      : undefined;
    const net = parsed ? { net: parsed.mode, network: parsed.network, publish } : {};
    const requestedAt = Date.now();
    const claim: StartClaim = {
      schemaVersion: 1,
      id: a.name ?? newInstanceId(),
      ref: a.manifest,
      createdAt: new Date(requestedAt).toISOString(),
      ownerPid: Deno.pid,
    };
    const id = claim.id;
    // The id is claimed on disk, exclusively: two starts of one name cannot both pass.
    await this.#instances.claim(claim).catch((e) => {
      if (!(e instanceof AlreadyExistsError)) throw e;
      throw new AlreadyExistsError(`Instance "${id}" already exists`, {
        cause: e,
        hint: "pick another name, or remove it with DELETE /instances/{id}",
      });
    });
    const marks = [performance.now()];
    let done!: () => void;
    const inFlight = new Promise<void>((r) => (done = r));
    this.#starts.set(id, inFlight);
    inFlight.then(() => this.#starts.delete(id));
    let admittedRef: string;
    try {
      admittedRef = await this.#admit(a, claim, marks);
    } catch (e) {
      done();
      throw e;
    }
    let inStart = 0;
    let queuedAt = 0;
    const boot = this.#serial(id, async () => {
      queuedAt = performance.now();
      try {
        const started = await startInstance(this.#store, admittedRef, {
          name: id,
          claimed: true,
          requestedAt,
          detach: true,
          memoryBytes: a.memoryBytes,
          cpus: a.cpus,
          runtime: a.runtime,
          accel: a.accel,
          ...net,
          bootTimeoutMs: this.#options.bootTimeoutMs,
          note: this.#options.note,
          pool: this.#options.pool,
        });
        // The VM belongs to its state.json from here: it outlives this server.
        started.vm.release();
        inStart = performance.now() - queuedAt;
        return started.state;
      } catch (e) {
        // A waiting request gets the error; an accepted one leaves it on disk.
        if (a.wait) await this.#dropClaim(id);
        else await this.#instances.failClaim(claim, describeError(e));
        throw e;
      } finally {
        done();
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
        queue: queuedAt - marks[2],
      },
    };
  }

  /** Imports an export directory, applies the admission policy, resolves the ref. */
  async #admit(
    a: Extract<Action, { kind: "start" }>,
    claim: StartClaim,
    marks: number[],
  ): Promise<string> {
    try {
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
      const admittedRef = admitted?.pinned ?? ref;
      // Resolve now (an index lookup): an unknown manifest is a 404 to this
      // request, not a failed start later. A waiting request gets the start's
      // own error anyway.
      if (!a.wait) await this.#store.resolve(admittedRef);
      marks.push(performance.now());
      return admittedRef;
    } catch (e) {
      await this.#dropClaim(claim.id);
      throw e;
    }
  }

  /** Removes a start's claim when no state was written for it. */
  async #dropClaim(id: string): Promise<void> {
    if (await this.#instances.readClaim(id)) await this.#instances.remove(id).catch(() => {});
  }

  async #stop(a: Extract<Action, { kind: "stop" }>): Promise<StopResponse> {
    const known = await this.#known(a.id, { settled: true });
    assertAllowed(a.id, isClaim(known) ? claimState(known) : known.state, "stop");
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

  async #running(id: string, action: "snapshot" | "inject"): Promise<InstanceState> {
    const known = await this.#known(id, { settled: true });
    if (isClaim(known)) throw new TransitionRefusedError(id, claimState(known), action);
    assertAllowed(id, known.state, action);
    return known;
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
    // No shutdown signal: a snapshot in flight is finished, like every accepted request.
    const res = a.stop
      ? await standbyInstance(this.home, a.id, { tag, push })
      : await snapshotInstance(this.home, a.id, { tag, push, after: "resume" });
    return {
      instance_id: a.id,
      snapshot_ref: res.digest,
      tag: res.ref,
      ...(typeof res.pushed === "string" ? { pushed: res.pushed } : {}),
      ...(a.stop ? { standby: true } : {}),
    };
  }

  /** Restores an instance on standby into the same id (`ovm resume`); answers its status. */
  async #resume(id: string): Promise<StatusResponse> {
    const started = await resumeInstance(this.#store, id, { detach: true });
    started.vm.release();
    return await this.#status(id);
  }

  async #list(): Promise<InstancesResponse> {
    const known: Known[] = [
      ...await listInstances(this.home),
      ...await this.#instances.listClaims(),
    ];
    known.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
    return { instances: known.map(summary) };
  }

  async #status(id: string): Promise<StatusResponse> {
    return await statusOf(await this.#known(id), this.#instances.paths(id).dir);
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

/** Docker's rule: a first component with a dot, a colon, or "localhost" names a registry. */
export function isRemoteRef(ref: string): boolean {
  const slash = ref.indexOf("/");
  if (slash < 0) return false;
  const first = ref.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost";
}
