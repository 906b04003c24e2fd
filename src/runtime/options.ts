/**
 * @module
 * The options of a start: parsing what people type (port publishing `-p`,
 * network modes), {@linkcode StartOptions}, and the small interface a start
 * reaches a warm pool through ({@linkcode RestorePool}).
 */
import { ValidationError } from "../errors.ts";
import type {
  AccelRequest,
  NetMode,
  PortMapping,
  PreparedVm,
  StartedVm,
  VmmAdapter,
} from "../vmm/mod.ts";
import type { InstanceState, VmPaths } from "./instance.ts";
import type { RestoreRecord } from "./restore_record.ts";

const PORT_RE = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;

/** Parses `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]`; the host address defaults to 127.0.0.1. */
export function parsePublish(spec: string): PortMapping {
  const m = PORT_RE.exec(spec);
  const port = (s: string) => {
    const n = Number(s);
    if (n < 1 || n > 65535) throw new RangeError();
    return n;
  };
  try {
    if (!m) throw new RangeError();
    return {
      hostIp: m[1] ?? "127.0.0.1",
      hostPort: port(m[2]),
      guestPort: port(m[3]),
      protocol: (m[4] as "tcp" | "udp" | undefined) ?? "tcp",
    };
  } catch {
    throw new ValidationError(`Invalid -p "${spec}"`, {
      hint: "use [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. -p 8080:80 (ports 1-65535)",
    });
  }
}

/** Parses `--net none|user|bridge[=NETWORK]`. */
export function parseNetFlag(
  value: string | undefined,
  publish: PortMapping[],
): { mode: NetMode; network?: string } {
  const v = value ?? "user";
  const [mode, network, extra] = v.split("=");
  if (
    (mode !== "none" && mode !== "user" && mode !== "bridge") || extra !== undefined ||
    (network !== undefined && (mode !== "bridge" || network === ""))
  ) {
    throw new ValidationError(`Invalid --net "${v}"`, {
      hint: "use user (QEMU user-mode networking, no root needed), bridge[=NETWORK] " +
        "(a TAP on an ovm bridge with its own address; root) or none",
    });
  }
  if (mode === "none" && publish.length) {
    throw new ValidationError("-p needs a network: it cannot be used with --net none");
  }
  return { mode, ...(network !== undefined ? { network } : {}) };
}

export function parseNetMode(value: string | undefined, publish: PortMapping[]): NetMode {
  return parseNetFlag(value, publish).mode;
}

/** The guest address ovm gives a user-mode network (QEMU's slirp defaults). */
export const USER_NET = { address: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" };

export interface StartOptions {
  memoryBytes?: number;
  cpus?: number;
  runtime?: string;
  accel?: AccelRequest;
  detach?: boolean;
  name?: string;
  net?: NetMode;
  /** Bridge mode: the network to join (default `ovm0`, created on first use). */
  network?: string;
  publish?: PortMapping[];
  /** Replaces the bootstrap config's `cmd` (like `docker run IMAGE CMD...`). */
  cmd?: string[];
  /** `--entrypoint`: replaces the entrypoint and drops the config's cmd (convert's `applyOverrides`). */
  entrypoint?: string[];
  /** `--env NAME=value` adds or replaces, `--env NAME` unsets. */
  env?: string[];
  /** A boot that prints nothing on the console within this bound fails. Default 60 s. */
  bootTimeoutMs?: number;
  signal?: AbortSignal;
  /** Notes for people (accelerator fallback, runtime warnings). */
  note?: (msg: string) => void;
  /** Called after each step with its duration (`OVM_TRACE=1 ovm run`; the bench reads it). */
  trace?: (step: string, ms: number) => void;
  /** Boot an artifact that has a RAM snapshot cold instead of restoring it. */
  cold?: boolean;
  /** A warm pool to take a prepared VM from when restoring a snapshot (spec §8.5). */
  pool?: RestorePool;
  /** The caller claimed the instance id already (`InstanceStore.claim`: an API start). */
  claimed?: boolean;
  /** When the start was asked for (`Date.now()`), for the recorded `bootMs`. Default: now. */
  requestedAt?: number;
  /** A restore's console log starts with this file's content (`ovm resume` keeps the console). */
  consoleFrom?: string;
  /**
   * The workload's stdin (the containerd shim, spec 13.3): a FIFO whose
   * writer the caller holds, fed to the guest's `ovms.stdin` port. The
   * guest's command line must ask for it (`ovms.stdin=port`); a restore then
   * takes no VM from a warm pool (those read /dev/null).
   */
  stdin?: string;
}

export interface StartedInstance {
  state: InstanceState;
  vm: StartedVm;
  adapter: VmmAdapter;
}

export const DEFAULT_MEMORY = 512 * 1024 * 1024;

/** Calls `options.trace` with the time since the previous step. */
export function stepTimer(
  options: { trace?: (step: string, ms: number) => void },
): (name: string) => void {
  let mark = performance.now();
  return (name: string) => {
    const now = performance.now();
    options.trace?.(name, now - mark);
    mark = now;
  };
}

/** A VM made ready for a snapshot ahead of a start (what a warm pool holds). */
export interface PreparedRestore {
  id: string;
  /** Its directory (moved into `instances/` when a start takes it). */
  paths: VmPaths;
  adapter: VmmAdapter;
  prepared: PreparedVm;
  artifactDigest: string;
  /** The record the pool checked when it filled (compatibility, versions). */
  record: RestoreRecord;
  /** The device state is loaded; the vCPUs wait for `prepared.resume()`. */
  loaded: boolean;
}

/** What a start needs of a warm pool (spec §8.5); `WarmPool` is one. */
export interface RestorePool {
  /** A prepared VM for the snapshot with manifest `digest`, if one waits. */
  take(digest: string): PreparedRestore | undefined;
  /** Tops the pool up for `digest` in the background (the taker calls it once its start is done). */
  refill(digest: string): void;
  /** Stops a prepared VM that will not be used and removes its directory. */
  discard(vm: PreparedRestore): Promise<void>;
}
