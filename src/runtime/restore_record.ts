/**
 * @module
 * The restore record (spec section 8.1): what a RAM snapshot must be
 * restored with — the VMM and its version, the machine, memory and vCPUs,
 * the kernel, initrd and disk chain, the command line the guest booted with.
 * `ovm snapshot` writes it twice: in the ramsnap header's metadata (with the
 * bytes it describes) and as the manifest annotation
 * {@linkcode RESTORE_ANNOTATION} (readable before the blob is pulled). Its
 * JSON Schema is `schemas/restore-record.v1.json`, generated from
 * {@linkcode RestoreRecordSchema}.
 *
 * The object is strict: a reader refuses a record with a field it does not
 * know, so a newer ovm can add facts a restore must honour (e.g. the RAM
 * layers of a snapshot chain) as new optional fields, and an older ovm
 * refuses such a record rather than restoring it wrongly.
 */
import { z } from "zod";
import { ValidationError } from "../errors.ts";
import { DigestSchema, type Manifest } from "../manifest/mod.ts";

/** Manifest annotation holding the restore record as JSON (spec §8.1). */
export const RESTORE_ANNOTATION = "ovms.snapshot.restore";

export const RestoreRecordSchema = z.strictObject({
  recordVersion: z.literal(1).describe("Version of this record's shape."),
  vmm: z.string().min(1).describe("The runtime that took the snapshot (its registry name)."),
  vmmVersion: z.string().describe("That runtime's version; its adapter decides what restores."),
  machine: z.string().describe("The machine type (QEMU: q35; other VMMs: their name)."),
  accel: z.enum(["kvm", "tcg"]),
  memoryBytes: z.number().int().positive(),
  cpus: z.number().int().positive(),
  kernelDigest: DigestSchema,
  kernelVersion: z.string().optional(),
  initrdDigest: DigestSchema.optional(),
  initrdVersion: z.string().optional(),
  diskChain: z.array(DigestSchema).describe(
    "Disk layer digests, base first, including the captured diff.",
  ),
  ramsnapVersion: z.number().int().positive(),
  cmdline: z.string().describe("The kernel command line the guest booted with."),
  network: z.enum(["none", "user", "bridge"]),
  devices: z.array(z.string()).describe("Device names, in manifest order."),
  configDiskBytes: z.number().int().nonnegative().optional().describe(
    "Size of the bootstrap config disk the guest saw, when it had one.",
  ),
});

export type RestoreRecord = z.infer<typeof RestoreRecordSchema>;

/** Checks a restore record from any source (an annotation, a ramsnap header). */
export function parseRestoreRecord(value: unknown, what: string): RestoreRecord {
  const r = RestoreRecordSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue.path.length ? ` at "${issue.path.join(".")}"` : "";
    throw new ValidationError(
      `${what} has an unknown shape${where}: ${issue.message}`,
      { hint: "a newer ovm wrote it (upgrade ovm), or it was edited: snapshot again" },
    );
  }
  return r.data;
}

/** Reads the restore record from a snapshot manifest's annotations. */
export function readRestoreRecord(m: Manifest): RestoreRecord {
  const raw = m.annotations?.[RESTORE_ANNOTATION];
  if (!raw) {
    throw new ValidationError(
      `The snapshot "${m.name}:${m.version}" has no "${RESTORE_ANNOTATION}" annotation`,
      { hint: "it was not made by 'ovm snapshot'; boot it cold or snapshot again" },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (e) {
    throw new ValidationError(`The "${RESTORE_ANNOTATION}" annotation is not JSON`, { cause: e });
  }
  return parseRestoreRecord(value, `The "${RESTORE_ANNOTATION}" annotation`);
}

/** True when the manifest carries a restore record (an `ovm snapshot` artifact). */
export function hasRestoreRecord(m: Manifest): boolean {
  return m.annotations?.[RESTORE_ANNOTATION] !== undefined;
}
