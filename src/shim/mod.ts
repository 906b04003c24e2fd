/**
 * @module
 * ovm as a containerd runtime v2 shim (`io.containerd.ovm.v2`, spec §13):
 * ttrpc and the task v2 protobuf API, the `start`/`delete`/`serve` modes of
 * `containerd-shim-ovm-v2`, and a task that is one VM.
 */
export * from "./ttrpc.ts";
export * from "./proto/mod.ts";
export * from "./bundle.ts";
export * from "./paths.ts";
export * from "./events.ts";
export * from "./task.ts";
export * from "./service.ts";
export * from "./shim.ts";
export * from "./stats.ts";
