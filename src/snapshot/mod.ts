/**
 * @module
 * RAM snapshots: the ramsnap blob codec, RAM diff layers and chains of them,
 * the private pages of a restored VM, sparse copies.
 */
export * from "./ramsnap.ts";
export * from "./ramdiff.ts";
export * from "./chain.ts";
export * from "./private_pages.ts";
export * from "./sparse_copy.ts";
