/**
 * @module
 * The OVMS data model: digests, media types, the manifest and bootstrap
 * config schemas, OCI documents, and parsing of untrusted input.
 */
export * from "./digest.ts";
export * from "./media_types.ts";
export * from "./schema.ts";
export * from "./oci.ts";
export * from "./parse.ts";
