/**
 * @module
 * `ovm convert`: container images (a registry reference or an OCI image
 * layout) become bootable OVMS artifacts that keep their Entrypoint, Cmd,
 * Env, WorkingDir and User (spec §10).
 */
export * from "./convert.ts";
export * from "./bootstrap.ts";
export * from "./source.ts";
export * from "./unpack.ts";
export * from "./tar_reader.ts";
export * from "./disk.ts";
export * from "./cloud_init.ts";
