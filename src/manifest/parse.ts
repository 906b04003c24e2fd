/**
 * @module
 * Parsing untrusted JSON documents into validated types, with errors that
 * name the source, the JSON path of the bad field and what was expected.
 */
import type { z } from "zod";
import { ValidationError } from "../errors.ts";
import { MAX_MANIFEST_BYTES, MediaTypes } from "./media_types.ts";
import {
  type BootstrapConfig,
  BootstrapConfigSchema,
  type Manifest,
  ManifestSchema,
} from "./schema.ts";

/** Formats a zod issue path as `diskLayers[0].ref`. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || "(root)";
}

/** Decodes and JSON-parses bytes, bounded in size; errors name the source. */
export function parseJsonBytes(
  input: Uint8Array | string,
  options: { source: string; maxBytes?: number },
): unknown {
  const max = options.maxBytes ?? MAX_MANIFEST_BYTES;
  const size = typeof input === "string"
    ? new TextEncoder().encode(input).byteLength
    : input.byteLength;
  if (size > max) {
    throw new ValidationError(
      `${options.source} is ${size} bytes, over the limit of ${max} bytes`,
      { hint: "manifests and configs must be at most 4 MiB; large data belongs in blobs" },
    );
  }
  let text: string;
  try {
    text = typeof input === "string"
      ? input
      : new TextDecoder("utf-8", { fatal: true }).decode(input);
  } catch (cause) {
    throw new ValidationError(`${options.source} is not valid UTF-8`, { cause });
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new ValidationError(
      `${options.source} is not valid JSON: ${(cause as Error).message}`,
      { cause },
    );
  }
}

/** Validates a parsed value against a zod schema; the first issue becomes the error. */
export function validate<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issues = r.error.issues;
  const first = issues[0];
  const path = formatPath(first.path);
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem(s))` : "";
  throw new ValidationError(`${source}: field "${path}": ${first.message}${more}`, {
    path,
    cause: r.error,
  });
}

/** Parses an OVMS manifest from bytes, checking version and media type first. */
export function parseManifest(input: Uint8Array | string, source = "manifest"): Manifest {
  const value = parseJsonBytes(input, { source });
  return manifestFromValue(value, source);
}

export function manifestFromValue(value: unknown, source = "manifest"): Manifest {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ValidationError(`${source}: expected a JSON object at the top level`);
  }
  const v = value as Record<string, unknown>;
  if (v.schemaVersion !== 1) {
    throw new ValidationError(
      `${source}: field "schemaVersion": unsupported value ${JSON.stringify(v.schemaVersion)}`,
      { path: "schemaVersion", hint: "this ovm reads OVMS manifests with schemaVersion 1" },
    );
  }
  if (v.mediaType !== MediaTypes.manifest) {
    throw new ValidationError(
      `${source}: field "mediaType": expected "${MediaTypes.manifest}", got ${
        JSON.stringify(v.mediaType)
      }`,
      { path: "mediaType" },
    );
  }
  const m = validate(ManifestSchema, value, source);
  checkManifestSemantics(m, source);
  return m;
}

/** Rules JSON Schema cannot say: unique layer refs and device names. */
function checkManifestSemantics(m: Manifest, source: string): void {
  const seen = new Map<string, number>();
  m.diskLayers.forEach((l, i) => {
    const prev = seen.get(l.ref);
    if (prev !== undefined) {
      throw new ValidationError(
        `${source}: field "diskLayers[${i}].ref": duplicate of diskLayers[${prev}].ref ("${l.ref}")`,
        { path: `diskLayers[${i}].ref`, hint: "each disk layer must be a distinct blob" },
      );
    }
    seen.set(l.ref, i);
  });
  const names = new Set<string>();
  m.devices.forEach((d, i) => {
    if (names.has(d.name)) {
      throw new ValidationError(
        `${source}: field "devices[${i}].name": duplicate device name "${d.name}"`,
        { path: `devices[${i}].name` },
      );
    }
    names.add(d.name);
  });
  for (let i = 1; i < m.diskLayers.length; i++) {
    if (m.diskLayers[i].format !== "qcow2") {
      throw new ValidationError(
        `${source}: field "diskLayers[${i}].format": a diff layer must be qcow2, got "${
          m.diskLayers[i].format
        }"`,
        { path: `diskLayers[${i}].format`, hint: "only the base layer may be raw" },
      );
    }
  }
}

export function parseBootstrapConfig(
  input: Uint8Array | string,
  source = "bootstrap config",
): BootstrapConfig {
  return validate(BootstrapConfigSchema, parseJsonBytes(input, { source }), source);
}

/** Canonical bytes of a JSON document as ovm writes it (2-space indent, trailing newline). */
export function canonicalJson(value: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n");
}
