/**
 * @module
 * The public face of ovm as a library: the OVMS data model and the store.
 * `OvmsClient` drives an `ovm serve` (or any OVMS runtime) over its UNIX socket.
 */
export * from "./src/manifest/mod.ts";
export * from "./src/errors.ts";
export { ContentStore } from "./src/store/mod.ts";
export { VERSION } from "./src/version.ts";
export { ApiError, OvmsClient, type OvmsClientOptions } from "./src/api/client.ts";
