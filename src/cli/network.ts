/**
 * @module
 * `ovm network`: the bridge networks instances join with `--net bridge[=NAME]`
 * (create, ls, inspect, rm, prune — the verbs docker users know).
 */
import {
  createNetwork,
  inspectNetwork,
  listNetworks,
  pruneNetworks,
  removeNetwork,
} from "../net/mod.ts";
import { instanceRunning } from "./gc.ts";
import { bool, type Command, str } from "./command.ts";

const createCommand: Command = {
  name: "create",
  summary: "Create a bridge network with a subnet",
  usage: "network create [--subnet CIDR] [--bridge NAME] [--isolate] [--no-nat] NAME",
  description: "ovm creates the bridge, gives it the subnet's first address (the guests' " +
    "gateway) and an nftables table for outbound NAT. Needs root.",
  examples: [
    "ovm network create --subnet 10.90.0.0/24 backend",
    "ovm network create --isolate sandbox",
  ],
  options: {
    subnet: {
      type: "string",
      valueName: "CIDR",
      help: "The network's addresses (default: the first free 10.89.N.0/24)",
    },
    bridge: { type: "string", valueName: "NAME", help: "The bridge device (default: NAME)" },
    isolate: { type: "boolean", help: "Guests on the network cannot reach each other" },
    "no-nat": {
      type: "boolean",
      help: "No outbound NAT: guests reach only the host and each other",
    },
  },
  args: { min: 1, max: 1, names: "NAME" },
  async run(ctx, input) {
    const rec = await createNetwork(ctx.home, input.args[0], {
      subnet: str(input, "subnet"),
      bridge: str(input, "bridge"),
      isolate: bool(input, "isolate"),
      nat: !bool(input, "no-nat"),
    });
    ctx.out.result(rec);
    ctx.out.line(`${rec.name}  ${rec.bridge}  ${rec.subnet}`);
  },
};

const lsCommand: Command = {
  name: "ls",
  summary: "List networks",
  usage: "network ls [--json]",
  async run(ctx) {
    const nets = await listNetworks(ctx.home);
    ctx.out.result(nets);
    ctx.out.table(
      ["NAME", "BRIDGE", "SUBNET", "GATEWAY", "INSTANCES", "FLAGS"],
      nets.map((n) => [
        n.name,
        n.bridge + (n.present ? "" : " (missing)"),
        n.subnet,
        n.gateway,
        String(new Set(n.leases.map((l) => l.instance)).size),
        [n.nat ? "nat" : "", n.isolate ? "isolate" : ""].filter(Boolean).join(",") || "-",
      ]),
    );
  },
};

const inspectCommand: Command = {
  name: "inspect",
  summary: "Show a network and the addresses it has handed out",
  usage: "network inspect NAME [--json]",
  args: { min: 1, max: 1, names: "NAME" },
  async run(ctx, input) {
    const n = await inspectNetwork(ctx.home, input.args[0]);
    ctx.out.result(n);
    ctx.out.line(JSON.stringify(n, null, 2));
  },
};

const rmCommand: Command = {
  name: "rm",
  summary: "Remove networks (refused while instances hold addresses on them)",
  usage: "network rm NAME...",
  args: { min: 1, max: Infinity, names: "NAME..." },
  async run(ctx, input) {
    for (const name of input.args) {
      await removeNetwork(ctx.home, name);
      ctx.out.line(name);
    }
    ctx.out.result({ removed: input.args });
  },
};

const pruneCommand: Command = {
  usesRuntimes: true,
  name: "prune",
  summary: "Remove unused networks and what crashed instances left behind",
  usage: "network prune [--json]",
  description: "Drops the addresses of instances that no longer exist, removes TAP devices " +
    "and port rules of instances that are not running, tagged devices and tables no record " +
    "names, and networks no instance holds an address on.",
  async run(ctx) {
    const res = await pruneNetworks(ctx.home, {
      isRunning: (id) => instanceRunning(ctx.home, id),
      unused: true,
    });
    ctx.out.result(res);
    for (const n of res.networks) ctx.out.line(`removed network ${n}`);
    for (const l of res.leases) {
      ctx.out.line(`released ${l.address} on ${l.network} (instance ${l.instance})`);
    }
    for (const l of res.links) ctx.out.info(`removed device ${l}`);
    for (const t of res.tables) ctx.out.info(`removed nft table ${t}`);
  },
};

export const networkCommand: Command = {
  name: "network",
  summary: "Manage bridge networks (create, ls, inspect, rm, prune)",
  usage: "network <command>",
  subcommands: [createCommand, lsCommand, inspectCommand, rmCommand, pruneCommand],
};
