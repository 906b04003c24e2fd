/**
 * @module
 * Foreign calls into libc, behind typed functions (see `libc.ts`).
 */
export * from "./libc.ts";
export * from "./lz4.ts";
