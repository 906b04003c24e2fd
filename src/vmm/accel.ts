/**
 * @module
 * Chooses the accelerator. `auto` uses KVM only when it can really run a
 * stock guest: `/dev/kvm` must open read-write, and the KVM module must not be
 * PVM (`kvm_pvm`, a nested-virtualization flavour where stock kernels hang).
 * Anything else falls back to TCG, with the reason, which the caller says once.
 */
import { ValidationError } from "../errors.ts";
import type { Accel } from "./adapter.ts";

export type AccelRequest = Accel | "auto";

export interface AccelChoice {
  accel: Accel;
  /** Why `auto` did not pick KVM (undefined when it did, or when asked explicitly). */
  fallbackReason?: string;
}

export function parseAccel(value: string | undefined): AccelRequest {
  const v = value ?? "auto";
  if (v !== "auto" && v !== "kvm" && v !== "tcg") {
    throw new ValidationError(`Invalid --accel "${v}"`, { hint: "use auto, kvm or tcg" });
  }
  return v;
}

/** Why KVM is unusable here, or undefined when it is usable. */
export async function kvmUnusableReason(
  options: { devKvm?: string; sysModule?: string; procModules?: string } = {},
): Promise<string | undefined> {
  const dev = options.devKvm ?? "/dev/kvm";
  try {
    using _f = await Deno.open(dev, { read: true, write: true });
  } catch (e) {
    return `${dev} is not usable (${(e as Error).name})`;
  }
  const sys = options.sysModule ?? "/sys/module";
  try {
    await Deno.stat(`${sys}/kvm_pvm`);
    return "KVM here is PVM nested virtualization (kvm_pvm), where stock guest kernels hang";
  } catch { /* not PVM by sysfs */ }
  try {
    const mods = await Deno.readTextFile(options.procModules ?? "/proc/modules");
    if (/^kvm_pvm\s/m.test(mods)) {
      return "KVM here is PVM nested virtualization (kvm_pvm), where stock guest kernels hang";
    }
  } catch { /* no /proc/modules: nothing more to learn */ }
  return undefined;
}

export async function chooseAccel(request: AccelRequest): Promise<AccelChoice> {
  if (request === "tcg") return { accel: "tcg" };
  const why = await kvmUnusableReason();
  if (request === "kvm") {
    if (why) {
      throw new ValidationError(`--accel kvm cannot be used: ${why}`, {
        hint: "use --accel tcg (slower, always works) or --accel auto",
      });
    }
    return { accel: "kvm" };
  }
  return why ? { accel: "tcg", fallbackReason: why } : { accel: "kvm" };
}
