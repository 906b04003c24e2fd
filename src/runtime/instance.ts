/**
 * @module
 * Instances on disk: `$OVM_HOME/instances/<id>/state.json` (written
 * atomically; the schema is spec section 7.3) next to the VMM's own `vm/`
 * directory. `ovm gc` reads `manifestDigest`, and the system manager reads
 * `kernelVersion`/`initrdVersion`, from these files, so those names are fixed.
 */
import { join } from "node:path";
import { z } from "zod";
import { AlreadyExistsError, NotFoundError, ValidationError } from "../errors.ts";
import { DigestSchema } from "../manifest/mod.ts";
import { homePaths } from "../store/mod.ts";
import { exists, writeJsonAtomic } from "../util/fs.ts";
import { VM_STATES } from "../vmm/mod.ts";
import { isActiveState } from "./state_machine.ts";

export const INSTANCE_ID_RE = /^[a-z0-9-]{1,64}$/;

/** The instance states (`state_machine.ts` says which follows which). */
export const VmStateSchema = z.enum(VM_STATES);

const DeviceStatusSchema = z.object({
  type: z.literal("ivshmem"),
  name: z.string(),
  size: z.number(),
  mmioAddr: z.string(),
  hostPath: z.string().optional(),
  guestLocation: z.string().optional(),
});

export const VmHandleSchema = z.object({
  adapter: z.string(),
  pid: z.number().int().positive(),
  pidStartTime: z.number().optional(),
  controlSocket: z.string(),
  runtimeFiles: z.array(z.string()),
  devices: z.array(DeviceStatusSchema),
  argv: z.array(z.string()),
});

export const InstanceStateSchema = z.object({
  schemaVersion: z.literal(1),
  id: z.string().regex(INSTANCE_ID_RE),
  /** What the user asked to run (a ref or a path). */
  ref: z.string(),
  /** The OCI manifest digest of the artifact (gc keeps it while the instance exists). */
  manifestDigest: DigestSchema,
  name: z.string(),
  version: z.string(),
  adapter: z.string(),
  state: VmStateSchema,
  reason: z.string().optional(),
  pid: z.number().int().positive().optional(),
  /** The VMM's control socket (QMP for QEMU). */
  qmpSocket: z.string().optional(),
  kernelDigest: DigestSchema,
  kernelVersion: z.string().optional(),
  initrdDigest: DigestSchema.optional(),
  initrdVersion: z.string().optional(),
  accel: z.enum(["kvm", "tcg"]),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().int().positive(),
  network: z.object({
    mode: z.enum(["none", "user", "bridge"]),
    publish: z.array(z.object({
      hostIp: z.string(),
      hostPort: z.number(),
      guestPort: z.number(),
      protocol: z.enum(["tcp", "udp"]),
    })),
    /** Bridge mode: the network's name (spec section 7.6). */
    network: z.string().optional(),
    /** Bridge mode: the guest's addresses, one per NIC. */
    addresses: z.array(z.object({ network: z.string(), address: z.string(), mac: z.string() }))
      .optional(),
  }),
  devices: z.array(DeviceStatusSchema),
  detached: z.boolean(),
  createdAt: z.string(),
  startedAt: z.string().optional(),
  stoppedAt: z.string().optional(),
  /** The workload's exit code from the console's `OVMS-EXIT: <code>` line. */
  exitCode: z.number().int().optional(),
  vm: VmHandleSchema.optional(),
  /** The ovm process that is starting the VM (until the VM's own pid is recorded). */
  ownerPid: z.number().int().positive().optional(),
  /** Milliseconds from the start request to the guest's first output (or the restored VM running). */
  bootMs: z.number().nonnegative().optional(),
  /** Whether the start restored a RAM snapshot. */
  restored: z.boolean().optional(),
  /** On standby (`ovm standby`): the snapshot `ovm resume` restores into this instance. */
  standby: z.object({ ref: z.string(), digest: DigestSchema, at: z.string() }).optional(),
});

export type InstanceState = z.infer<typeof InstanceStateSchema>;

/**
 * A start accepted before its artifact is resolved (the API answers 202 at
 * once): `start.json` in the instance directory until `state.json` exists.
 * `reason` says why the start failed when it failed before a state existed.
 */
export const StartClaimSchema = z.object({
  schemaVersion: z.literal(1),
  id: z.string().regex(INSTANCE_ID_RE),
  ref: z.string(),
  createdAt: z.string(),
  ownerPid: z.number().int().positive(),
  reason: z.string().optional(),
});

export type StartClaim = z.infer<typeof StartClaimSchema>;

/** True while the instance has a VM (or a start) in flight. */
export function isActive(state: InstanceState): boolean {
  return isActiveState(state.state);
}

export function assertInstanceId(id: string): string {
  if (!INSTANCE_ID_RE.test(id)) {
    throw new ValidationError(`Invalid instance name "${id}"`, {
      hint: "use 1-64 characters of a-z, 0-9 and -",
    });
  }
  return id;
}

export function newInstanceId(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** The files of one VM in directory `dir` (an instance's, or a warm pool's). */
export interface VmPaths {
  dir: string;
  /** Owned by the VMM (and its uid when ovm runs as root). */
  vmDir: string;
  consoleLog: string;
  overlay: string;
  configDisk: string;
}

export function vmPaths(dir: string): VmPaths {
  const vmDir = join(dir, "vm");
  return {
    dir,
    vmDir,
    consoleLog: join(vmDir, "console.log"),
    overlay: join(vmDir, "overlay.qcow2"),
    configDisk: join(dir, "config.tar"),
  };
}

/** The files of one instance. */
export function instancePaths(
  home: string,
  id: string,
): VmPaths & { state: string; claim: string } {
  const dir = join(homePaths(home).instances, assertInstanceId(id));
  return { ...vmPaths(dir), state: join(dir, "state.json"), claim: join(dir, "start.json") };
}

export class InstanceStore {
  readonly home: string;
  readonly dir: string;

  constructor(home: string) {
    this.home = home;
    this.dir = homePaths(home).instances;
  }

  paths(id: string): ReturnType<typeof instancePaths> {
    return instancePaths(this.home, id);
  }

  /** Claims an id by creating its directory (exclusive). */
  async create(id: string): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true });
    try {
      await Deno.mkdir(this.paths(id).dir, { mode: 0o755 });
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) {
        throw new AlreadyExistsError(`Instance "${id}" already exists`, {
          cause: e,
          hint: `pick another --name, or remove it with 'ovm rm ${id}'`,
        });
      }
      throw e;
    }
  }

  async write(state: InstanceState): Promise<void> {
    await writeJsonAtomic(this.paths(state.id).state, state);
  }

  async read(id: string): Promise<InstanceState> {
    const p = this.paths(id).state;
    let text: string;
    try {
      text = await Deno.readTextFile(p);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new NotFoundError(`No instance "${id}"`, {
          cause: e,
          hint: "list instances with 'ovm ps -a'",
        });
      }
      throw e;
    }
    const parsed = InstanceStateSchema.safeParse(JSON.parse(text));
    if (!parsed.success) {
      throw new ValidationError(
        `The state of instance "${id}" is unreadable: ${parsed.error.message}`,
      );
    }
    return parsed.data;
  }

  /** Every instance with a readable state, oldest first. */
  async list(): Promise<InstanceState[]> {
    const out: InstanceState[] = [];
    if (!(await exists(this.dir))) return out;
    for await (const e of Deno.readDir(this.dir)) {
      if (!e.isDirectory || !INSTANCE_ID_RE.test(e.name)) continue;
      try {
        out.push(await this.read(e.name));
      } catch { /* being created or removed */ }
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async remove(id: string): Promise<void> {
    await Deno.remove(this.paths(id).dir, { recursive: true });
  }

  /** Claims `id` for a start whose artifact is not resolved yet (exclusive, like `create`). */
  async claim(claim: StartClaim): Promise<void> {
    await this.create(claim.id);
    try {
      await writeJsonAtomic(this.paths(claim.id).claim, claim);
    } catch (e) {
      await this.remove(claim.id).catch(() => {});
      throw e;
    }
  }

  /** The claim of a start that has no `state.json` yet, if there is one. */
  async readClaim(id: string): Promise<StartClaim | undefined> {
    const paths = this.paths(id);
    if (await exists(paths.state)) return undefined;
    try {
      const r = StartClaimSchema.safeParse(JSON.parse(await Deno.readTextFile(paths.claim)));
      return r.success ? r.data : undefined;
    } catch {
      return undefined;
    }
  }

  /** Claims of starts that have no `state.json` yet, oldest first. */
  async listClaims(): Promise<StartClaim[]> {
    const out: StartClaim[] = [];
    if (!(await exists(this.dir))) return out;
    for await (const e of Deno.readDir(this.dir)) {
      if (!e.isDirectory || !INSTANCE_ID_RE.test(e.name)) continue;
      const c = await this.readClaim(e.name);
      if (c) out.push(c);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Records why a claimed start failed before it had a state (the directory may be gone). */
  async failClaim(claim: StartClaim, reason: string): Promise<void> {
    await Deno.mkdir(this.paths(claim.id).dir, { recursive: true, mode: 0o755 });
    if (await exists(this.paths(claim.id).state)) return;
    await writeJsonAtomic(this.paths(claim.id).claim, { ...claim, reason });
  }

  /**
   * Makes the claimed (`claimed`) or a new instance directory `id` out of
   * directory `from` (a warm pool's VM): the files move, open ones stay open.
   */
  async adopt(id: string, from: string, options: { claimed?: boolean } = {}): Promise<void> {
    // A claim moves along (the directory must be empty to be replaced).
    if (options.claimed) await Deno.rename(this.paths(id).claim, join(from, "start.json"));
    else await this.create(id);
    await Deno.rename(from, this.paths(id).dir).catch(async (e) => {
      if (!options.claimed) await Deno.remove(this.paths(id).dir).catch(() => {});
      throw e;
    });
  }
}
