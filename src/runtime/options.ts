/**
 * @module
 * Parsing of run options people type: port publishing (`-p`) and network modes.
 */
import { ValidationError } from "../errors.ts";
import type { NetMode, PortMapping } from "../vmm/adapter.ts";

const PORT_RE = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;

/** Parses `[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp]`; the host address defaults to 127.0.0.1. */
export function parsePublish(spec: string): PortMapping {
  const m = PORT_RE.exec(spec);
  const port = (s: string) => {
    const n = Number(s);
    if (n < 1 || n > 65535) throw new RangeError();
    return n;
  };
  try {
    if (!m) throw new RangeError();
    return {
      hostIp: m[1] ?? "127.0.0.1",
      hostPort: port(m[2]),
      guestPort: port(m[3]),
      protocol: (m[4] as "tcp" | "udp" | undefined) ?? "tcp",
    };
  } catch {
    throw new ValidationError(`Invalid -p "${spec}"`, {
      hint: "use [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. -p 8080:80 (ports 1-65535)",
    });
  }
}

export function parseNetMode(value: string | undefined, publish: PortMapping[]): NetMode {
  const v = value ?? "user";
  if (v !== "none" && v !== "user") {
    throw new ValidationError(`Invalid --net "${v}"`, {
      hint: "use user (QEMU user-mode networking, no root needed) or none",
    });
  }
  if (v === "none" && publish.length) {
    throw new ValidationError("-p needs a network: it cannot be used with --net none");
  }
  return v;
}

/** The guest address ovm gives a user-mode network (QEMU's slirp defaults). */
export const USER_NET = { address: "10.0.2.15/24", gateway: "10.0.2.2", dns: "10.0.2.3" };
