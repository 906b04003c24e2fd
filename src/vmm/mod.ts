/**
 * @module
 * VMM adapters behind one interface, and the registry the runtime picks from
 * (`--runtime NAME`): the one place that maps backend names to adapters.
 * Nothing outside `src/vmm/` names a backend or its class.
 */
import { ValidationError } from "../errors.ts";
import type { VmmAdapter } from "./adapter.ts";
import { QemuAdapter } from "./qemu/mod.ts";
// --- other runtimes (issue 10): descriptor-driven CLI runtimes, Cloud Hypervisor, Firecracker ---
import { CloudHypervisorAdapter } from "./cloud_hypervisor/mod.ts";
import { FirecrackerAdapter } from "./firecracker/mod.ts";
import {
  builtinDescriptors,
  CliRuntimeAdapter,
  loadUserDescriptors,
  loadUserDescriptorsSync,
  type RuntimeDescriptor,
} from "./descriptor/mod.ts";
import { defaultHome } from "../store/paths.ts";

export * from "./adapter.ts";
export * from "./accel.ts";
export { QemuAdapter } from "./qemu/mod.ts";

/** `--runtime-path` overrides, by runtime name. */
const BINARY_PATHS: Record<string, string> = {};

function descriptorFactory(d: RuntimeDescriptor): () => VmmAdapter {
  return () => new CliRuntimeAdapter(d, { binary: BINARY_PATHS[d.name] });
}

const FACTORIES: Record<string, () => VmmAdapter> = {
  qemu: () => new QemuAdapter(),
  "cloud-hypervisor": () =>
    new CloudHypervisorAdapter({ binary: BINARY_PATHS["cloud-hypervisor"] }),
  firecracker: () => new FirecrackerAdapter({ binary: BINARY_PATHS.firecracker }),
  ...Object.fromEntries(builtinDescriptors().map((d) => [d.name, descriptorFactory(d)])),
};

/** Uses `path` as the binary of runtime `name` (`ovm run --runtime-path`). */
export function setRuntimePath(name: string, path: string): void {
  BINARY_PATHS[name] = path;
}

/**
 * Registers the descriptors in `<home>/runtimes/*.json` (a file may replace
 * a built-in descriptor of the same name, not a coded adapter).
 */
export async function loadRuntimes(home: string): Promise<string[]> {
  const names: string[] = [];
  for (const d of await loadUserDescriptors(home)) {
    const current = FACTORIES[d.name]?.();
    if (current && current.kind !== "descriptor") {
      throw new ValidationError(
        `Runtime descriptor "${d.name}" names a built-in adapter`,
        { hint: "give the descriptor another name" },
      );
    }
    FACTORIES[d.name] = descriptorFactory(d);
    names.push(d.name);
  }
  return names;
}
// --- end other runtimes ---

/** Names of the adapters this build knows, in preference order. */
export function adapterNames(): string[] {
  return Object.keys(FACTORIES);
}

/** Adds a backend (the other-runtimes work registers its adapters here). */
export function registerAdapter(name: string, factory: () => VmmAdapter): void {
  FACTORIES[name] = factory;
}

export function getAdapter(name: string): VmmAdapter {
  let f = FACTORIES[name];
  if (!f) {
    // An instance another ovm started on a runtime from a descriptor file:
    // look in the default home's runtimes/ (ovm run registers --home's).
    for (const d of loadUserDescriptorsSync(defaultHome())) {
      if (!FACTORIES[d.name]) FACTORIES[d.name] = descriptorFactory(d);
    }
    f = FACTORIES[name];
  }
  if (!f) {
    throw new ValidationError(`Unknown runtime "${name}"`, {
      hint: `known runtimes: ${adapterNames().join(", ")}`,
    });
  }
  return f();
}
