/**
 * @module
 * The OVMS runtime contract's wire schemas, once, in zod: request bodies
 * (strict: an unknown field is a 400), responses, and the error body. The
 * OpenAPI document in `spec/api/` is generated from these (`openapi.ts`).
 */
import { z } from "zod";
import { INSTANCE_STATES, OVMS_STATES } from "../runtime/mod.ts";

/** Instance ids travel in URLs and become directory names: validated before any path is built. */
export const InstanceIdSchema = z.string().regex(/^[a-z0-9-]{1,64}$/).describe(
  "1-64 characters of a-z, 0-9 and -",
);

/** ovm's instance states: the origin's five plus `paused` (carried as `runtime_state`). */
export const StateSchema = z.enum(INSTANCE_STATES);

/**
 * The OVMS origin's `InstanceStatus.state` (spec/ovms-v0.1.md section 11):
 * what `state` carries on the wire, so a client of the origin contract reads
 * ovm's answers. The finer ovm state is in `runtime_state` (wire.ts maps it).
 */
export const OvmsStateSchema = z.enum(OVMS_STATES);

/** The origin's `OperationResult.status`: how far a start or stop has got. */
export const OperationStatusSchema = z.enum(["ok", "starting", "stopping"]);

const SizeSchema = z.union([
  z.number().int().positive(),
  z.string().min(1).max(32),
]).describe('bytes, or a size such as "256M"');

export const StartRequestSchema = z.strictObject({
  manifest: z.string().min(1).max(4096).describe("a store reference, a digest, or a path"),
  overrides: z.strictObject({
    memory: SizeSchema.optional(),
    cpus: z.number().int().min(1).max(64).optional(),
    runtime: z.string().min(1).max(64).optional(),
    accel: z.enum(["auto", "kvm", "tcg"]).optional(),
    name: InstanceIdSchema.optional(),
    net: z.string().regex(/^(none|user|bridge(=[a-z0-9][a-z0-9_.-]{0,31})?)$/).optional()
      .describe("none, user, or bridge[=NETWORK] (default: the server's --net, else user)"),
    publish: z.array(z.string().min(1).max(64)).max(64).optional()
      .describe("ports to publish, as `ovm run -p`: [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]"),
  }).optional(),
});

export const StopRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema,
  timeout_ms: z.number().int().min(0).max(600_000).optional(),
  force: z.boolean().optional(),
});

export const SnapshotRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema,
  tag: z.string().min(1).max(512).optional().describe(
    "a local NAME:TAG, or a registry reference to push to (default INSTANCE:snapshot-<UTC time>; " +
      "with stop, standby/INSTANCE:latest)",
  ),
  stop: z.boolean().optional().describe(
    "put the instance on standby (`ovm standby`): snapshot it, then stop it, keeping the " +
      "instance for POST /resume",
  ),
});

export const ResumeRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema.describe("an instance put on standby (POST /snapshot with stop)"),
});

export const InjectRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema,
  content: z.strictObject({
    mmio: z.strictObject({
      device: z.string().min(1).max(64),
      offset: z.number().int().min(0),
      data: z.base64().describe("the bytes to write, base64"),
    }),
  }),
});

export const ErrorBodySchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    hint: z.string().optional(),
  }),
});

// ---- what the controller answers; wire.ts maps these onto the wire schemas below ----

export const StartResultSchema = z.object({
  instance_id: InstanceIdSchema,
  status: StateSchema,
});

export const StopResultSchema = z.object({
  instance_id: InstanceIdSchema,
  status: StateSchema,
  reason: z.string().optional(),
  exit_code: z.number().int().optional(),
});

// ---- the wire ----

/** Both the origin's `InstanceStatus` and its `OperationResult`. */
export const StartResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  status: OperationStatusSchema.describe('"starting" while it boots, "ok" once it booted'),
  state: OvmsStateSchema,
  runtime_state: StateSchema,
});

/** The origin's `OperationResult`, with the instance's state. */
export const StopResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  status: OperationStatusSchema.describe('"ok" once stopped, "stopping" while it stops'),
  state: OvmsStateSchema,
  runtime_state: StateSchema,
  reason: z.string().optional(),
  exit_code: z.number().int().optional(),
});

export const SnapshotResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  snapshot_ref: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  tag: z.string(),
  pushed: z.string().optional(),
  standby: z.boolean().optional().describe("the instance was stopped and is on standby"),
});

export const InjectResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  device: z.string(),
  offset: z.number().int().min(0),
  bytes_written: z.number().int().min(0),
});

export const MetricsSchema = z.object({
  cpu_time_ms: z.number().min(0).nullable().describe("host CPU time of the VMM (user+system)"),
  rss_bytes: z.number().int().min(0).nullable(),
  pss_bytes: z.number().int().min(0).nullable(),
  disk_bytes: z.number().int().min(0).describe("space used by the instance directory"),
  start_ms: z.number().min(0).nullable().describe("created to VMM started"),
  boot_ms: z.number().min(0).nullable().describe("start request to first console output"),
  restore_ms: z.number().min(0).nullable().describe("RAM snapshot restore, when restored"),
});

export const InstanceSummaryResultSchema = z.object({
  instance_id: InstanceIdSchema,
  state: StateSchema,
  reason: z.string().optional(),
  manifest: z.string().describe("what was started: the ref or path"),
  manifest_digest: z.string().optional(),
  name: z.string().optional(),
  version: z.string().optional(),
  runtime: z.string().optional(),
  pid: z.number().int().positive().optional(),
  created_at: z.string().optional(),
  exit_code: z.number().int().optional(),
});

export const StatusResultSchema = InstanceSummaryResultSchema.extend({
  uptime_ms: z.number().min(0).nullable(),
  accel: z.enum(["kvm", "tcg"]).optional(),
  memory_bytes: z.number().int().positive().optional(),
  cpus: z.number().int().positive().optional(),
  devices: z.array(z.object({
    type: z.string(),
    name: z.string(),
    size: z.number().int().min(0),
  })),
  network: z.object({
    mode: z.enum(["none", "user", "bridge"]),
    network: z.string().optional().describe("bridge mode: the network's name"),
    addresses: z.array(z.object({
      network: z.string(),
      address: z.string(),
      mac: z.string(),
    })).describe("bridge mode: the guest's address on its network, per NIC"),
  }).optional(),
  metrics: MetricsSchema,
});

export const InstancesResultSchema = z.object({
  instances: z.array(InstanceSummaryResultSchema),
});

/** The origin's `InstanceStatus`: `state` in its five values, ovm's own in `runtime_state`. */
export const InstanceSummarySchema = InstanceSummaryResultSchema.extend({
  state: OvmsStateSchema,
  runtime_state: StateSchema,
});

export const StatusResponseSchema = StatusResultSchema.extend({
  state: OvmsStateSchema,
  runtime_state: StateSchema,
  uptime_ms: z.number().int().min(0).optional().describe("absent while not running"),
});

export const InstancesResponseSchema = z.object({
  instances: z.array(InstanceSummarySchema),
});

export const DeleteResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  removed: z.literal(true),
});

export const HealthResponseSchema = z.object({ status: z.literal("ok") });

export const VersionResponseSchema = z.object({
  version: z.string(),
  api: z.literal("ovms-runtime/v0.1"),
  runtimes: z.array(z.string()),
  home: z.string().optional().describe(
    "the server's OVM_HOME (lets a local CLI use the default socket only for its own home)",
  ),
});

/** One line of `GET /logs/{instance_id}` (NDJSON): a console line and the byte offset it starts at. */
export const LogRecordSchema = z.object({
  offset: z.number().int().min(0),
  line: z.string(),
});

export type StartRequest = z.infer<typeof StartRequestSchema>;
export type StopRequest = z.infer<typeof StopRequestSchema>;
export type SnapshotRequest = z.infer<typeof SnapshotRequestSchema>;
export type ResumeRequest = z.infer<typeof ResumeRequestSchema>;
export type InjectRequest = z.infer<typeof InjectRequestSchema>;
export type ErrorBody = z.infer<typeof ErrorBodySchema>;
/** What the controller answers to a start (the wire form is {@linkcode StartReply}). */
export type StartResponse = z.infer<typeof StartResultSchema>;
export type StopResponse = z.infer<typeof StopResultSchema>;
export type StartReply = z.infer<typeof StartResponseSchema>;
export type StopReply = z.infer<typeof StopResponseSchema>;
export type SnapshotResponse = z.infer<typeof SnapshotResponseSchema>;
export type InjectResponse = z.infer<typeof InjectResponseSchema>;
export type Metrics = z.infer<typeof MetricsSchema>;
export type InstanceSummary = z.infer<typeof InstanceSummaryResultSchema>;
export type StatusResponse = z.infer<typeof StatusResultSchema>;
export type InstancesResponse = z.infer<typeof InstancesResultSchema>;
export type InstanceSummaryReply = z.infer<typeof InstanceSummarySchema>;
export type StatusReply = z.infer<typeof StatusResponseSchema>;
export type InstancesReply = z.infer<typeof InstancesResponseSchema>;
export type State = z.infer<typeof StateSchema>;
export type OvmsState = z.infer<typeof OvmsStateSchema>;
export type VersionResponse = z.infer<typeof VersionResponseSchema>;
export type LogRecord = z.infer<typeof LogRecordSchema>;

export const API_VERSION = "ovms-runtime/v0.1";

/** Request bodies above these are refused with 413 before they are read. */
export const BODY_LIMIT = 1024 * 1024;
export const INJECT_BODY_LIMIT = 16 * 1024 * 1024;
