/**
 * @module
 * The runtime descriptor: a JSON document that maps an OVMS VM spec onto the
 * command line of a VMM driven by flags only, so such a VMM needs a
 * descriptor, not code. Unknown fields are refused (a typo must not silently
 * drop a flag), and so is a descriptor without the mappings every VM needs.
 */
import { z } from "zod";
import { ValidationError } from "../../errors.ts";

/** Placeholders each mapping may use; anything else in `{...}` is refused. */
export const PLACEHOLDERS = {
  kernel: ["path"],
  initrd: ["path"],
  disk: ["path", "format", "readonly"],
  ramSnapshot: ["path", "size"],
  cmdline: ["cmdline"],
  memory: ["bytes", "mib"],
  cpus: ["count"],
  ivshmem: ["name", "size", "mmio_addr"],
  nic: ["tap", "mac", "index"],
} as const;

const Template = z.array(z.string().min(1)).min(1);

const DeviceTypes = z.strictObject({ ivshmem: Template.optional() });

export const RuntimeDescriptorSchema = z.strictObject({
  schemaVersion: z.literal(1),
  /** The name `--runtime` selects; also the adapter name in `state.json`. */
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/),
  description: z.string().optional(),
  /** Program name looked up on PATH, or an absolute path. */
  binary: z.string().min(1),
  /** How to ask the binary its version: argv and a regex whose first group is the version. */
  version: z.strictObject({
    args: z.array(z.string()),
    pattern: z.string().min(1),
  }),
  /**
   * How the root disk reaches the binary. `layers`: one `disk` mapping per
   * layer (copied out of its blob, base first, chained by backing names),
   * then the writable overlay, then the extra disks. `flat-raw`: the chain
   * flattened to one sparse raw file, then the extra disks.
   */
  disks: z.enum(["layers", "flat-raw"]),
  /** `bridge` needs the `nic` mapping: ovm creates the TAP, the binary opens it. */
  network: z.array(z.enum(["none", "user", "bridge"])).min(1),
  args: z.strictObject({
    /** Flags placed before every mapped one (subcommands, fixed options). */
    prefix: z.array(z.string()).optional(),
    kernel: Template,
    initrd: Template.optional(),
    disk: Template,
    ramSnapshot: Template.optional(),
    cmdline: Template,
    memory: Template.optional(),
    cpus: Template.optional(),
    /** One per guest NIC in bridge mode: `{tap}` (the host TAP), `{mac}`, `{index}`. */
    nic: Template.optional(),
    devices: DeviceTypes.default({}),
  }),
  stop: z.strictObject({
    signal: z.enum(["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"]).default("SIGTERM"),
    timeoutMs: z.number().int().min(0).max(600_000).default(10_000),
  }).default({ signal: "SIGTERM", timeoutMs: 10_000 }),
});

export type RuntimeDescriptor = z.infer<typeof RuntimeDescriptorSchema>;

function checkPlaceholders(d: RuntimeDescriptor, source: string): void {
  const entries: [keyof typeof PLACEHOLDERS, string[] | undefined][] = [
    ["kernel", d.args.kernel],
    ["initrd", d.args.initrd],
    ["disk", d.args.disk],
    ["ramSnapshot", d.args.ramSnapshot],
    ["cmdline", d.args.cmdline],
    ["memory", d.args.memory],
    ["cpus", d.args.cpus],
    ["ivshmem", d.args.devices.ivshmem],
    ["nic", d.args.nic],
  ];
  if (d.network.includes("bridge") && !d.args.nic) {
    throw new ValidationError(
      `Runtime descriptor ${source}: network "bridge" needs the "nic" mapping`,
      { hint: 'add args.nic, e.g. ["--net", "tap={tap},mac={mac}"]' },
    );
  }
  for (const [key, tpl] of entries) {
    for (const part of tpl ?? []) {
      for (const m of part.matchAll(/\{([^}]*)\}/g)) {
        if (!(PLACEHOLDERS[key] as readonly string[]).includes(m[1])) {
          throw new ValidationError(
            `Runtime descriptor ${source}: mapping "${key}" uses unknown placeholder "{${m[1]}}"`,
            { hint: `"${key}" may use: ${PLACEHOLDERS[key].map((p) => `{${p}}`).join(", ")}` },
          );
        }
      }
    }
  }
  try {
    new RegExp(d.version.pattern);
  } catch (e) {
    throw new ValidationError(
      `Runtime descriptor ${source}: version pattern "${d.version.pattern}" is not a regex`,
      { cause: e },
    );
  }
}

/** Validates a parsed descriptor; `source` names it in errors (a file path). */
export function parseRuntimeDescriptor(json: unknown, source: string): RuntimeDescriptor {
  const r = RuntimeDescriptorSchema.safeParse(json);
  if (!r.success) {
    const issues = r.error.issues.map((i) => {
      const at = i.path.length ? i.path.join(".") : "(top level)";
      if (i.code === "unrecognized_keys") {
        return `${at}: unknown field${i.keys.length > 1 ? "s" : ""} ${
          i.keys.map((k) => `"${k}"`).join(", ")
        }`;
      }
      if (i.code === "invalid_type" && i.input === undefined) {
        return `${at}: required ${at.startsWith("args.") ? "mapping" : "field"} is missing`;
      }
      return `${at}: ${i.message}`;
    });
    throw new ValidationError(`Invalid runtime descriptor ${source}: ${issues.join("; ")}`, {
      cause: r.error,
      hint: "see spec section 12.2 for the descriptor fields",
    });
  }
  checkPlaceholders(r.data, source);
  return r.data;
}

/** Fills `{name}` placeholders of a template. */
export function expand(template: string[], values: Record<string, string | number>): string[] {
  return template.map((part) =>
    part.replace(/\{([^}]*)\}/g, (_, k: string) => {
      if (!(k in values)) throw new Error(`no value for placeholder "{${k}}"`);
      return String(values[k]);
    })
  );
}
