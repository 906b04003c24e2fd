/**
 * @module
 * Runtime selection: `--runtime NAME` wins; otherwise the first of the
 * manifest's `runtimeHints.preferredRuntime` that is installed, warning about
 * each preferred one that is missing; otherwise the first installed adapter.
 */
import { NotFoundError } from "../errors.ts";
import type { Manifest } from "../manifest/mod.ts";
import { adapterNames, getAdapter, type VmmAdapter } from "../vmm/mod.ts";

export async function selectAdapter(
  manifest: Manifest,
  options: { requested?: string; warn?: (msg: string) => void } = {},
): Promise<VmmAdapter> {
  if (options.requested) {
    const a = getAdapter(options.requested);
    const av = await a.available();
    if (!av.ok) {
      throw new NotFoundError(`Runtime "${options.requested}" cannot run here: ${av.reason}`);
    }
    // The hint is advisory: an explicit --runtime outside it runs, with a warning.
    const preferred = manifest.runtimeHints?.preferredRuntime ?? [];
    if (preferred.length && !preferred.includes(options.requested)) {
      options.warn?.(
        `the artifact prefers ${preferred.map((p) => `"${p}"`).join(", ")}, ` +
          `not "${options.requested}"; running on "${options.requested}" as asked`,
      );
    }
    return a;
  }
  const known = adapterNames();
  for (const name of manifest.runtimeHints?.preferredRuntime ?? []) {
    if (!known.includes(name)) {
      options.warn?.(`preferred runtime "${name}" is not supported by this ovm; trying the next`);
      continue;
    }
    const a = getAdapter(name);
    const av = await a.available();
    if (av.ok) return a;
    options.warn?.(`preferred runtime "${name}" is not installed (${av.reason}); trying the next`);
  }
  const reasons: string[] = [];
  for (const name of known) {
    const a = getAdapter(name);
    const av = await a.available();
    if (av.ok) return a;
    reasons.push(`${name}: ${av.reason}`);
  }
  throw new NotFoundError(`No VM runtime is installed (${reasons.join("; ")})`, {
    hint: "install QEMU (Debian: apt-get install qemu-system-x86 qemu-utils)",
  });
}
