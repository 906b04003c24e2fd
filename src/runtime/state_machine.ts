/**
 * @module
 * The instance state machine (spec section 7.4): the states an instance is
 * in, the transitions the runtime records, which actions each state allows,
 * and what a refused action answers — HTTP 409 from the API, exit code 1
 * from the CLI. The CLI and the API ask {@linkcode assertAllowed} the same
 * question, so they refuse the same things with the same words.
 *
 * `starting`, `running`, `stopping`, `stopped` and `error` are the OVMS
 * runtime contract's `InstanceStatus.state`; `paused` is ovm's extension (a
 * running VM whose vCPUs are stopped). Reads never write: a state observed
 * from a VM (it died, it was paused) is reported at once and recorded by the
 * next action that writes the instance.
 */
import { ConflictError } from "../errors.ts";
import { VM_STATES, type VmState } from "../vmm/mod.ts";

export type { VmState };

/** Every state, in lifecycle order. */
export const INSTANCE_STATES = VM_STATES;

/** The states of the OVMS runtime contract; `paused` extends them. */
export const OVMS_STATES: readonly VmState[] = [
  "starting",
  "running",
  "stopping",
  "stopped",
  "error",
];

/** States with a VM (or a start) in flight: the instance holds resources. */
export const ACTIVE_STATES: readonly VmState[] = ["starting", "running", "paused", "stopping"];

/** The recorded transitions: from a state, the states it may become. */
export const TRANSITIONS: Readonly<Record<VmState, readonly VmState[]>> = {
  starting: ["running", "paused", "stopping", "stopped", "error"],
  running: ["paused", "stopping", "stopped", "error"],
  paused: ["running", "stopping", "stopped", "error"],
  stopping: ["stopped", "error"],
  stopped: [],
  error: [],
};

/** What a user or client asks of an instance. */
export type InstanceAction = "stop" | "snapshot" | "inject" | "pause" | "resume" | "remove";

/** In which states each action is allowed (`remove` of an active one needs `force`). */
export const ALLOWED: Readonly<Record<InstanceAction, readonly VmState[]>> = {
  stop: ACTIVE_STATES,
  snapshot: ["running", "paused"],
  inject: ["running", "paused"],
  pause: ["running"],
  resume: ["paused"],
  remove: ["stopped", "error"],
};

/** The answer to a refused action: the API's HTTP status and the CLI's exit code. */
export const REFUSAL = { httpStatus: 409, exitCode: 1 } as const;

const HINTS: Record<InstanceAction, (id: string) => string> = {
  stop: () => "only a starting, running or paused instance can be stopped",
  snapshot: () => "only a running or paused instance can be snapshotted",
  inject: () => "only a running or paused instance accepts this",
  pause: () => "only a running instance can be paused",
  resume: () => "only a paused instance can be resumed",
  remove: (id) => `stop it first ('ovm stop ${id}') or use 'ovm rm -f ${id}'`,
};

/** An action the instance's state does not allow (a ConflictError: HTTP 409, exit code 1). */
export class TransitionRefusedError extends ConflictError {
  readonly state: VmState;
  readonly action: InstanceAction;
  constructor(id: string, state: VmState, action: InstanceAction) {
    super(
      action === "stop" || action === "remove"
        ? `Instance "${id}" is ${state}`
        : `Cannot ${action === "inject" ? "inject into" : action} instance "${id}": it is ${state}`,
      { hint: HINTS[action](id) },
    );
    this.state = state;
    this.action = action;
  }
}

export function isActiveState(state: VmState): boolean {
  return ACTIVE_STATES.includes(state);
}

/** True when `action` is allowed in `state`. */
export function allows(state: VmState, action: InstanceAction): boolean {
  return ALLOWED[action].includes(state);
}

/** Throws {@linkcode TransitionRefusedError} unless `action` is allowed in `state`. */
export function assertAllowed(id: string, state: VmState, action: InstanceAction): void {
  if (!allows(state, action)) throw new TransitionRefusedError(id, state, action);
}

/** True when the runtime may record `to` for an instance in `from` (or keep it). */
export function canTransition(from: VmState, to: VmState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}
