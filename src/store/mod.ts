/**
 * @module
 * The local content store (an OCI image layout), local refs, and the OCI
 * mapping of OVMS artifacts.
 */
export * from "./content_store.ts";
export * from "./paths.ts";
export * from "./refs.ts";
export * from "./artifact.ts";
