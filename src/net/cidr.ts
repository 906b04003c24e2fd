/**
 * @module
 * IPv4 addresses and subnets as numbers: parsing (with errors that name the
 * bad value), formatting, containment and overlap. Pure.
 */
import { ValidationError } from "../errors.ts";

export interface Subnet {
  /** The network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

const ADDR_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** Parses a dotted-quad IPv4 address; undefined when it is not one. */
export function tryParseAddr(s: string): number | undefined {
  const m = ADDR_RE.exec(s);
  if (!m) return undefined;
  const b = m.slice(1).map(Number);
  if (b.some((x) => x > 255)) return undefined;
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

export function parseAddr(s: string): number {
  const n = tryParseAddr(s);
  if (n === undefined) {
    throw new ValidationError(`Invalid IPv4 address "${s}"`, {
      hint: "use a.b.c.d, e.g. 10.89.0.1",
    });
  }
  return n;
}

export function formatAddr(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Parses `a.b.c.d/N`. The address must be the network address (host bits
 * zero), and the prefix 8-30 so a network has room for a gateway and guests.
 */
export function parseSubnet(s: string): Subnet {
  const [addr, p, extra] = s.split("/");
  const prefix = Number(p);
  const base = addr === undefined ? undefined : tryParseAddr(addr);
  if (
    extra !== undefined || base === undefined || !/^\d{1,2}$/.test(p ?? "") || prefix < 8 ||
    prefix > 30
  ) {
    throw new ValidationError(`Invalid subnet "${s}"`, {
      hint: "use a.b.c.d/N with N from 8 to 30, e.g. 10.89.0.0/24",
    });
  }
  if ((base & mask(prefix)) >>> 0 !== base) {
    throw new ValidationError(`Invalid subnet "${s}": host bits are set`, {
      hint: `use the network address, e.g. ${formatAddr((base & mask(prefix)) >>> 0)}/${prefix}`,
    });
  }
  return { base, prefix };
}

export function formatSubnet(s: Subnet): string {
  return `${formatAddr(s.base)}/${s.prefix}`;
}

/** The last address of the subnet (its broadcast address). */
export function lastAddr(s: Subnet): number {
  return (s.base | (~mask(s.prefix) >>> 0)) >>> 0;
}

export function contains(s: Subnet, addr: number): boolean {
  return ((addr & mask(s.prefix)) >>> 0) === s.base;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  return a.base <= lastAddr(b) && b.base <= lastAddr(a);
}

/** The gateway (the bridge's own address): the first host address. */
export function gatewayOf(s: Subnet): number {
  return s.base + 1;
}
