/**
 * @module
 * Instances: state on disk, disk-chain assembly, runtime selection, and the
 * start/stop/reattach logic behind `ovm run`, `ps`, `stop`, `logs` and `rm`.
 */
export * from "./instance.ts";
export * from "./chain.ts";
export * from "./options.ts";
export * from "./select.ts";
export * from "./runtime.ts";
export * from "./import_dir.ts";
