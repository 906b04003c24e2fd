/**
 * @module
 * The Cloud Hypervisor backend (REST API over a UNIX socket).
 */
export * from "./adapter.ts";
