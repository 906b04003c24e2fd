/**
 * @module
 * The Firecracker backend (REST API over a UNIX socket, raw disks).
 */
export * from "./adapter.ts";
