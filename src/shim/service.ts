/**
 * @module
 * The `containerd.task.v2.Task` ttrpc service of one shim, which serves one
 * task (spec §13.2): requests are decoded, checked against the task's id,
 * turned into {@linkcode VmTask} calls, and errors mapped to the gRPC codes
 * containerd's errdefs understand (NotFound, FailedPrecondition,
 * InvalidArgument, Unimplemented). Events are published in the order
 * runtime-v2.md requires (create, start, exit, delete).
 */
import { ConflictError, NotFoundError, OvmError, ValidationError } from "../errors.ts";
import type { ContentStore } from "../store/mod.ts";
import { VERSION } from "../version.ts";
import type { EventPublisher } from "./events.ts";
import { decodeMessage, encodeMessage, type Message, packAny, timestamp } from "./proto/mod.ts";
import { Code, type Handler, TtrpcError } from "./ttrpc.ts";
import { type TaskOptions, type TaskStatus, VmTask } from "./task.ts";
import { METRICS_V2 } from "./stats.ts";

export const TASK_SERVICE = "containerd.task.v2.Task";
const P = "containerd.task.v2.";
const EMPTY = "google.protobuf.Empty";

/** containerd.v1.types.Status. */
const STATUS: Record<TaskStatus, number> = { created: 1, running: 2, stopped: 3, paused: 4 };

function toTtrpc(e: unknown): unknown {
  if (e instanceof TtrpcError) return e;
  const msg = e instanceof OvmError ? (e.hint ? `${e.message} (${e.hint})` : e.message) : String(
    (e as Error)?.message ?? e,
  );
  const code = e instanceof NotFoundError
    ? Code.notFound
    : e instanceof ConflictError
    ? Code.failedPrecondition
    : e instanceof ValidationError
    ? Code.invalidArgument
    : Code.unknown;
  return new TtrpcError(code, msg, { cause: e });
}

export interface TaskServiceOptions extends TaskOptions {
  namespace: string;
  publisher: EventPublisher;
  /** Called when containerd asks the shim to exit (Shutdown). */
  onShutdown: () => void;
}

/** The handlers of the Task service, keyed `service/method`. */
export function taskService(
  store: ContentStore,
  options: TaskServiceOptions,
): Map<string, Handler> {
  let task: VmTask | undefined;
  let deleted = false;
  const pub = options.publisher;

  const need = (id: string, execId = ""): VmTask => {
    if (execId) throw new TtrpcError(Code.notFound, `exec "${execId}" not found in task "${id}"`);
    if (!task || task.id !== id || deleted) {
      throw new TtrpcError(Code.notFound, `task "${id}" not found in this shim`);
    }
    return task;
  };

  const unimplemented = (what: string, why: string) => () =>
    Promise.reject(
      new TtrpcError(Code.unimplemented, `${what} is not implemented by the ovm shim: ${why}`),
    );

  const m = new Map<string, Handler>();
  const on = (
    method: string,
    req: string,
    res: string,
    fn: (r: Message) => Promise<Message>,
  ) => {
    m.set(`${TASK_SERVICE}/${method}`, async (payload) => {
      try {
        return encodeMessage(res, await fn(decodeMessage(req, payload)));
      } catch (e) {
        throw toTtrpc(e);
      }
    });
  };

  on("Create", P + "CreateTaskRequest", P + "CreateTaskResponse", async (r) => {
    if (task && !deleted) {
      throw new TtrpcError(Code.alreadyExists, `this shim already runs task "${task.id}"`);
    }
    task = await VmTask.create(store, {
      id: r.id,
      namespace: options.namespace,
      bundle: r.bundle,
      rootfs: r.rootfs,
      io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
      checkpoint: r.checkpoint || undefined,
    }, options);
    deleted = false;
    const t = task;
    t.onExit((x) => {
      pub.publish("exit", {
        container_id: x.id,
        id: x.id,
        pid: x.pid,
        exit_status: x.exitStatus,
        exited_at: timestamp(x.exitedAt!),
      });
    });
    // The shim is the task's process until the VM runs.
    t.pid = Deno.pid;
    await pub.publish("create", {
      container_id: t.id,
      bundle: t.bundle,
      rootfs: r.rootfs,
      io: { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal },
      checkpoint: r.checkpoint,
      pid: t.pid,
    });
    return { pid: t.pid };
  });

  on("Start", P + "StartRequest", P + "StartResponse", async (r) => {
    const t = need(r.id, r.exec_id);
    const pid = await t.start();
    await pub.publish("start", { container_id: t.id, pid });
    return { pid };
  });

  on("State", P + "StateRequest", P + "StateResponse", (r) => {
    const t = need(r.id, r.exec_id);
    return Promise.resolve({
      id: t.id,
      bundle: t.bundle,
      pid: t.pid,
      status: STATUS[t.status],
      stdin: t.io.stdin,
      stdout: t.io.stdout,
      stderr: t.io.stderr,
      terminal: t.io.terminal,
      exit_status: t.exitStatus,
      ...(t.exitedAt ? { exited_at: timestamp(t.exitedAt) } : {}),
      exec_id: "",
    });
  });

  on("Wait", P + "WaitRequest", P + "WaitResponse", async (r) => {
    const t = need(r.id, r.exec_id);
    await t.exited;
    return { exit_status: t.exitStatus, exited_at: timestamp(t.exitedAt!) };
  });

  on("Kill", P + "KillRequest", EMPTY, (r) => {
    need(r.id, r.exec_id).kill(r.signal);
    return Promise.resolve({});
  });

  on("Delete", P + "DeleteRequest", P + "DeleteResponse", async (r) => {
    const t = need(r.id, r.exec_id);
    await t.delete();
    deleted = true;
    const res = {
      pid: t.pid,
      exit_status: t.exitStatus,
      exited_at: timestamp(t.exitedAt ?? new Date()),
    };
    await pub.publish("delete", { container_id: t.id, id: t.id, ...res });
    return res;
  });

  on("Pids", P + "PidsRequest", P + "PidsResponse", (r) => {
    const t = need(r.id);
    return Promise.resolve({ processes: t.status === "stopped" ? [] : [{ pid: t.pid }] });
  });

  on("Pause", P + "PauseRequest", EMPTY, async (r) => {
    const t = need(r.id);
    await t.pause();
    await pub.publish("paused", { container_id: t.id });
    return {};
  });

  on("Resume", P + "ResumeRequest", EMPTY, async (r) => {
    const t = need(r.id);
    await t.resume();
    await pub.publish("resumed", { container_id: t.id });
    return {};
  });

  on("CloseIO", P + "CloseIORequest", EMPTY, (r) => {
    const t = need(r.id, r.exec_id);
    if (r.stdin) t.closeStdin();
    return Promise.resolve({});
  });

  on("Stats", P + "StatsRequest", P + "StatsResponse", async (r) => {
    const t = need(r.id);
    return { stats: packAny(METRICS_V2, await t.metrics()) };
  });

  on("Checkpoint", P + "CheckpointTaskRequest", EMPTY, async (r) => {
    await need(r.id).checkpoint(r.path);
    return {};
  });

  on("Connect", P + "ConnectRequest", P + "ConnectResponse", (r) => {
    const t = need(r.id);
    return Promise.resolve({ shim_pid: Deno.pid, task_pid: t.pid, version: VERSION });
  });

  on("Shutdown", P + "ShutdownRequest", EMPTY, (r) => {
    // A shim with a live task stays, unless containerd insists (now).
    if (!task || deleted || r.now) options.onShutdown();
    return Promise.resolve({});
  });

  m.set(
    `${TASK_SERVICE}/Exec`,
    unimplemented(
      "Exec",
      "the VM runs one workload; a second process inside it needs a guest agent",
    ),
  );
  m.set(`${TASK_SERVICE}/ResizePty`, unimplemented("ResizePty", "tasks have no terminal"));
  m.set(
    `${TASK_SERVICE}/Update`,
    unimplemented("Update", "a VM's memory and CPUs are fixed when it boots"),
  );
  return m;
}
