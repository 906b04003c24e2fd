/**
 * @module
 * The QEMU backend: adapter, command-line builder, QMP client, accelerator choice.
 */
export * from "./adapter.ts";
export * from "../accel.ts";
export * from "./cmdline.ts";
export * from "./qmp.ts";
