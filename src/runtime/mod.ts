/**
 * @module
 * The runtime: instances on disk and their state machine, the VM spec built
 * from a manifest, starts (cold boots and RAM-snapshot restores, through a
 * warm pool or not), snapshots, and what `ovm run`, `ps`, `stop`, `logs`,
 * `rm`, `snapshot`, `gc` and the API server call. This is its public
 * surface: nothing outside `src/runtime/` imports another file of it.
 *
 * Modules, each on the ones before it (no cycles): `state_machine`,
 * `instance`, `options`, `restore_record`, `chain`, `console`, `vm_spec`,
 * `template_cache`, `select`, `import_dir`, `lifecycle`; then `restore`,
 * `pool`, `start`, `snapshot`, `standby` (`ram_chain` sits with
 * `template_cache`).
 */
export {
  ACTIVE_STATES,
  ALLOWED,
  allows,
  assertAllowed,
  canTransition,
  INSTANCE_STATES,
  type InstanceAction,
  isActiveState,
  OVMS_STATES,
  REFUSAL,
  TransitionRefusedError,
  TRANSITIONS,
  type VmState,
} from "./state_machine.ts";
export {
  assertInstanceId,
  INSTANCE_ID_RE,
  instancePaths,
  type InstanceState,
  InstanceStateSchema,
  InstanceStore,
  isActive,
  newInstanceId,
  type StartClaim,
  StartClaimSchema,
  type VmPaths,
  vmPaths,
  VmStateSchema,
} from "./instance.ts";
/** The address a Cloud Hypervisor or Firecracker clone keeps (spec 8.4). */
export { keptGuestAddress } from "./net.ts";
export {
  DEFAULT_MEMORY,
  parseNetFlag,
  parseNetMode,
  parsePublish,
  type PreparedRestore,
  type RestorePool,
  type StartedInstance,
  type StartOptions,
  USER_NET,
} from "./options.ts";
export {
  hasRestoreRecord,
  parseRestoreRecord,
  readRestoreRecord,
  RESTORE_ANNOTATION,
  type RestoreRecord,
  RestoreRecordSchema,
} from "./restore_record.ts";
export { assembleChain, readKernelVersion } from "./chain.ts";
export { consoleExitCode, followConsole } from "./console.ts";
export {
  type BootFile,
  bootFile,
  bootSpec,
  type ConfigOverrides,
  guestNetArg,
  type HostFiles,
  hostFiles,
  type MachineSpec,
  readBootstrap,
  restoreSpec,
  snapshotGid,
  type SpecInput,
  VMM_UID_BASE,
  vmmUser,
} from "./vm_spec.ts";
export {
  dropTemplate,
  ensureTemplate,
  markTemplateUser,
  pruneTemplates,
  SNAPSHOT_CACHE,
  type SnapshotTemplate,
} from "./template_cache.ts";
export { selectAdapter } from "./select.ts";
export { importExportDir, isExportDir } from "./import_dir.ts";
export { exportArtifact } from "./export_dir.ts";
export {
  getInstance,
  listInstances,
  observeInstance,
  removeInstance,
  stopInstance,
  waitInstance,
} from "./lifecycle.ts";
export { checkOptions, checkRestore, restoreInstance } from "./restore.ts";
export { reapStalePools, WarmPool } from "./pool.ts";
export { startInstance } from "./start.ts";
export { snapshotInstance, type SnapshotOptions, type SnapshotResult } from "./snapshot.ts";
export { resumeInstance, standbyInstance, standbyTag } from "./standby.ts";
export { MAX_RAM_LAYERS, PARENT_ANNOTATION } from "./ram_chain.ts";
