/**
 * @module
 * RAM snapshots: the ramsnap blob codec.
 */
export * from "./ramsnap.ts";
