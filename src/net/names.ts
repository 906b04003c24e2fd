/**
 * @module
 * The names and tags of what ovm creates on the host. A tag starts with
 * `ovm:<home id>:` — the home id is a hash of `$OVM_HOME` — so two ovm homes
 * on one host (or one network namespace) never take each other's objects, and
 * nothing without the tag is ever deleted. Pure.
 */
import { formatAddr } from "./cidr.ts";

/** FNV-1a, 32 bits, as 8 hex digits. */
function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

export function homeId(home: string): string {
  return fnv(home);
}

/** The alias of a network's bridge. */
export function bridgeTag(home: string, network: string): string {
  return `ovm:${homeId(home)}:net:${network}`;
}

/** The alias of an instance's TAP. */
export function tapTag(home: string, instance: string, nic: number): string {
  return `ovm:${homeId(home)}:tap:${instance}:${nic}`;
}

/** The TAP device of NIC `nic` of an instance: `ovt` + 8 hex digits + the NIC index. */
export function tapName(home: string, instance: string, nic: number): string {
  return `ovt${fnv(`${home}\0${instance}`)}${nic}`;
}

/** The prefix of every nftables table this home owns (nft identifiers: letters, digits, `_`). */
export function tablePrefix(home: string): string {
  return `ovm_${homeId(home)}_`;
}

export function netTable(home: string, network: string): string {
  return `${tablePrefix(home)}net_${network.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

export function portTable(home: string, tap: string): string {
  return `${tablePrefix(home)}port_${tap}`;
}

/**
 * The MAC of a guest NIC: locally administered `02:4f` followed by the four
 * bytes of its IPv4 address. Subnets of one home never overlap, so the MAC is
 * unique wherever the address is, and either one names the other.
 */
export function macFor(address: number): string {
  const b = formatAddr(address).split(".").map((x) => Number(x).toString(16).padStart(2, "0"));
  return ["02", "4f", ...b].join(":");
}
