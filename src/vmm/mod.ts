/**
 * @module
 * VMM adapters behind one interface, and the registry the runtime picks from
 * (`--runtime NAME`). Other backends register here next to QEMU.
 */
import { ValidationError } from "../errors.ts";
import type { VmmAdapter } from "./adapter.ts";
import { QemuAdapter } from "./qemu/mod.ts";

export * from "./adapter.ts";
export { QemuAdapter } from "./qemu/mod.ts";

const FACTORIES: Record<string, () => VmmAdapter> = {
  qemu: () => new QemuAdapter(),
};

/** Names of the adapters this build knows, in preference order. */
export function adapterNames(): string[] {
  return Object.keys(FACTORIES);
}

/** Adds a backend (the other-runtimes work registers its adapters here). */
export function registerAdapter(name: string, factory: () => VmmAdapter): void {
  FACTORIES[name] = factory;
}

export function getAdapter(name: string): VmmAdapter {
  const f = FACTORIES[name];
  if (!f) {
    throw new ValidationError(`Unknown runtime "${name}"`, {
      hint: `known runtimes: ${adapterNames().join(", ")}`,
    });
  }
  return f();
}
