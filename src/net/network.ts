/**
 * @module
 * ovm's networks: a Linux bridge per named network with a subnet, an
 * address per instance NIC from the persistent IPAM (`state.ts`), a TAP
 * per NIC owned by the VMM's unprivileged uid, outbound NAT, published
 * ports as DNAT (loopback included), and optional isolation between guests.
 *
 * Order is what makes it crash-safe: under the lock, the record (network or
 * lease) is saved before anything is created on the host, and dropped only
 * after everything created for it is gone. A failure rolls back what this
 * call created; a kill -9 leaves a record (or a tagged object) that
 * {@linkcode pruneNetworks} — `ovm network prune`, `ovm gc` — removes.
 */
import { join } from "node:path";
import { AlreadyExistsError, ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { homePaths } from "../store/mod.ts";
import { exists } from "../util/fs.ts";
import type { PortMapping } from "../vmm/adapter.ts";
import {
  formatAddr,
  formatSubnet,
  gatewayOf,
  lastAddr,
  overlaps,
  parseAddr,
  parseSubnet,
  type Subnet,
} from "./cidr.ts";
import {
  boundPorts,
  deleteLink,
  hostNameserver,
  ipBatch,
  listLinks,
  listRoutes,
  nftApply,
  nftDeleteTable,
  nftListTables,
  setSysctl,
} from "./host.ts";
import {
  bridgeTag,
  homeId,
  macFor,
  netTable,
  portTable,
  tablePrefix,
  tapName,
  tapTag,
} from "./names.ts";
import { networkTableScript, portTableScript } from "./nft.ts";
import {
  IFNAME_RE,
  type Lease,
  type NetState,
  NETWORK_NAME_RE,
  type NetworkRecord,
  peekState,
  withState,
} from "./state.ts";

/** The network `--net bridge` uses; created on first use. */
export const DEFAULT_NETWORK = "ovm0";

/** Where automatic subnets are drawn from: the first free 10.89.N.0/24. */
const AUTO_SUBNET_BASE = parseAddr("10.89.0.0");

export interface CreateNetworkOptions {
  /** `a.b.c.d/N`; default: the first free 10.89.N.0/24. */
  subnet?: string;
  /** The bridge device; default: the network's name. */
  bridge?: string;
  /** Guests on the network cannot reach each other (they still reach the host and beyond). */
  isolate?: boolean;
  /** Outbound NAT through the host. Default true. */
  nat?: boolean;
}

/** Kill points for the crash tests (`OVM_FAILPOINT=net:<name>`): ovm SIGKILLs itself there. */
function failpoint(name: string): void {
  if (Deno.env.get("OVM_FAILPOINT") === `net:${name}`) Deno.kill(Deno.pid, "SIGKILL");
}

function assertNetworkName(name: string): string {
  if (!NETWORK_NAME_RE.test(name)) {
    throw new ValidationError(`Invalid network name "${name}"`, {
      hint: "use 1-32 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit",
    });
  }
  return name;
}

function routeSubnet(dst: string): Subnet | undefined {
  if (dst === "default") return undefined;
  const [a, p] = dst.split("/");
  const base = (() => {
    try {
      return parseAddr(a);
    } catch {
      return undefined;
    }
  })();
  if (base === undefined) return undefined;
  return { base, prefix: p === undefined ? 32 : Number(p) };
}

/** Host routes (not ovm's own bridges') that overlap `subnet`. */
async function overlappingRoutes(subnet: Subnet, ownBridges: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const r of await listRoutes()) {
    if (r.type === "multicast" || (r.dev && ownBridges.includes(r.dev))) continue;
    const s = routeSubnet(r.dst);
    if (s && overlaps(s, subnet)) out.push(`${r.dst}${r.dev ? ` dev ${r.dev}` : ""}`);
  }
  return out;
}

async function chooseSubnet(state: NetState): Promise<Subnet> {
  const taken = state.networks.map((n) => parseSubnet(n.subnet));
  const bridges = state.networks.map((n) => n.bridge);
  const routes = (await listRoutes()).filter((r) => !(r.dev && bridges.includes(r.dev)));
  const routed = routes.flatMap((r) => {
    const s = routeSubnet(r.dst);
    return s ? [s] : [];
  });
  for (let i = 0; i < 256; i++) {
    const s = { base: (AUTO_SUBNET_BASE + (i << 8)) >>> 0, prefix: 24 };
    if (!taken.some((t) => overlaps(t, s)) && !routed.some((r) => overlaps(r, s))) return s;
  }
  throw new ConflictError("No free subnet in 10.89.0.0/16 for a new network", {
    hint: "create the network with an explicit --subnet",
  });
}

/** Creates (or repairs) the bridge and its nft table; idempotent. */
async function bringUp(home: string, rec: NetworkRecord): Promise<void> {
  const subnet = parseSubnet(rec.subnet);
  const links = await listLinks();
  const link = links.find((l) => l.name === rec.bridge);
  const tag = bridgeTag(home, rec.name);
  if (link && link.alias !== tag) {
    throw new ConflictError(`Network device "${rec.bridge}" exists and is not ovm's`, {
      hint: `pick another bridge name (--bridge), or remove the device if it is unused`,
    });
  }
  const lines: string[] = [];
  if (!link) lines.push(`link add name ${rec.bridge} type bridge`);
  lines.push(
    `link set dev ${rec.bridge} alias ${tag}`,
    `addr replace ${rec.gateway}/${subnet.prefix} dev ${rec.bridge}`,
    `link set dev ${rec.bridge} up`,
  );
  await ipBatch(lines);
  failpoint("after-bridge");
  if (rec.nat) await setSysctl("net.ipv4.ip_forward", "1");
  // Published ports reached on 127.0.0.1 are DNATed out of this bridge.
  await setSysctl(`net.ipv4.conf.${rec.bridge}.route_localnet`, "1");
  await nftApply(networkTableScript({
    table: netTable(home, rec.name),
    comment: tag,
    bridge: rec.bridge,
    subnet: rec.subnet,
    nat: rec.nat,
    isolate: rec.isolate,
  }));
}

async function tearDownNetwork(home: string, rec: NetworkRecord): Promise<void> {
  await nftDeleteTable("ip", netTable(home, rec.name));
  const link = (await listLinks()).find((l) => l.name === rec.bridge);
  if (link && link.alias === bridgeTag(home, rec.name)) await deleteLink(rec.bridge);
}

async function createLocked(
  home: string,
  state: NetState,
  save: () => Promise<void>,
  name: string,
  options: CreateNetworkOptions,
): Promise<NetworkRecord> {
  assertNetworkName(name);
  const bridge = options.bridge ?? name;
  if (!IFNAME_RE.test(bridge)) {
    throw new ValidationError(`Invalid bridge name "${bridge}"`, {
      hint: options.bridge
        ? "use 1-15 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
        : "the network's name is too long for a device name: pass --bridge NAME (at most 15 characters)",
    });
  }
  if (state.networks.some((n) => n.name === name)) {
    throw new AlreadyExistsError(`Network "${name}" already exists`, {
      hint:
        `inspect it with 'ovm network inspect ${name}', or remove it with 'ovm network rm ${name}'`,
    });
  }
  const sameBridge = state.networks.find((n) => n.bridge === bridge);
  if (sameBridge) {
    throw new ConflictError(`Bridge "${bridge}" is already network "${sameBridge.name}"'s`, {
      hint: "pick another --bridge",
    });
  }
  const link = (await listLinks()).find((l) => l.name === bridge);
  if (link) {
    // A bridge tagged for this very network is a leftover of a crashed create: reuse it.
    if (link.alias !== bridgeTag(home, name)) {
      throw new ConflictError(`Network device "${bridge}" exists and is not ovm's`, {
        hint: "pick another bridge name (--bridge), or remove the device if it is unused",
      });
    }
  }
  let subnet: Subnet;
  if (options.subnet) {
    subnet = parseSubnet(options.subnet);
    const other = state.networks.find((n) => overlaps(parseSubnet(n.subnet), subnet));
    if (other) {
      throw new ConflictError(
        `Subnet ${options.subnet} overlaps network "${other.name}" (${other.subnet})`,
        { hint: "two networks cannot share addresses: pick another --subnet" },
      );
    }
    const routes = await overlappingRoutes(subnet, link ? [bridge] : []);
    if (routes.length) {
      throw new ConflictError(
        `Subnet ${options.subnet} overlaps a route of this host: ${routes.join(", ")}`,
        { hint: "guests on it could not reach those addresses: pick another --subnet" },
      );
    }
  } else {
    subnet = await chooseSubnet(state);
  }
  const rec: NetworkRecord = {
    name,
    bridge,
    subnet: formatSubnet(subnet),
    gateway: formatAddr(gatewayOf(subnet)),
    isolate: options.isolate ?? false,
    nat: options.nat ?? true,
    createdAt: new Date().toISOString(),
  };
  state.networks.push(rec);
  await save();
  failpoint("after-record");
  try {
    await bringUp(home, rec);
  } catch (e) {
    await tearDownNetwork(home, rec).catch(() => {});
    state.networks = state.networks.filter((n) => n !== rec);
    await save();
    throw e;
  }
  return rec;
}

/** Creates a network: records it, then its bridge, address and nft table; rolled back on failure. */
export async function createNetwork(
  home: string,
  name: string,
  options: CreateNetworkOptions = {},
): Promise<NetworkRecord> {
  return await withState(home, (state, save) => createLocked(home, state, save, name, options));
}

export interface NetworkInfo extends NetworkRecord {
  /** Whether the bridge exists in this network namespace. */
  present: boolean;
  leases: Lease[];
}

export async function listNetworks(home: string): Promise<NetworkInfo[]> {
  const state = await peekState(home);
  const links = state.networks.length ? await listLinks() : [];
  return state.networks.map((n) => ({
    ...n,
    present: links.some((l) => l.name === n.bridge && l.alias === bridgeTag(home, n.name)),
    leases: state.leases.filter((l) => l.network === n.name),
  }));
}

export async function inspectNetwork(home: string, name: string): Promise<NetworkInfo> {
  const n = (await listNetworks(home)).find((x) => x.name === name);
  if (!n) throw notFound(name);
  return n;
}

function notFound(name: string): NotFoundError {
  return new NotFoundError(`No network "${name}"`, {
    hint: `list networks with 'ovm network ls', or create it with 'ovm network create ${name}'`,
  });
}

/** Whether an instance still exists (its directory under `$OVM_HOME/instances`). */
export async function instanceExists(home: string, id: string): Promise<boolean> {
  return await exists(join(homePaths(home).instances, id));
}

async function removeLeaseObjects(home: string, lease: Lease): Promise<void> {
  await nftDeleteTable("ip", portTable(home, lease.tap));
  const link = (await listLinks()).find((l) => l.name === lease.tap);
  if (link && link.alias === tapTag(home, lease.instance, lease.nic)) await deleteLink(lease.tap);
}

/** Drops the leases of instances that no longer exist, with their TAPs and port tables. */
async function reclaim(home: string, state: NetState): Promise<Lease[]> {
  const gone: Lease[] = [];
  for (const l of state.leases) {
    if (!(await instanceExists(home, l.instance))) gone.push(l);
  }
  for (const l of gone) await removeLeaseObjects(home, l);
  state.leases = state.leases.filter((l) => !gone.includes(l));
  return gone;
}

/** Removes a network; refused while an instance (running or not) holds an address on it. */
export async function removeNetwork(home: string, name: string): Promise<void> {
  await withState(home, async (state, save) => {
    const rec = state.networks.find((n) => n.name === name);
    if (!rec) throw notFound(name);
    if (await reclaim(home, state).then((g) => g.length)) await save();
    const users = [
      ...new Set(state.leases.filter((l) => l.network === name).map((l) => l.instance)),
    ].sort();
    if (users.length) {
      throw new ConflictError(
        `Network "${name}" is in use by instance(s) ${users.map((u) => `"${u}"`).join(", ")}`,
        { hint: `remove them first ('ovm rm -f ${users.join(" ")}')` },
      );
    }
    await tearDownNetwork(home, rec);
    state.networks = state.networks.filter((n) => n !== rec);
    await save();
  });
}

export interface PruneResult {
  /** Leases of instances that no longer exist. */
  leases: { network: string; address: string; instance: string }[];
  /** TAP devices and bridges removed (leftovers, or of instances that are not running). */
  links: string[];
  /** nftables tables removed. */
  tables: string[];
  /** Networks removed because nothing used them (with `unused`). */
  networks: string[];
}

/**
 * Removes what crashed or stopped instances left behind: leases of instances
 * that are gone, TAPs and port tables of instances that are not running
 * (`isRunning`), and tagged devices and tables that no record names. With
 * `unused`, also networks no instance holds an address on.
 */
export async function pruneNetworks(
  home: string,
  options: { isRunning?: (instance: string) => Promise<boolean>; unused?: boolean } = {},
): Promise<PruneResult> {
  return await withState(home, async (state, save) => {
    const res: PruneResult = { leases: [], links: [], tables: [], networks: [] };
    const gone = await reclaim(home, state);
    res.leases = gone.map((l) => ({
      network: l.network,
      address: l.address,
      instance: l.instance,
    }));
    res.links.push(...gone.map((l) => l.tap));
    res.tables.push(...gone.map((l) => portTable(home, l.tap)));
    if (gone.length) await save();
    if (options.unused) {
      for (const rec of [...state.networks]) {
        if (state.leases.some((l) => l.network === rec.name)) continue;
        await tearDownNetwork(home, rec);
        state.networks = state.networks.filter((n) => n !== rec);
        await save();
        res.networks.push(rec.name);
      }
    }
    // Devices and tables this home tagged that no live record wants.
    const hid = homeId(home);
    const wantedTaps = new Set<string>();
    for (const l of state.leases) {
      if (!options.isRunning || await options.isRunning(l.instance)) wantedTaps.add(l.tap);
    }
    for (const link of await listLinks()) {
      const alias = link.alias ?? "";
      if (!alias.startsWith(`ovm:${hid}:`)) continue;
      const [, , kind, name] = alias.split(":");
      const wanted = kind === "tap"
        ? wantedTaps.has(link.name)
        : kind === "net"
        ? state.networks.some((n) => n.name === name && n.bridge === link.name)
        : true;
      if (wanted) continue;
      await deleteLink(link.name);
      if (!res.links.includes(link.name)) res.links.push(link.name);
    }
    const wantedTables = new Set([
      ...state.networks.map((n) => netTable(home, n.name)),
      ...[...wantedTaps].map((t) => portTable(home, t)),
    ]);
    for (const t of await nftListTables()) {
      if (t.family !== "ip" || !t.name.startsWith(tablePrefix(home)) || wantedTables.has(t.name)) {
        continue;
      }
      await nftDeleteTable(t.family, t.name);
      if (!res.tables.includes(t.name)) res.tables.push(t.name);
    }
    return res;
  });
}

export interface AttachOptions {
  /** Default {@linkcode DEFAULT_NETWORK}, created on first use. */
  network?: string;
  /** The VMM's uid/gid: the TAP's owner, so the VMM opens it without privileges. */
  runAs?: { uid: number; gid: number };
  publish?: PortMapping[];
  /** NIC index. Default 0. */
  nic?: number;
  /**
   * Leave the TAP off the bridge until {@linkcode joinNetwork}: a restored
   * clone speaks with the snapshot's MAC and address until its guest takes
   * its own, and must not teach the bridge that the source's MAC lives on it.
   */
  standby?: boolean;
  /**
   * The address the guest already uses and keeps (a clone restored by a VMM
   * that cannot give its guest a new identity, spec 8.4): leased as is, with
   * its MAC, or refused when another instance holds it or the network's
   * subnet does not contain it. Without it, the lowest free address.
   */
  address?: string;
  /** The hint of the refusal of a held `address` (why the address cannot change). */
  addressHint?: string;
}

/** What a guest NIC on a bridge network is: the host's TAP and the guest's identity. */
export interface Attachment {
  network: string;
  bridge: string;
  tap: string;
  mac: string;
  /** The guest's address. */
  address: string;
  prefix: number;
  gateway: string;
  dns?: string;
  publish: PortMapping[];
}

function attachmentOf(rec: NetworkRecord, lease: Lease, dns?: string): Attachment {
  return {
    network: rec.name,
    bridge: rec.bridge,
    tap: lease.tap,
    mac: lease.mac,
    address: lease.address,
    prefix: parseSubnet(rec.subnet).prefix,
    gateway: rec.gateway,
    ...(dns ? { dns } : {}),
    publish: lease.publish,
  };
}

async function checkPorts(state: NetState, instance: string, publish: PortMapping[]) {
  const bound = publish.length ? await boundPorts() : [];
  const seen: PortMapping[] = [];
  for (const p of publish) {
    const clash = (a: string, b: string) => a === b || a === "0.0.0.0" || b === "0.0.0.0";
    const spec = `${p.hostIp}:${p.hostPort}/${p.protocol}`;
    if (
      seen.some((s) =>
        s.protocol === p.protocol && s.hostPort === p.hostPort && clash(s.hostIp, p.hostIp)
      )
    ) {
      throw new ValidationError(`Port ${spec} is published twice`, {
        hint: "publish each host port once",
      });
    }
    seen.push(p);
    const holder = bound.find((b) =>
      b.protocol === p.protocol && b.port === p.hostPort && clash(b.address, p.hostIp)
    );
    if (holder) {
      throw new ConflictError(`Port ${spec} is already bound on this host (${holder.address})`, {
        hint: "stop what listens there, or publish another host port (-p OTHER:GUEST)",
      });
    }
    const lease = state.leases.find((l) =>
      l.instance !== instance &&
      l.publish.some((q) =>
        q.protocol === p.protocol && q.hostPort === p.hostPort && clash(q.hostIp, p.hostIp)
      )
    );
    if (lease) {
      throw new ConflictError(`Port ${spec} is already published by instance "${lease.instance}"`, {
        hint: "publish another host port (-p OTHER:GUEST), or remove that instance",
      });
    }
  }
}

function networkHolding(state: NetState, address: string): string | undefined {
  const addr = { base: parseAddr(address), prefix: 32 };
  return state.networks.find((n) => overlaps(parseSubnet(n.subnet), addr))?.name;
}

/** A fixed address for `instance`: inside the subnet and held by no other instance. */
function pin(
  state: NetState,
  rec: NetworkRecord,
  instance: string,
  options: { address: string; hint?: string },
): number {
  const subnet = parseSubnet(rec.subnet);
  const addr = parseAddr(options.address);
  if (addr <= gatewayOf(subnet) || addr >= lastAddr(subnet)) {
    throw new ConflictError(
      `Address ${options.address} is not a guest address of network "${rec.name}" (${rec.subnet})`,
      { hint: options.hint ?? `use a network whose subnet holds ${options.address}` },
    );
  }
  const holder = state.leases.find((l) =>
    l.network === rec.name && l.address === options.address && l.instance !== instance
  );
  if (holder) {
    throw new ConflictError(
      `Address ${options.address} on network "${rec.name}" is already held by instance "${holder.instance}"`,
      { hint: options.hint ?? `remove that instance first ('ovm rm ${holder.instance}')` },
    );
  }
  return addr;
}

function allocate(state: NetState, rec: NetworkRecord): number {
  const subnet = parseSubnet(rec.subnet);
  const used = new Set(state.leases.filter((l) => l.network === rec.name).map((l) => l.address));
  for (let a = gatewayOf(subnet) + 1; a < lastAddr(subnet); a++) {
    if (!used.has(formatAddr(a))) return a;
  }
  throw new ConflictError(`Network "${rec.name}" (${rec.subnet}) has no free address`, {
    hint: "remove instances you no longer need ('ovm rm'), or use a network with a larger subnet",
  });
}

async function createLeaseObjects(
  home: string,
  rec: NetworkRecord,
  lease: Lease,
  runAs?: { uid: number; gid: number },
  standby = false,
): Promise<void> {
  const links = await listLinks();
  const existing = links.find((l) => l.name === lease.tap);
  const tag = tapTag(home, lease.instance, lease.nic);
  if (existing && existing.alias !== tag) {
    throw new ConflictError(`Network device "${lease.tap}" exists and is not this instance's`, {
      hint: "run 'ovm network prune', or remove the device",
    });
  }
  const owner = runAs ? ` user ${runAs.uid} group ${runAs.gid}` : "";
  const lines = existing ? [] : [`tuntap add dev ${lease.tap} mode tap${owner}`];
  lines.push(
    `link set dev ${lease.tap} alias ${tag}`,
    ...(standby ? [`link set dev ${lease.tap} nomaster`] : joinLines(rec, lease.tap)),
    `link set dev ${lease.tap} up`,
  );
  await ipBatch(lines);
  failpoint("after-tap");
  if (lease.publish.length) {
    await nftApply(portTableScript({
      table: portTable(home, lease.tap),
      comment: `ovm:${homeId(home)}:port:${lease.instance}`,
      guest: lease.address,
      publish: lease.publish,
    }));
  }
}

/**
 * Gives an instance's NIC an address on a network and creates its TAP (and
 * its published ports). An instance that already holds a lease for the NIC
 * keeps its address (a restart). Rolled back completely on failure.
 */
export async function attachInstance(
  home: string,
  instance: string,
  options: AttachOptions = {},
): Promise<Attachment> {
  const asked = options.network === undefined ? undefined : assertNetworkName(options.network);
  const nic = options.nic ?? 0;
  const publish = options.publish ?? [];
  const dns = await hostNameserver();
  return await withState(home, async (state, save) => {
    // A kept address names its network: the one whose subnet holds it.
    const name = asked ?? (options.address ? networkHolding(state, options.address) : undefined) ??
      DEFAULT_NETWORK;
    let rec = state.networks.find((n) => n.name === name);
    if (!rec) {
      if (name !== DEFAULT_NETWORK) throw notFound(name);
      rec = await createLocked(home, state, save, name, {});
    } else {
      // After a host reboot the record outlives the bridge: bring it back.
      await bringUp(home, rec);
    }
    if ((await reclaim(home, state)).length) await save();
    await checkPorts(state, instance, publish);
    let lease = state.leases.find((l) => l.instance === instance && l.nic === nic);
    const fresh = !lease;
    if (lease && lease.network !== name) {
      throw new ConflictError(
        `Instance "${instance}" already has an address on network "${lease.network}"`,
        { hint: "remove the instance first ('ovm rm')" },
      );
    }
    if (lease && options.address && lease.address !== options.address) {
      throw new ConflictError(
        `Instance "${instance}" holds ${lease.address} on network "${name}", not ${options.address}`,
        { hint: "remove the instance first ('ovm rm')" },
      );
    }
    if (!lease) {
      const addr = options.address
        ? pin(state, rec, instance, { address: options.address, hint: options.addressHint })
        : allocate(state, rec);
      lease = {
        network: name,
        address: formatAddr(addr),
        instance,
        nic,
        mac: macFor(addr),
        tap: tapName(home, instance, nic),
        publish,
        createdAt: new Date().toISOString(),
      };
      state.leases.push(lease);
    } else {
      lease.publish = publish;
    }
    await save();
    failpoint("after-lease");
    try {
      await createLeaseObjects(home, rec, lease, options.runAs, options.standby);
    } catch (e) {
      await removeLeaseObjects(home, lease).catch(() => {});
      if (fresh) state.leases = state.leases.filter((l) => l !== lease);
      await save();
      throw e;
    }
    return attachmentOf(rec, lease, dns);
  });
}

function joinLines(rec: NetworkRecord, tap: string): string[] {
  return [
    `link set dev ${tap} master ${rec.bridge}`,
    ...(rec.isolate ? [`link set dev ${tap} type bridge_slave isolated on`] : []),
  ];
}

/** Puts the TAPs of an instance attached with `standby` on their bridges. */
export async function joinNetwork(home: string, instance: string): Promise<void> {
  const state = await peekState(home);
  const lines = state.leases.filter((l) => l.instance === instance).flatMap((l) => {
    const rec = state.networks.find((n) => n.name === l.network);
    return rec ? joinLines(rec, l.tap) : [];
  });
  await ipBatch(lines);
}

/**
 * Removes an instance's TAPs and published ports; with `release`, also its
 * addresses (the instance is being removed). Unknown instances are fine.
 */
export async function detachInstance(
  home: string,
  instance: string,
  options: { release?: boolean } = {},
): Promise<void> {
  const state = await peekState(home);
  if (!state.leases.some((l) => l.instance === instance)) return;
  await withState(home, async (state, save) => {
    const mine = state.leases.filter((l) => l.instance === instance);
    for (const l of mine) await removeLeaseObjects(home, l);
    if (options.release) {
      state.leases = state.leases.filter((l) => l.instance !== instance);
      await save();
    }
  });
}

/** The addresses an instance holds, for `ovm ps` and `GET /status/{id}`. */
export async function instanceAddresses(
  home: string,
  instance: string,
): Promise<{ network: string; address: string; mac: string; nic: number }[]> {
  const state = await peekState(home).catch(() => undefined);
  return (state?.leases ?? []).filter((l) => l.instance === instance).map((l) => ({
    network: l.network,
    address: l.address,
    mac: l.mac,
    nic: l.nic,
  }));
}
