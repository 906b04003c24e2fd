/**
 * @module
 * What ovm has learnt about each registry in this process (oras-go caches
 * the same): whether it implements the OCI 1.1 referrers API.
 */

export type ReferrersCapability = "unknown" | "supported" | "unsupported";

const referrersCapability = new Map<string, "supported" | "unsupported">();

/** What ovm has learnt about a registry's referrers API in this process. */
export function referrersCapabilityOf(registry: string): ReferrersCapability {
  return referrersCapability.get(registry) ?? "unknown";
}

/** Records what a registry's answer showed about its referrers API. */
export function learnReferrersCapability(
  registry: string,
  capability: "supported" | "unsupported",
): void {
  referrersCapability.set(registry, capability);
}

/** Forgets learnt capabilities (tests start registries on reused ports). */
export function resetCapabilities(): void {
  referrersCapability.clear();
}
