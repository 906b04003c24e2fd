/**
 * @module
 * nftables scripts for a network (outbound NAT, loopback-published ports,
 * isolation) and for one instance's published ports (DNAT). Each table is
 * replaced as a whole in one transaction (`add` + `delete` + define), so a
 * script either applies completely or not at all. Pure.
 */
import type { PortMapping } from "../vmm/adapter.ts";

function q(s: string): string {
  return JSON.stringify(s);
}

/** Replaces `table ip NAME` with `body`. */
function replaceTable(name: string, comment: string, body: string[]): string {
  return [
    `add table ip ${name}`,
    `delete table ip ${name}`,
    `table ip ${name} {`,
    `  comment ${q(comment)}`,
    ...body.map((l) => `  ${l}`),
    `}`,
    "",
  ].join("\n");
}

export function networkTableScript(options: {
  table: string;
  comment: string;
  bridge: string;
  subnet: string;
  nat: boolean;
  isolate: boolean;
}): string {
  const { bridge, subnet } = options;
  const post = [
    "chain postrouting {",
    "  type nat hook postrouting priority srcnat; policy accept;",
    // Published ports reached through loopback: the reply must come back to the host.
    `  oifname ${q(bridge)} ip saddr 127.0.0.0/8 masquerade`,
  ];
  if (options.nat) {
    post.push(`  ip saddr ${subnet} ip daddr != ${subnet} oifname != ${q(bridge)} masquerade`);
  }
  post.push("}");
  const fwd = [
    "chain forward {",
    "  type filter hook forward priority filter; policy accept;",
    // Guests never reach each other through the host's routing when isolated.
    ...(options.isolate ? [`  iifname ${q(bridge)} oifname ${q(bridge)} drop`] : []),
    "}",
  ];
  return replaceTable(options.table, options.comment, [...post, ...fwd]);
}

/** DNAT of published ports to the guest, for traffic that arrives and for the host's own. */
export function portTableScript(options: {
  table: string;
  comment: string;
  guest: string;
  publish: PortMapping[];
}): string {
  const rules = options.publish.map((p) => {
    const dst = p.hostIp === "0.0.0.0" ? "fib daddr type local" : `ip daddr ${p.hostIp}`;
    return `${dst} ${p.protocol} dport ${p.hostPort} dnat to ${options.guest}:${p.guestPort}`;
  });
  return replaceTable(options.table, options.comment, [
    "chain prerouting {",
    "  type nat hook prerouting priority dstnat; policy accept;",
    ...rules.map((r) => `  ${r}`),
    "}",
    "chain output {",
    "  type nat hook output priority -100; policy accept;",
    ...rules.map((r) => `  ${r}`),
    "}",
  ]);
}
