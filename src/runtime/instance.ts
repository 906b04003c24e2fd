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

export const INSTANCE_ID_RE = /^[a-z0-9-]{1,64}$/;

export const VmStateSchema = z.enum([
  "starting",
  "running",
  "paused",
  "stopping",
  "stopped",
  "error",
]);

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
    mode: z.enum(["none", "user"]),
    publish: z.array(z.object({
      hostIp: z.string(),
      hostPort: z.number(),
      guestPort: z.number(),
      protocol: z.enum(["tcp", "udp"]),
    })),
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
});

export type InstanceState = z.infer<typeof InstanceStateSchema>;

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

/** The files of one instance. */
export function instancePaths(home: string, id: string) {
  const dir = join(homePaths(home).instances, assertInstanceId(id));
  const vmDir = join(dir, "vm");
  return {
    dir,
    state: join(dir, "state.json"),
    /** Owned by the VMM (and its uid when ovm runs as root). */
    vmDir,
    consoleLog: join(vmDir, "console.log"),
    overlay: join(vmDir, "overlay.qcow2"),
    configDisk: join(dir, "config.tar"),
  };
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
}
