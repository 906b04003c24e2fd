/**
 * @module
 * The OVMS runtime contract's wire schemas, once, in zod: request bodies
 * (strict: an unknown field is a 400), responses, and the error body. The
 * OpenAPI document in `spec/api/` is generated from these (`openapi.ts`).
 */
import { z } from "zod";

/** Instance ids travel in URLs and become directory names: validated before any path is built. */
export const InstanceIdSchema = z.string().regex(/^[a-z0-9-]{1,64}$/).describe(
  "1-64 characters of a-z, 0-9 and -",
);

export const StateSchema = z.enum([
  "starting",
  "running",
  "paused",
  "stopping",
  "stopped",
  "error",
]);

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
  }).optional(),
});

export const StopRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema,
  timeout_ms: z.number().int().min(0).max(600_000).optional(),
  force: z.boolean().optional(),
});

export const SnapshotRequestSchema = z.strictObject({
  instance_id: InstanceIdSchema,
  tag: z.string().min(1).max(512).describe("a local NAME:TAG, or a registry reference to push to"),
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

export const StartResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  status: StateSchema,
});

export const StopResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  status: StateSchema,
  reason: z.string().optional(),
  exit_code: z.number().int().optional(),
});

export const SnapshotResponseSchema = z.object({
  instance_id: InstanceIdSchema,
  snapshot_ref: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  tag: z.string(),
  pushed: z.string().optional(),
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

export const InstanceSummarySchema = z.object({
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

export const StatusResponseSchema = InstanceSummarySchema.extend({
  uptime_ms: z.number().min(0).nullable(),
  accel: z.enum(["kvm", "tcg"]).optional(),
  memory_bytes: z.number().int().positive().optional(),
  cpus: z.number().int().positive().optional(),
  devices: z.array(z.object({
    type: z.string(),
    name: z.string(),
    size: z.number().int().min(0),
  })),
  metrics: MetricsSchema,
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

/** One line of `GET /logs/{id}` (NDJSON): a console line and the byte offset it starts at. */
export const LogRecordSchema = z.object({
  offset: z.number().int().min(0),
  line: z.string(),
});

export type StartRequest = z.infer<typeof StartRequestSchema>;
export type StopRequest = z.infer<typeof StopRequestSchema>;
export type SnapshotRequest = z.infer<typeof SnapshotRequestSchema>;
export type InjectRequest = z.infer<typeof InjectRequestSchema>;
export type ErrorBody = z.infer<typeof ErrorBodySchema>;
export type StartResponse = z.infer<typeof StartResponseSchema>;
export type StopResponse = z.infer<typeof StopResponseSchema>;
export type SnapshotResponse = z.infer<typeof SnapshotResponseSchema>;
export type InjectResponse = z.infer<typeof InjectResponseSchema>;
export type Metrics = z.infer<typeof MetricsSchema>;
export type InstanceSummary = z.infer<typeof InstanceSummarySchema>;
export type StatusResponse = z.infer<typeof StatusResponseSchema>;
export type InstancesResponse = z.infer<typeof InstancesResponseSchema>;
export type VersionResponse = z.infer<typeof VersionResponseSchema>;
export type LogRecord = z.infer<typeof LogRecordSchema>;

export const API_VERSION = "ovms-runtime/v0.1";

/** Request bodies above these are refused with 413 before they are read. */
export const BODY_LIMIT = 1024 * 1024;
export const INJECT_BODY_LIMIT = 16 * 1024 * 1024;
