/**
 * @module
 * The host side of ovm's networks, through iproute2 (`ip`) and nftables
 * (`nft`) — both spawned by `src/process/` — and the few sysctls written
 * through `/proc/sys`. Every object ovm creates carries a tag (a link's
 * alias, a table's comment) that names ovm, the `$OVM_HOME` and the owner,
 * so cleanup finds exactly what ovm made and never anything else.
 */
import { run } from "../process/mod.ts";
import { VmmError } from "../errors.ts";

export interface HostLink {
  name: string;
  alias?: string;
  /** `bridge`, `tun`, `veth`, ...; undefined for plain devices. */
  kind?: string;
  master?: string;
}

export interface HostRoute {
  dst: string;
  dev?: string;
  type?: string;
}

async function ipJson(args: string[]): Promise<unknown[]> {
  const r = await run("ip", ["-j", ...args]);
  const text = r.stdout.trim();
  return text ? JSON.parse(text) as unknown[] : [];
}

export async function listLinks(): Promise<HostLink[]> {
  const rows = await ipJson(["-d", "link", "show"]) as {
    ifname: string;
    ifalias?: string;
    master?: string;
    linkinfo?: { info_kind?: string };
  }[];
  return rows.map((r) => ({
    name: r.ifname,
    alias: r.ifalias,
    kind: r.linkinfo?.info_kind,
    master: r.master,
  }));
}

/** Every IPv4 route in every table (the local table included). */
export async function listRoutes(): Promise<HostRoute[]> {
  const rows = await ipJson(["-4", "route", "show", "table", "all"]) as HostRoute[];
  return rows;
}

/** Runs `ip` commands in one process; stops at the first that fails. */
export async function ipBatch(lines: string[]): Promise<void> {
  if (!lines.length) return;
  await run("ip", ["-batch", "-"], { stdin: lines.join("\n") + "\n" });
}

/** Deletes a link; a link that is already gone is fine. */
export async function deleteLink(name: string): Promise<void> {
  const r = await run("ip", ["link", "del", "dev", name], { allowFailure: true });
  if (!r.success && !/Cannot find device|does not exist/.test(r.stderr)) {
    throw new VmmError("net", "delete link", `cannot delete "${name}": ${r.stderr.trim()}`);
  }
}

/** Applies an nft script as one transaction: all of it or nothing. */
export async function nftApply(script: string): Promise<void> {
  await run("nft", ["-f", "-"], { stdin: script });
}

export interface NftTable {
  family: string;
  name: string;
  comment?: string;
}

export async function nftListTables(): Promise<NftTable[]> {
  const r = await run("nft", ["-j", "list", "tables"]);
  const doc = JSON.parse(r.stdout || "{}") as {
    nftables?: { table?: { family: string; name: string; comment?: string } }[];
  };
  return (doc.nftables ?? []).flatMap((e) =>
    e.table ? [{ family: e.table.family, name: e.table.name, comment: e.table.comment }] : []
  );
}

/** Deletes a table; one that is already gone is fine. */
export async function nftDeleteTable(family: string, name: string): Promise<void> {
  const r = await run("nft", ["delete", "table", family, name], { allowFailure: true });
  if (!r.success && !/No such file or directory|does not exist/.test(r.stderr)) {
    throw new VmmError("net", "delete nft table", `cannot delete "${family} ${name}": ${r.stderr}`);
  }
}

/** Writes a sysctl under /proc/sys (`net.ipv4.ip_forward` → net/ipv4/ip_forward). */
export async function setSysctl(key: string, value: string): Promise<void> {
  const path = `/proc/sys/${key.replaceAll(".", "/")}`;
  const cur = (await Deno.readTextFile(path).catch(() => "")).trim();
  if (cur === value) return;
  try {
    await Deno.writeTextFile(path, value);
  } catch (e) {
    throw new VmmError("net", "sysctl", `cannot set ${key}=${value}`, {
      cause: e,
      hint: "ovm needs root (CAP_NET_ADMIN) for bridge networking",
    });
  }
}

export interface BoundPort {
  protocol: "tcp" | "udp";
  address: string;
  port: number;
}

/**
 * The TCP ports listening and UDP ports bound in this network namespace,
 * read from /proc/net (no process spawned). IPv6 wildcard binds are
 * reported as 0.0.0.0: they take the IPv4 port too on a default host.
 */
export async function boundPorts(): Promise<BoundPort[]> {
  const out: BoundPort[] = [];
  for (
    const [file, protocol, v6] of [
      ["tcp", "tcp", false],
      ["tcp6", "tcp", true],
      ["udp", "udp", false],
      ["udp6", "udp", true],
    ] as const
  ) {
    let text: string;
    try {
      text = await Deno.readTextFile(`/proc/net/${file}`);
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      // TCP: only LISTEN (0A); UDP: every bound socket (07 = unconnected).
      if (protocol === "tcp" && cols[3] !== "0A") continue;
      const [hexAddr, hexPort] = cols[1].split(":");
      const port = parseInt(hexPort, 16);
      let address: string;
      if (!v6) {
        const n = parseInt(hexAddr, 16);
        // /proc/net/tcp prints the address in host (little-endian) byte order.
        address = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join(".");
      } else if (/^0+$/.test(hexAddr)) {
        address = "0.0.0.0";
      } else if (/^0{20}FFFF0000/i.test(hexAddr)) {
        const n = parseInt(hexAddr.slice(24), 16);
        address = [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, n >>> 24].join(".");
      } else {
        continue;
      }
      out.push({ protocol, address, port });
    }
  }
  return out;
}

/** The first nameserver of the host's resolv.conf that a guest can reach (not loopback). */
export async function hostNameserver(): Promise<string | undefined> {
  const text = await Deno.readTextFile("/etc/resolv.conf").catch(() => "");
  for (const m of text.matchAll(/^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)) {
    if (!m[1].startsWith("127.")) return m[1];
  }
  return undefined;
}
