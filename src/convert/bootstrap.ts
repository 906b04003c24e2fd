/**
 * @module
 * The bootstrap config (spec §6.5, §10.4) from an OCI image config, and the
 * runtime overrides `ovm run` applies to it, with the rules container users
 * know from `docker run`: argv is Entrypoint followed by Cmd; a new
 * entrypoint drops the image's Cmd; trailing arguments replace Cmd; `--env`
 * adds or replaces one variable.
 */
import { ValidationError } from "../errors.ts";
import { type BootstrapConfig, BootstrapConfigSchema } from "../manifest/mod.ts";
import type { ImageConfig } from "./source.ts";

const ENV_RE = /^[^=\0]+=[^\0]*$/;
const USER_RE = /^[A-Za-z0-9._-]+(?::[A-Za-z0-9._-]+)?$/;
const PORT_RE = /^[0-9]{1,5}(?:\/(?:tcp|udp|sctp))?$/;

/** Normalises a stop signal: `term`, `TERM`, `SIGTERM` → `SIGTERM`; numbers stay. */
export function normalizeSignal(s: string): string | undefined {
  const t = s.trim().toUpperCase();
  if (/^[0-9]{1,2}$/.test(t)) return t;
  const name = t.startsWith("SIG") ? t : `SIG${t}`;
  return /^SIG[A-Z0-9]+$/.test(name) ? name : undefined;
}

/**
 * Maps the image config to a bootstrap config. Values the bootstrap schema
 * cannot carry are dropped with a warning (an env entry without "=", a
 * malformed port); a workload with neither Entrypoint nor Cmd is an error
 * unless `requireCommand` is false.
 */
export function bootstrapFromImage(
  image: ImageConfig,
  options: { requireCommand?: boolean; warn?: (msg: string) => void } = {},
): BootstrapConfig {
  const c = image.config ?? {};
  const warn = options.warn ?? (() => {});
  const env: string[] = [];
  for (const e of c.Env ?? []) {
    if (typeof e === "string" && ENV_RE.test(e)) env.push(e);
    else warn(`dropped image env entry "${e}" (not NAME=value)`);
  }
  const entrypoint = c.Entrypoint?.length ? [...c.Entrypoint] : undefined;
  const cmd = c.Cmd?.length ? [...c.Cmd] : undefined;
  if (!entrypoint && !cmd && options.requireCommand !== false) {
    throw new ValidationError("The image config has no Entrypoint and no Cmd", {
      hint:
        "give the workload at run time ('ovm run REF CMD...') after converting with --profile none, " +
        "or rebuild the image with an ENTRYPOINT or CMD",
    });
  }
  let workdir: string | undefined;
  if (c.WorkingDir) {
    // Docker reads a relative WorkingDir from "/".
    workdir = c.WorkingDir.startsWith("/") ? c.WorkingDir : `/${c.WorkingDir}`;
  }
  let user: string | undefined;
  if (c.User) {
    if (USER_RE.test(c.User)) user = c.User;
    else {
      throw new ValidationError(`The image config's User "${c.User}" is not user[:group]`, {
        hint: "a user name or uid, optionally followed by :group or :gid",
      });
    }
  }
  const exposedPorts: string[] = [];
  for (const p of Object.keys(c.ExposedPorts ?? {}).sort()) {
    if (PORT_RE.test(p)) exposedPorts.push(p);
    else warn(`dropped exposed port "${p}"`);
  }
  let stopSignal: string | undefined;
  if (c.StopSignal) {
    stopSignal = normalizeSignal(c.StopSignal);
    if (!stopSignal) warn(`dropped stop signal "${c.StopSignal}"`);
  }
  return BootstrapConfigSchema.parse({
    env,
    ...(workdir ? { workdir } : {}),
    ...(entrypoint ? { entrypoint } : {}),
    ...(cmd ? { cmd } : {}),
    ...(user ? { user } : {}),
    exposedPorts,
    ...(stopSignal ? { stopSignal } : {}),
  });
}

export interface RunOverrides {
  /**
   * Replaces the entrypoint (`--entrypoint`). As with `docker run`, it also
   * drops the image's cmd; an empty array clears the entrypoint.
   */
  entrypoint?: string[];
  /** `NAME=value` adds or replaces; a bare `NAME` removes the variable. */
  env?: string[];
  /** Trailing arguments: replace cmd when non-empty. */
  args?: string[];
}

/** Applies `ovm run` overrides to a bootstrap config (a pure function). */
export function applyOverrides(config: BootstrapConfig, overrides: RunOverrides): BootstrapConfig {
  const out: BootstrapConfig = { ...config, env: [...config.env] };
  if (overrides.entrypoint !== undefined) {
    if (overrides.entrypoint.length) out.entrypoint = [...overrides.entrypoint];
    else delete out.entrypoint;
    delete out.cmd;
  }
  if (overrides.args?.length) out.cmd = [...overrides.args];
  for (const e of overrides.env ?? []) {
    const eq = e.indexOf("=");
    const name = eq < 0 ? e : e.slice(0, eq);
    if (!name || name.includes("\0") || (eq >= 0 && !ENV_RE.test(e))) {
      throw new ValidationError(`Invalid --env "${e}"`, {
        hint: "use NAME=value (or NAME to unset)",
      });
    }
    out.env = out.env.filter((x) => !x.startsWith(`${name}=`));
    if (eq >= 0) out.env.push(e);
  }
  return BootstrapConfigSchema.parse(out);
}

/** Parses `--entrypoint` text: a JSON array, or one program path/name. */
export function parseEntrypointFlag(v: string): string[] {
  const t = v.trim();
  if (t.startsWith("[")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(t);
    } catch (e) {
      throw new ValidationError(`--entrypoint "${v}" is not a JSON array`, { cause: e });
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === "string")) {
      throw new ValidationError(`--entrypoint "${v}" must be a JSON array of strings`);
    }
    return parsed;
  }
  return t === "" ? [] : [v];
}
