/**
 * @module
 * The controller's answers as they go on the wire, compatible with the OVMS
 * origin contract (spec/ovms-v0.1.md section 11): `state` is one of the
 * origin's five `InstanceStatus` states and `runtime_state` carries ovm's own
 * (a `paused` instance is `running` there); start and stop answer the
 * origin's `OperationResult.status` (`ok`, `starting`, `stopping`) beside
 * the instance's `state`; `uptime_ms` is a whole number, absent while there
 * is none. Everything else passes through unchanged.
 */
import type {
  InstancesReply,
  InstancesResponse,
  InstanceSummary,
  InstanceSummaryReply,
  OvmsState,
  StartReply,
  StartResponse,
  State,
  StatusReply,
  StatusResponse,
  StopReply,
  StopResponse,
} from "./schemas.ts";

/**
 * ovm's states onto the origin's. Typed over every ovm state, so a state
 * added to `StateSchema` does not compile until it is mapped here.
 */
const OVMS_STATE: Record<State, OvmsState> = {
  starting: "starting",
  running: "running",
  // The VM exists and its VMM runs; only its vCPUs are held.
  paused: "running",
  stopping: "stopping",
  stopped: "stopped",
  error: "error",
};

export function ovmsState(state: State): OvmsState {
  return OVMS_STATE[state];
}

export function startReply(r: StartResponse): StartReply {
  return {
    instance_id: r.instance_id,
    status: r.status === "starting" ? "starting" : "ok",
    state: ovmsState(r.status),
    runtime_state: r.status,
  };
}

export function stopReply(r: StopResponse): StopReply {
  const { status, ...rest } = r;
  return {
    ...rest,
    status: status === "stopping" ? "stopping" : "ok",
    state: ovmsState(status),
    runtime_state: status,
  };
}

export function summaryReply(s: InstanceSummary): InstanceSummaryReply {
  return { ...s, state: ovmsState(s.state), runtime_state: s.state };
}

export function statusReply(s: StatusResponse): StatusReply {
  const { uptime_ms, ...rest } = s;
  return {
    ...rest,
    state: ovmsState(s.state),
    runtime_state: s.state,
    ...(uptime_ms === null ? {} : { uptime_ms: Math.round(uptime_ms) }),
  };
}

/** The wire body for an action's answer. */
export function toWire(kind: string, body: unknown): unknown {
  switch (kind) {
    case "start":
      return startReply(body as StartResponse);
    case "stop":
      return stopReply(body as StopResponse);
    case "status":
    case "resume":
      return statusReply(body as StatusResponse);
    case "list":
      return {
        instances: (body as InstancesResponse).instances.map(summaryReply),
      } satisfies InstancesReply;
    default:
      return body;
  }
}
