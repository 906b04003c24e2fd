/**
 * @module
 * The OpenAPI 3.1 document of the runtime contract, built from the zod
 * schemas in `schemas.ts` (request bodies as accepted: strict objects;
 * responses as sent). `deno task openapi` writes it to
 * `spec/api/ovms-runtime.openapi.yaml`; a test keeps the file in step.
 */
import { z } from "zod";
import { stringify } from "yaml";
import {
  API_VERSION,
  DeleteResponseSchema,
  ErrorBodySchema,
  HealthResponseSchema,
  InjectRequestSchema,
  InjectResponseSchema,
  InstanceIdSchema,
  InstancesResponseSchema,
  LogRecordSchema,
  ResumeRequestSchema,
  SnapshotRequestSchema,
  SnapshotResponseSchema,
  StartRequestSchema,
  StartResponseSchema,
  StatusResponseSchema,
  StopRequestSchema,
  StopResponseSchema,
  VersionResponseSchema,
} from "./schemas.ts";

const COMPONENTS: Record<string, [z.ZodType, "input" | "output"]> = {
  StartRequest: [StartRequestSchema, "input"],
  StopRequest: [StopRequestSchema, "input"],
  SnapshotRequest: [SnapshotRequestSchema, "input"],
  ResumeRequest: [ResumeRequestSchema, "input"],
  InjectRequest: [InjectRequestSchema, "input"],
  Error: [ErrorBodySchema, "output"],
  StartResponse: [StartResponseSchema, "output"],
  StopResponse: [StopResponseSchema, "output"],
  SnapshotResponse: [SnapshotResponseSchema, "output"],
  InjectResponse: [InjectResponseSchema, "output"],
  StatusResponse: [StatusResponseSchema, "output"],
  InstancesResponse: [InstancesResponseSchema, "output"],
  DeleteResponse: [DeleteResponseSchema, "output"],
  HealthResponse: [HealthResponseSchema, "output"],
  VersionResponse: [VersionResponseSchema, "output"],
  LogRecord: [LogRecordSchema, "output"],
};

const ERRORS: Record<string, string> = {
  "400": "Invalid request: bad JSON, an unknown or invalid field, a bad instance id",
  "403": "Refused by the admission policy",
  "404": "No such instance, manifest, device or endpoint",
  "405": "The endpoint does not take this method",
  "409": "Not valid in the instance's current state, or the name is taken",
  "413": "The request body is over the limit (1 MiB; 16 MiB for /inject)",
  "415": "The request body is not application/json",
  "500": "The runtime failed",
  "501": "Not implemented by this runtime",
  "503": "The server is shutting down",
};

function ref(name: string) {
  return { $ref: `#/components/schemas/${name}` };
}

function jsonContent(name: string) {
  return { "application/json": { schema: ref(name) } };
}

function errors(...codes: string[]) {
  const out: Record<string, unknown> = {};
  for (const c of codes) out[c] = { description: ERRORS[c], content: jsonContent("Error") };
  return out;
}

const ID_PARAM = {
  // The origin contract's name; on the wire a path parameter's name is not seen.
  name: "instance_id",
  in: "path",
  required: true,
  description: "the instance id",
  schema: toSchema(InstanceIdSchema, "input"),
};

function toSchema(schema: z.ZodType, io: "input" | "output"): Record<string, unknown> {
  const s = z.toJSONSchema(schema, { target: "draft-2020-12", io }) as Record<string, unknown>;
  delete s.$schema;
  return s;
}

function post(summary: string, req: string, ok: Record<string, unknown>, ...errs: string[]) {
  return {
    summary,
    requestBody: { required: true, content: jsonContent(req) },
    responses: { ...ok, ...errors(...errs) },
  };
}

/** The document as a plain object (what the YAML file holds). */
export function buildOpenApi(): Record<string, unknown> {
  const schemas: Record<string, unknown> = {};
  for (const [name, [schema, io]] of Object.entries(COMPONENTS)) {
    schemas[name] = toSchema(schema, io);
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "OVMS runtime API",
      version: API_VERSION.split("/")[1],
      description: `The OVMS runtime contract (${API_VERSION}), spec/ovms-v0.1.md section 11. ` +
        "HTTP/1.1 over a UNIX socket. Generated from ovm's zod schemas " +
        "by `deno task openapi`: do not edit by hand.",
    },
    servers: [{ url: "http://localhost", description: "any host name; the socket is the address" }],
    paths: {
      "/start": {
        post: {
          ...post(
            "Start an instance of an OVMS manifest",
            "StartRequest",
            {
              "202": { description: "Accepted: booting", content: jsonContent("StartResponse") },
              "200": {
                description: "With ?wait=true: booted (first console output)",
                content: jsonContent("StartResponse"),
              },
            },
            "400",
            "403",
            "404",
            "409",
            "413",
            "415",
            "500",
          ),
          parameters: [{
            name: "wait",
            in: "query",
            required: false,
            description: "answer once the guest printed its first console output",
            schema: { type: "boolean" },
          }],
        },
      },
      "/stop": {
        post: post(
          "Stop an instance (guest power-off, then forced)",
          "StopRequest",
          { "200": { description: "Stopped", content: jsonContent("StopResponse") } },
          "400",
          "404",
          "409",
          "413",
          "415",
          "500",
        ),
      },
      "/snapshot": {
        post: post(
          "Take a RAM snapshot of a running instance into a tag (pushed when the tag names a registry)",
          "SnapshotRequest",
          { "200": { description: "Snapshot taken", content: jsonContent("SnapshotResponse") } },
          "400",
          "404",
          "409",
          "413",
          "415",
          "500",
          "501",
        ),
      },
      "/resume": {
        post: post(
          "Restore an instance put on standby (POST /snapshot with stop) into the same instance id",
          "ResumeRequest",
          { "200": { description: "Resumed", content: jsonContent("StatusResponse") } },
          "400",
          "404",
          "409",
          "413",
          "415",
          "500",
        ),
      },
      "/inject": {
        post: post(
          "Write bytes into a named ivshmem region of a running instance",
          "InjectRequest",
          { "200": { description: "Written", content: jsonContent("InjectResponse") } },
          "400",
          "404",
          "409",
          "413",
          "415",
          "500",
        ),
      },
      "/status/{instance_id}": {
        get: {
          summary: "State, pid, uptime and metrics of an instance",
          parameters: [ID_PARAM],
          responses: {
            "200": { description: "The status", content: jsonContent("StatusResponse") },
            ...errors("400", "404", "500"),
          },
        },
      },
      "/logs/{instance_id}": {
        get: {
          summary: "The console as NDJSON records (one LogRecord per line)",
          parameters: [
            ID_PARAM,
            {
              name: "follow",
              in: "query",
              required: false,
              description: "stream until the VM ends or the client disconnects",
              schema: { type: "boolean" },
            },
            {
              name: "offset",
              in: "query",
              required: false,
              description: "start at this byte offset of the console",
              schema: { type: "integer", minimum: 0 },
            },
          ],
          responses: {
            "200": {
              description: "One JSON LogRecord per line",
              content: { "application/x-ndjson": { schema: ref("LogRecord") } },
            },
            ...errors("400", "404", "500"),
          },
        },
      },
      "/instances": {
        get: {
          summary: "Every instance this runtime knows",
          responses: {
            "200": { description: "The instances", content: jsonContent("InstancesResponse") },
            ...errors("500"),
          },
        },
      },
      "/instances/{instance_id}": {
        delete: {
          summary: "Remove a stopped instance (?force=true stops it first)",
          parameters: [
            ID_PARAM,
            {
              name: "force",
              in: "query",
              required: false,
              schema: { type: "boolean" },
            },
          ],
          responses: {
            "200": { description: "Removed", content: jsonContent("DeleteResponse") },
            ...errors("400", "404", "409", "500"),
          },
        },
      },
      "/healthz": {
        get: {
          summary: "Liveness",
          responses: { "200": { description: "Up", content: jsonContent("HealthResponse") } },
        },
      },
      "/version": {
        get: {
          summary: "Implementation and contract versions, available runtimes",
          responses: {
            "200": { description: "Versions", content: jsonContent("VersionResponse") },
          },
        },
      },
    },
    components: { schemas },
  };
}

/** The YAML text of the document (what `deno task openapi` writes). */
export function openApiYaml(): string {
  return "# Generated by `deno task openapi` from src/api/schemas.ts: do not edit.\n" +
    stringify(buildOpenApi(), { lineWidth: 0, aliasDuplicateObjects: false });
}
