/**
 * @module
 * The `cloud-init` profile's NoCloud seed (spec §10.6): `user-data` whose
 * `write_files` holds a wrapper script (export Env, cd WorkingDir, exec
 * Entrypoint + Cmd as User) and whose `runcmd` runs it, `meta-data` with an
 * instance id derived from the image, and a small vfat disk labelled
 * `cidata` holding both.
 */
import { join } from "node:path";
import { ValidationError } from "../errors.ts";
import type { BootstrapConfig } from "../manifest/mod.ts";
import { run, which } from "../process/mod.ts";
import { DEFAULT_PATH, shellQuote } from "../system/mod.ts";
import { derivedUuid } from "./disk.ts";

/** Where the wrapper lands in the guest. */
export const WRAPPER_PATH = "/usr/local/sbin/ovms-workload";

/** The wrapper script: the bootstrap config as plain POSIX sh. */
export function renderWrapper(config: BootstrapConfig): string {
  const argv = [...(config.entrypoint ?? []), ...(config.cmd ?? [])];
  if (!argv.length) {
    throw new ValidationError("The cloud-init profile needs an Entrypoint or Cmd to run");
  }
  const lines = ["#!/bin/sh", "# Written by ovm convert: the container image's runtime intent."];
  const env = [...config.env];
  if (!env.some((e) => e.startsWith("PATH="))) env.unshift(`PATH=${DEFAULT_PATH}`);
  for (const e of env) {
    const eq = e.indexOf("=");
    const name = e.slice(0, eq);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      // sh cannot export it; env(1) can still pass it to the workload.
      lines.push(`set -- "$@" ${shellQuote(e)}`);
      continue;
    }
    lines.push(`export ${name}=${shellQuote(e.slice(eq + 1))}`);
  }
  const wd = config.workdir ?? "/";
  lines.push(`mkdir -p ${shellQuote(wd)} && cd ${shellQuote(wd)} || exit 126`);
  let prefix = "";
  if (config.user && !/^(root|0)(:(root|0))?$/.test(config.user)) {
    const [u, g] = config.user.split(":");
    prefix = `setpriv --reuid=${shellQuote(u)} --regid=${shellQuote(g ?? u)} --init-groups -- `;
    if (!g) prefix = `runuser -u ${shellQuote(u)} -- `;
  }
  lines.push(`exec ${prefix}env "$@" ${argv.map(shellQuote).join(" ")}`);
  return lines.join("\n") + "\n";
}

/** `#cloud-config` user-data. Scalars are JSON strings, which YAML reads as they are. */
export function renderUserData(config: BootstrapConfig): string {
  const q = (s: string) => JSON.stringify(s);
  return [
    "#cloud-config",
    "# Written by ovm convert (spec §10.6).",
    "write_files:",
    `  - path: ${q(WRAPPER_PATH)}`,
    `    permissions: ${q("0755")}`,
    `    owner: ${q("root:root")}`,
    `    content: ${q(renderWrapper(config))}`,
    "runcmd:",
    `  - [${q(WRAPPER_PATH)}]`,
    "",
  ].join("\n");
}

export function renderMetaData(seed: string): string {
  const id = `ovms-${derivedUuid(`ovms-convert:instance:${seed}`).slice(0, 13)}`;
  return `instance-id: ${id}\nlocal-hostname: ovms\n`;
}

/** Builds the `cidata` vfat seed disk at `out` from the two files. */
export async function buildSeedDisk(
  out: string,
  files: { userData: string; metaData: string },
  options: { seed: string; epoch: number; workDir: string; signal?: AbortSignal },
): Promise<number> {
  for (const tool of ["mkfs.vfat", "mcopy"]) {
    if (!(await which(tool))) {
      throw new ValidationError(`The cloud-init profile needs "${tool}", which is not installed`, {
        hint: "install dosfstools and mtools (Debian: apt-get install dosfstools mtools)",
      });
    }
  }
  const size = 1024 * 1024;
  await Deno.remove(out).catch(() => {});
  const volid = derivedUuid(`ovms-convert:seed:${options.seed}`).slice(0, 8);
  await run("mkfs.vfat", [
    "--invariant",
    "-i",
    volid,
    "-n",
    "cidata",
    "-C",
    out,
    String(size / 1024),
  ], {
    signal: options.signal,
    env: { SOURCE_DATE_EPOCH: String(options.epoch) },
  });
  for (const [name, text] of [["user-data", files.userData], ["meta-data", files.metaData]]) {
    const p = join(options.workDir, name);
    await Deno.writeTextFile(p, text);
    await Deno.utime(p, options.epoch, options.epoch);
    await run("mcopy", ["-m", "-i", out, p, `::${name}`], {
      signal: options.signal,
      env: { SOURCE_DATE_EPOCH: String(options.epoch), MTOOLS_SKIP_CHECK: "1" },
    });
  }
  return size;
}
