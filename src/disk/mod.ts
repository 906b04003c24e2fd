/**
 * @module
 * Disk images: the one-file tar wrapping of disk layers, and qcow2 headers.
 */
export * from "./tar.ts";
export * from "./qcow2.ts";
