/**
 * @module
 * The runtime's side of networking (spec section 7.6): turns an instance's
 * network choice into the VmSpec's NICs and the guest's NIC identities
 * (`vm_spec.ts` makes `ovms.net=` and the identity document of them), and
 * hands TAPs and addresses back to the network module when the VM stops or
 * the instance goes.
 */
import { attachInstance, detachInstance, joinNetwork } from "../net/mod.ts";
import { tailLines } from "../util/fs.ts";
import type { GuestNicIdentity } from "../system/mod.ts";
import type { NetMode, NetworkSpec, PortMapping } from "../vmm/adapter.ts";

export interface InstanceNetwork {
  spec: NetworkSpec;
  /** The NIC lines of the guest identity (bridge mode). */
  nics: GuestNicIdentity[];
  /** What `state.json` records. */
  record: {
    mode: NetMode;
    publish: PortMapping[];
    network?: string;
    addresses?: { network: string; address: string; mac: string }[];
  };
}

/** Sets up the network of one instance: for bridge mode its address, TAP and port DNAT. */
export async function setupInstanceNetwork(
  home: string,
  id: string,
  options: {
    mode: NetMode;
    network?: string;
    publish: PortMapping[];
    runAs?: { uid: number; gid: number };
    /** A restored clone: its TAPs join the bridge once its guest took its identity. */
    standby?: boolean;
    /** A clone that keeps its snapshot's address ({@linkcode keptGuestAddress}). */
    address?: string;
    addressHint?: string;
  },
): Promise<InstanceNetwork> {
  const { mode, publish } = options;
  if (mode === "none") {
    return {
      spec: { mode, publish: [] },
      nics: [],
      record: { mode, publish: [] },
    };
  }
  if (mode === "user") {
    return {
      spec: { mode, publish },
      nics: [],
      record: { mode, publish },
    };
  }
  const att = await attachInstance(home, id, {
    network: options.network,
    runAs: options.runAs,
    publish,
    standby: options.standby,
    address: options.address,
    addressHint: options.addressHint,
  });
  const address = `${att.address}/${att.prefix}`;
  return {
    // The host's nftables publishes the ports: the VMM forwards nothing.
    spec: { mode, publish: [], nics: [{ tap: att.tap, mac: att.mac }] },
    nics: [{ mac: att.mac, address, gateway: att.gateway, dns: att.dns }],
    record: {
      mode,
      publish,
      network: att.network,
      addresses: [{ network: att.network, address: att.address, mac: att.mac }],
    },
  };
}

/**
 * The address a bridge-mode guest was booted with, from its kernel command
 * line (`ovms.net=ADDR/PREFIX,GATEWAY[,DNS]`, spec 7.6.5): what a restored
 * clone keeps when its VMM cannot hand it a new identity (spec 8.4).
 */
export function keptGuestAddress(cmdline: string): string | undefined {
  const m = /(?:^|\s)ovms\.net=(\d+\.\d+\.\d+\.\d+)\/\d+(?:,|\s|$)/.exec(cmdline);
  return m?.[1];
}

/**
 * Removes an instance's TAPs and port rules (its VM has stopped); with
 * `release`, its addresses too (the instance is being removed).
 */
export async function releaseInstanceNetwork(
  home: string,
  id: string,
  options: { release?: boolean } = {},
): Promise<void> {
  await detachInstance(home, id, options);
}

/**
 * A restored clone's last network step: waits (polling its console) until
 * ovms-init printed `OVMS-IDENTITY:` — the guest now has its own MAC and
 * address — then puts its TAPs on the bridge. Returns whether the guest
 * confirmed in time; the TAPs join either way.
 */
export async function joinWhenIdentified(
  home: string,
  id: string,
  options: { consoleLog: string; timeoutMs?: number; signal?: AbortSignal },
): Promise<boolean> {
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  let confirmed = false;
  while (!options.signal?.aborted && Date.now() < deadline) {
    if ((await tailLines(options.consoleLog, 20)).includes("OVMS-IDENTITY:")) {
      confirmed = true;
      break;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  await joinNetwork(home, id);
  return confirmed;
}
