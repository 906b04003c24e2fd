/**
 * @module
 * The guest identity document (spec section 7.6.6): what makes one VM distinct
 * from another restored from the same snapshot — a generation id, a hostname,
 * each bridge NIC's MAC and address, and an RNG seed. QEMU hands it to the
 * guest as fw_cfg file `opt/ovms/identity`; ovms-init reads it at boot and
 * applies it again whenever the generation (its first line) changes. The size
 * is fixed: a restored guest's fw_cfg driver keeps the size it saw at boot.
 */
import { ValidationError } from "../errors.ts";
import { IDENTITY_SIZE } from "../vmm/adapter.ts";

export interface GuestNicIdentity {
  mac: string;
  /** `a.b.c.d/N`. */
  address: string;
  gateway?: string;
  dns?: string;
}

export interface GuestIdentity {
  /** A fresh UUID for every started or restored VM. */
  generation: string;
  hostname?: string;
  nics: GuestNicIdentity[];
}

const SAFE = /^[A-Za-z0-9.:/_-]+$/;

function field(name: string, v: string): string {
  if (!SAFE.test(v)) {
    throw new ValidationError(`Invalid ${name} "${v}" for the guest identity`, {
      hint: "use letters, digits and . : / _ - only",
    });
  }
  return v;
}

/** Renders the document: `key=value` lines, generation first, padded with newlines. */
export function identityDocument(id: GuestIdentity): string {
  const seed = [...crypto.getRandomValues(new Uint8Array(32))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
  const lines = [
    `generation=${field("generation", id.generation)}`,
    "ovms-identity=1",
    ...(id.hostname ? [`hostname=${field("hostname", id.hostname)}`] : []),
    ...id.nics.map((n, i) =>
      `net${i}=${field("MAC", n.mac)} ${field("address", n.address)} ${
        n.gateway ? field("gateway", n.gateway) : "-"
      } ${n.dns ? field("DNS server", n.dns) : "-"}`
    ),
    `seed=${seed}`,
  ];
  const text = lines.join("\n") + "\n";
  if (text.length > IDENTITY_SIZE) {
    throw new ValidationError(`The guest identity is ${text.length} bytes, over ${IDENTITY_SIZE}`, {
      hint: "use fewer NICs or a shorter hostname",
    });
  }
  return text.padEnd(IDENTITY_SIZE, "\n");
}
