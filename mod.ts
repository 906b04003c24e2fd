/**
 * @module
 * The public face of ovm as a library: the OVMS data model and the store.
 * (The runtime API client arrives with the serve issue.)
 */
export * from "./src/manifest/mod.ts";
export * from "./src/errors.ts";
export { ContentStore } from "./src/store/mod.ts";
export { VERSION } from "./src/version.ts";
