/**
 * @module
 * Bridge networking for ovm (spec section 7.6): named networks (a Linux
 * bridge with a subnet, outbound NAT and optional isolation), a persistent
 * crash-safe IPAM under `$OVM_HOME/networks/`, a TAP per guest NIC owned by
 * the VMM's uid, published ports as nftables DNAT, and cleanup of what
 * crashed runs left behind.
 */
export {
  attachInstance,
  type Attachment,
  type AttachOptions,
  createNetwork,
  type CreateNetworkOptions,
  DEFAULT_NETWORK,
  detachInstance,
  inspectNetwork,
  instanceAddresses,
  instanceExists,
  joinNetwork,
  listNetworks,
  type NetworkInfo,
  pruneNetworks,
  type PruneResult,
  removeNetwork,
} from "./network.ts";
export { type Lease, netPaths, type NetworkRecord } from "./state.ts";
export { macFor, tapName } from "./names.ts";
export { formatAddr, parseAddr, parseSubnet } from "./cidr.ts";
