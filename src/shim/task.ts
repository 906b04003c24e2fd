/**
 * @module
 * One containerd task = one ovm VM (spec §13.2). `create` mounts the root
 * filesystem, reads the OCI spec and builds (or names) the artifact; `start`
 * boots it through the runtime's public surface (`startInstance`) and routes
 * the workload's tagged console lines to containerd's stdout/stderr FIFOs
 * and containerd's stdin FIFO to the guest's stdin port; the VM's end becomes the task's exit status (the workload's code from
 * `OVMS-EXIT`, else 128 + the signal that stopped it, else 255). `kill`
 * SIGKILL kills the VMM, any other signal asks the guest to stop (ovms-init
 * forwards the image's stop signal to the workload) and forces it after the
 * grace period. A checkpoint is a RAM snapshot of the VM; a task created from
 * one restores it (spec §13.6). A task's VM joins the network its
 * `io.ovms.net` annotation names, else the node's default (`OVM_SHIM_NET`),
 * else none (spec §13.7); deleting the task removes the instance, which
 * releases its lease, TAP and port rules.
 */
import { join } from "node:path";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { findServer, type OvmsClient } from "../api/client.ts";
import {
  exportArtifact,
  followConsole,
  getInstance,
  importExportDir,
  instancePaths,
  type InstanceState,
  isActive,
  removeInstance,
  snapshotInstance,
  type StartedInstance,
  startInstance,
  stopInstance,
  waitInstance,
} from "../runtime/mod.ts";
import { type ContentStore, loadArtifact } from "../store/mod.ts";
import {
  ARTIFACT_ANNOTATION,
  CRI_CONTAINER_TYPE,
  NET_ENV,
  parseTaskNet,
  readBundle,
  type TaskNet,
} from "./bundle.ts";
import {
  buildTaskArtifact,
  copyFilesIn,
  type Mount,
  mountRootfs,
  unmountRootfs,
} from "./rootfs.ts";
import { taskArtifactRef, taskInstanceId } from "./paths.ts";
import { run } from "../process/mod.ts";
import type { Message } from "./proto/mod.ts";
import { processMetrics } from "./stats.ts";

export type TaskStatus = "created" | "running" | "paused" | "stopped";

export interface TaskIo {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface CreateInput {
  id: string;
  namespace: string;
  bundle: string;
  rootfs: Mount[];
  io: TaskIo;
  /** containerd's unpacked checkpoint (a restore): the directory `checkpoint` wrote. */
  checkpoint?: string;
}

/** The `ovm export` of the task's RAM snapshot, inside containerd's checkpoint directory. */
export const CHECKPOINT_EXPORT = "ovm-snapshot";

export interface TaskOptions {
  /** Grace period for a non-KILL signal before the VM is forced off. Default 10 s. */
  stopTimeoutMs?: number;
  /** Boot watchdog passed to the runtime. Default 120 s (TCG is slow). */
  bootTimeoutMs?: number;
  cacheDir?: string;
  /**
   * The node's default network for tasks without an `io.ovms.net` annotation
   * (`none`, `user`, `bridge[=NETWORK]`; the shim reads `$OVM_SHIM_NET`). Default none.
   */
  net?: string;
  log?: (msg: string) => void;
  trace?: (step: string, ms: number) => void;
}

const SIGNUM: Record<number, string> = { 1: "SIGHUP", 2: "SIGINT", 9: "SIGKILL", 15: "SIGTERM" };

/** Splits the console stream into the workload's stdout and stderr lines (`@o|`, `@e|`). */
export class TaggedLineRouter {
  #rest = "";
  readonly #decoder = new TextDecoder();
  readonly #out: (line: string) => void;
  readonly #err: (line: string) => void;
  constructor(out: (line: string) => void, err: (line: string) => void) {
    this.#out = out;
    this.#err = err;
  }
  push(chunk: Uint8Array): void {
    const text = this.#rest + this.#decoder.decode(chunk, { stream: true });
    const lines = text.split("\n");
    this.#rest = lines.pop()!;
    for (const l of lines) this.#line(l);
  }
  flush(): void {
    if (this.#rest) this.#line(this.#rest);
    this.#rest = "";
  }
  #line(raw: string): void {
    const l = raw.replace(/\r+$/, "");
    // The tag may follow other console bytes on the same line (a kernel message without a newline).
    const i = Math.max(l.lastIndexOf("@o|"), l.lastIndexOf("@e|"));
    if (i < 0) return;
    const text = l.slice(i + 3) + "\n";
    if (l[i + 1] === "o") this.#out(text);
    else this.#err(text);
  }
}

/** The whole console as the task's stdout (an OVMS artifact's VM). */
export class RawConsole {
  readonly #decoder = new TextDecoder();
  readonly #out: (s: string) => void;
  constructor(out: (s: string) => void) {
    this.#out = out;
  }
  push(chunk: Uint8Array): void {
    const s = this.#decoder.decode(chunk, { stream: true }).replaceAll("\r\n", "\n");
    if (s) this.#out(s);
  }
  flush(): void {}
}

/** A FIFO (or file) containerd passed for the workload's stdout or stderr. */
class StdioSink {
  #file?: Deno.FsFile;
  #tail: Promise<void> = Promise.resolve();
  readonly #enc = new TextEncoder();
  constructor(readonly path: string) {}
  async open(): Promise<void> {
    if (!this.path) return;
    if (this.path.startsWith("file://")) {
      // `ctr run --log-uri file:///path`: the shim writes the log file itself.
      this.#file = await Deno.open(this.path.slice(7), { append: true, create: true });
      return;
    }
    if (/^[a-z0-9+-]+:\/\//.test(this.path) && !this.path.startsWith("fifo://")) {
      throw new ValidationError(`Unsupported stdio URI "${this.path}"`, {
        hint: "the ovm shim writes FIFOs and file:// logs",
      });
    }
    // O_RDWR: opening a FIFO never blocks, and a reader that goes away (ctr run -d)
    // costs no EPIPE.
    this.#file = await Deno.open(this.path.replace(/^fifo:\/\//, ""), { read: true, write: true });
  }
  write(s: string): void {
    const f = this.#file;
    if (!f) return;
    const bytes = this.#enc.encode(s);
    this.#tail = this.#tail.then(async () => {
      let off = 0;
      while (off < bytes.byteLength) off += await f.write(bytes.subarray(off));
    }).catch(() => {});
  }
  async close(): Promise<void> {
    await this.#tail;
    try {
      this.#file?.close();
    } catch { /* closed */ }
    this.#file = undefined;
  }
}

/** The FIFO in the bundle the VM's stdin port reads (the VMM's stdin). */
export function stdinFifoPath(bundle: string): string {
  return join(bundle, "ovm-stdin");
}

/**
 * The workload's stdin (spec §13.3): containerd's stdin FIFO is copied into a
 * FIFO of the shim's own, which the VMM reads into the guest's `ovms.stdin`
 * port. The shim is that FIFO's only writer, so closing it (containerd's
 * writer went away, or CloseIO) is the workload's end of file.
 */
class StdinPump {
  readonly fifo: string;
  readonly #source: string;
  #hold?: Deno.FsFile;
  #in?: Deno.FsFile;
  #out?: Deno.FsFile;
  #pumped?: Promise<void>;
  /** When the pump started waiting for containerd's next bytes (undefined: it is writing). */
  #readingSince?: number;
  #closed = false;

  constructor(source: string, bundle: string) {
    this.#source = source.replace(/^fifo:\/\//, "");
    this.fifo = stdinFifoPath(bundle);
  }

  /** Creates the FIFO and holds it open, so the VMM's open for reading does not block. */
  async prepare(): Promise<void> {
    await Deno.remove(this.fifo).catch(() => {});
    await run("mkfifo", ["-m", "0600", this.fifo]);
    this.#hold = await Deno.open(this.fifo, { read: true, write: true });
  }

  /** Once the VMM has its end open: writes only, and copies containerd's stdin into it. */
  async start(): Promise<void> {
    this.#out = await Deno.open(this.fifo, { write: true });
    this.#hold?.close();
    this.#hold = undefined;
    if (!this.#source) return this.close();
    // O_RDWR first, so the read-only open does not block before containerd's writer opens;
    // then only containerd's writer keeps it open, and its close is our end of file.
    const keep = await Deno.open(this.#source, { read: true, write: true });
    try {
      this.#in = await Deno.open(this.#source, { read: true });
    } finally {
      keep.close();
    }
    const src = this.#in;
    const out = this.#out;
    this.#pumped = (async () => {
      const buf = new Uint8Array(64 * 1024);
      while (!this.#closed) {
        this.#readingSince = performance.now();
        const n = await src.read(buf);
        this.#readingSince = undefined;
        if (n === null || this.#closed) break;
        let off = 0;
        while (off < n) off += await out.write(buf.subarray(off, n));
      }
    })().catch(() => {}).finally(() => this.close());
  }

  /**
   * CloseIO: what containerd wrote goes through first — `ctr` closes its
   * writer only after CloseIO returns, and the pump ends at that end of file —
   * then the workload reads end of file. A writer that stays open (a client
   * that keeps the FIFO) is cut once the pump has waited `idleMs` for more.
   */
  closeIO(idleMs = 1000): void {
    if (!this.#pumped) return this.close();
    const check = () => {
      if (this.#closed) return;
      const since = this.#readingSince;
      if (since !== undefined && performance.now() - since >= idleMs) return this.close();
      setTimeout(check, 200);
    };
    setTimeout(check, 200);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of [this.#hold, this.#in, this.#out]) {
      try {
        f?.close();
      } catch { /* closed */ }
    }
    this.#hold = this.#in = this.#out = undefined;
  }
}

export class VmTask {
  readonly id: string;
  readonly namespace: string;
  readonly bundle: string;
  readonly io: TaskIo;
  readonly instanceId: string;
  readonly ref: string;
  status: TaskStatus = "created";
  pid = 0;
  exitStatus = 0;
  exitedAt?: Date;
  readonly exited: Promise<void>;
  #resolveExit!: () => void;
  readonly #store: ContentStore;
  readonly #o: TaskOptions;
  #started?: StartedInstance;
  #killSignal?: number;
  #memoryBytes?: number;
  #cpus?: number;
  #artifact?: string;
  /** Restored from a containerd checkpoint: `ref` is the snapshot, started by the shim. */
  #restored = false;
  #sandbox = false;
  /** The VM's network; undefined: what the artifact or snapshot records. */
  #net?: TaskNet;
  #server?: OvmsClient;
  #stdin?: StdinPump;
  #onExit?: (t: VmTask) => void;

  private constructor(store: ContentStore, input: CreateInput, options: TaskOptions) {
    this.#store = store;
    this.#o = options;
    this.id = input.id;
    this.namespace = input.namespace;
    this.bundle = input.bundle;
    this.io = input.io;
    this.instanceId = taskInstanceId(input.bundle, input.namespace, input.id);
    this.ref = taskArtifactRef(input.bundle, input.namespace, input.id);
    this.exited = new Promise((r) => (this.#resolveExit = r));
  }

  /** Reads the bundle and prepares the VM's artifact; nothing runs yet. */
  static async create(
    store: ContentStore,
    input: CreateInput,
    options: TaskOptions = {},
  ): Promise<VmTask> {
    const task = new VmTask(store, input, options);
    // containerd's ids are unique per namespace: an instance by this name is a leftover.
    await removeInstance(store.paths.home, task.instanceId, { force: true }).catch(() => {});
    const plan = await readBundle(input.bundle);
    // Checked before anything is built: a bad node default fails every Create, naming it.
    const nodeNet = options.net ? parseTaskNet(options.net, `the shim's ${NET_ENV}`) : undefined;
    if (plan.annotations[CRI_CONTAINER_TYPE] === "sandbox") {
      // A Pod's sandbox only holds namespaces a VM does not share: it needs no VM (spec §13.5).
      task.#sandbox = true;
      return task;
    }
    task.#memoryBytes = plan.memoryBytes;
    task.#cpus = plan.cpus;
    if (input.checkpoint) {
      // A restore (spec §13.6): the checkpoint holds an `ovm export` of the task's RAM snapshot,
      // which goes on where it was checkpointed, with the memory and vCPUs it recorded.
      const dir = join(input.checkpoint, CHECKPOINT_EXPORT);
      let digest: string;
      try {
        digest = await importExportDir(store, dir);
      } catch (e) {
        throw new ValidationError(`The checkpoint "${input.checkpoint}" is not an ovm checkpoint`, {
          cause: e,
          hint: "restore only checkpoints the ovm shim wrote ('ctr containers checkpoint --task')",
        });
      }
      const artifact = await loadArtifact(store, digest);
      await store.tag(task.ref, artifact.descriptor);
      // containerd 1.6 never removes the checkpoint it unpacked: the blobs are in the store now.
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      task.#restored = true;
      // An OVMS artifact's VM keeps its raw console; a task built from an image its tagged one.
      if (plan.artifact) task.#artifact = task.ref;
      task.#memoryBytes = task.#cpus = undefined;
      return task;
    }
    if (plan.artifact) {
      // The container names an OVMS artifact: the image's rootfs is not used.
      let artifact;
      try {
        artifact = await loadArtifact(store, plan.artifact);
      } catch (e) {
        throw new NotFoundError(
          `The artifact "${plan.artifact}" (annotation ${ARTIFACT_ANNOTATION}) is not in the shim's store "${store.paths.home}"`,
          { cause: e, hint: `pull it on this node first: ovm pull --home ${store.paths.home} REF` },
        );
      }
      task.#artifact = plan.artifact;
      // Only an explicit annotation overrides the network an artifact (or its snapshot) records.
      task.#net = plan.net;
      // A RAM snapshot restores with the size it was taken at.
      if (artifact.manifest.ramSnapshot) task.#memoryBytes = task.#cpus = undefined;
      return task;
    }
    task.#net = plan.net ?? nodeNet ?? { mode: "none" };
    const root = await mountRootfs(input.bundle, input.rootfs);
    try {
      await copyFilesIn(root, plan);
      await buildTaskArtifact(store, { root, plan, ref: task.ref }, {
        seed: `${input.namespace}/${input.id}`,
        cacheDir: options.cacheDir,
        trace: options.trace,
      });
    } catch (e) {
      await unmountRootfs(input.bundle);
      throw e;
    }
    // The VM reads its own disk; the host mount is not needed while it runs.
    await unmountRootfs(input.bundle);
    return task;
  }

  /** Called once when the task exits (the shim publishes the exit event). */
  onExit(fn: (t: VmTask) => void): void {
    this.#onExit = fn;
  }

  async start(): Promise<number> {
    if (this.status !== "created") {
      throw new ConflictError(`Task "${this.id}" is ${this.status}, not created`);
    }
    if (this.#sandbox) {
      this.pid = Deno.pid;
      this.status = "running";
      return this.pid;
    }
    const home = this.#store.paths.home;
    const out = new StdioSink(this.io.stdout);
    const err = new StdioSink(this.io.stderr);
    await out.open();
    await err.open();
    // An OVMS artifact starts through the node's `ovm serve` when one serves this home: its
    // warm pool (spec §8.5) then hands over a prepared VM.
    const server = this.#artifact && !this.#restored
      ? await findServer({ env: Deno.env, home })
      : undefined;
    // A VM built from an image reads the workload's stdin from a port; an OVMS artifact,
    // a whole VM often restored mid-run, has none.
    const stdin = this.#artifact ? undefined : new StdinPump(this.io.stdin, this.bundle);
    let wait: () => Promise<InstanceState>;
    try {
      await stdin?.prepare();
      if (server) {
        this.#server = server;
        const net = this.#net &&
          (this.#net.network ? `${this.#net.mode}=${this.#net.network}` : this.#net.mode);
        await server.start(this.#artifact!, {
          overrides: { name: this.instanceId, ...(net ? { net } : {}) },
          wait: true,
        });
        const state = await getInstance(home, this.instanceId);
        this.pid = state.pid ?? 0;
        wait = () => pollUntilStopped(home, this.instanceId);
      } else {
        const started = await startInstance(this.#store, this.#artifact ?? this.ref, {
          name: this.instanceId,
          memoryBytes: this.#memoryBytes,
          cpus: this.#cpus,
          // A snapshot restores with the network it recorded.
          net: this.#restored ? undefined : this.#net?.mode,
          network: this.#restored ? undefined : this.#net?.network,
          detach: true,
          bootTimeoutMs: this.#o.bootTimeoutMs ?? 120_000,
          trace: this.#o.trace,
          stdin: stdin?.fifo,
        });
        this.#started = started;
        this.pid = started.vm.handle.pid;
        wait = () => waitInstance(home, started);
      }
      await stdin?.start();
      this.#stdin = stdin;
      await this.#logAddress();
    } catch (e) {
      stdin?.close();
      await out.close();
      await err.close();
      throw e;
    }
    this.status = "running";
    let ended = false;
    // A task built from an image tags its workload's lines; an OVMS artifact is a whole
    // VM whose serial console is its output.
    const router = this.#artifact
      ? new RawConsole((s) => out.write(s))
      : new TaggedLineRouter((l) => out.write(l), (l) => err.write(l));
    const pump = followConsole(
      instancePaths(home, this.instanceId).consoleLog,
      (c) => router.push(c),
      { until: () => ended },
    );
    (async () => {
      let code = 255;
      try {
        const final = await wait();
        code = final.exitCode ??
          (this.#killSignal ? 128 + this.#killSignal : final.state === "stopped" ? 0 : 255);
      } catch (e) {
        this.#o.log?.(`waiting for the VM failed: ${e}`);
      }
      ended = true;
      stdin?.close();
      await pump.catch(() => {});
      router.flush();
      await out.close();
      await err.close();
      this.#markExited(code);
    })();
    return this.pid;
  }

  /** The shim's log (`<bundle>/shim.log`) records the VM's addresses; `ovm ps` shows them too. */
  async #logAddress(): Promise<void> {
    const state = await getInstance(this.#store.paths.home, this.instanceId).catch(() => undefined);
    const net = state?.network;
    if (!net || net.mode === "none") return;
    const addrs = (net.addresses ?? []).map((a) => `${a.address} on network ${a.network}`);
    this.#o.log?.(
      `task ${this.id}: instance ${this.instanceId} network ${net.mode}` +
        (addrs.length ? `, address ${addrs.join(", ")}` : ""),
    );
  }

  #markExited(code: number): void {
    if (this.status === "stopped") return;
    this.status = "stopped";
    this.exitStatus = code;
    this.exitedAt = new Date();
    this.#resolveExit();
    this.#onExit?.(this);
  }

  /** The VMM process's metrics (cgroup v2 shape, spec §13.2); a sandbox runs no VM: none. */
  async metrics(): Promise<Message> {
    if (this.status !== "running" && this.status !== "paused") {
      throw new ConflictError(`Task "${this.id}" is ${this.status}; only a running VM has metrics`);
    }
    if (this.#sandbox) return {};
    const state = await getInstance(this.#store.paths.home, this.instanceId).catch(() => undefined);
    return await processMetrics(this.pid, { limitBytes: state?.memoryBytes });
  }

  /**
   * Checkpoint (spec §13.6): a RAM snapshot of the VM (`ovm snapshot`; the
   * VM goes on), exported as `dir/ovm-snapshot`, which containerd tars into
   * its checkpoint image. The snapshot's ref in the store is dropped again.
   */
  async checkpoint(dir: string): Promise<void> {
    if (this.#sandbox) {
      throw new ConflictError(`Task "${this.id}" is a Pod sandbox: it runs no VM to checkpoint`);
    }
    if (this.#server) {
      throw new ConflictError(
        `Task "${this.id}" runs in the node's 'ovm serve', not in this shim`,
        { hint: "snapshot it through the server ('ovm snapshot' with its socket)" },
      );
    }
    if (this.status !== "running" && this.status !== "paused") {
      throw new ConflictError(`Task "${this.id}" is ${this.status}; only a running VM checkpoints`);
    }
    const home = this.#store.paths.home;
    const ref = `ovm-shim/${this.instanceId}:checkpoint`;
    await snapshotInstance(home, this.instanceId, { tag: ref });
    try {
      await exportArtifact(this.#store, ref, join(dir, CHECKPOINT_EXPORT));
    } finally {
      await this.#store.untag(ref).catch(() => false);
    }
  }

  /** CloseIO with stdin: the workload reads end of file once what was written went through. */
  closeStdin(): void {
    this.#stdin?.closeIO();
  }

  kill(signal: number): void {
    if (this.status === "stopped") {
      throw new NotFoundError(`Task "${this.id}" is not running: process already finished`);
    }
    this.#killSignal = signal;
    if (this.status === "created") {
      this.#markExited(128 + signal);
      return;
    }
    if (this.#sandbox) {
      // Like the pause process: TERM and INT end it cleanly.
      this.#markExited(signal === 9 ? 137 : 0);
      return;
    }
    const home = this.#store.paths.home;
    const reason = `killed by containerd (${SIGNUM[signal] ?? `signal ${signal}`})`;
    // Kill returns at once, like runc; the exit arrives through Wait and the exit event.
    const timeoutMs = this.#o.stopTimeoutMs ?? 10_000;
    const stopping = this.#server
      ? this.#server.stop(this.instanceId, { force: signal === 9, timeoutMs })
      : stopInstance(home, this.instanceId, { force: signal === 9, timeoutMs, reason });
    stopping.catch((e) => this.#o.log?.(`stopping the VM failed: ${e}`));
  }

  async pause(): Promise<void> {
    if (this.#server) {
      throw new ConflictError("A task started through 'ovm serve' cannot be paused by the shim");
    }
    if (this.#sandbox && this.status === "running") {
      this.status = "paused";
      return;
    }
    if (this.status !== "running" || !this.#started) {
      throw new ConflictError(`Task "${this.id}" is ${this.status}; only a running task pauses`);
    }
    await this.#started.adapter.pause(this.#started.vm.handle);
    this.status = "paused";
  }

  async resume(): Promise<void> {
    if (this.#sandbox && this.status === "paused") {
      this.status = "running";
      return;
    }
    if (this.status !== "paused" || !this.#started) {
      throw new ConflictError(`Task "${this.id}" is ${this.status}, not paused`);
    }
    await this.#started.adapter.resume(this.#started.vm.handle);
    this.status = "running";
  }

  /** Removes the VM, its instance files and the task's artifact ref; the task must have exited. */
  async delete(): Promise<void> {
    if (this.status === "running" || this.status === "paused") {
      throw new ConflictError(`Task "${this.id}" is ${this.status}`, {
        hint: "kill it first ('ctr task kill')",
      });
    }
    await cleanupTask(this.#store, this.namespace, this.id, this.bundle);
  }
}

/** Waits for an instance another process (the node's `ovm serve`) started to end. */
async function pollUntilStopped(home: string, id: string): Promise<InstanceState> {
  while (true) {
    const s = await getInstance(home, id);
    if (!isActive(s)) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Everything a task leaves: its VM (killed if it still runs), the instance
 * directory, the artifact ref and the rootfs mount. Idempotent; the shim's
 * `delete` subcommand runs it when the serving shim is gone.
 */
export async function cleanupTask(
  store: ContentStore,
  namespace: string,
  id: string,
  bundle: string,
): Promise<{ exitCode?: number }> {
  const home = store.paths.home;
  const instanceId = taskInstanceId(bundle, namespace, id);
  let exitCode: number | undefined;
  try {
    const state = await getInstance(home, instanceId);
    exitCode = state.exitCode;
    // A VM the node's `ovm serve` started is removed through it (it tracks its instances).
    const server = await findServer({ env: Deno.env, home }).catch(() => undefined);
    if (server) {
      using s = server;
      await s.remove(instanceId, { force: true }).catch(() => {});
    }
    await removeInstance(home, instanceId, { force: true }).catch((e) => {
      if (!(e instanceof NotFoundError)) throw e;
    });
  } catch (e) {
    if (!(e instanceof NotFoundError)) throw e;
  }
  await store.untag(taskArtifactRef(bundle, namespace, id)).catch(() => false);
  await Deno.remove(stdinFifoPath(bundle)).catch(() => {});
  await unmountRootfs(bundle);
  return { exitCode };
}
