/**
 * @module
 * The config disk: a raw block device holding a plain tar (no filesystem,
 * so the guest needs no module: `tar -xf /dev/vdX`). The bootstrap config is
 * rendered on the host into shell-safe files ovms-init reads without parsing
 * JSON (spec §6.4).
 */
import type { BootstrapConfig } from "../manifest/mod.ts";
import { tarHeader, tarTrailer } from "../disk/mod.ts";
import { ValidationError } from "../errors.ts";
import { BootstrapConfigSchema } from "../manifest/mod.ts";
import { writeFileAtomic } from "../util/fs.ts";

/** Docker's default PATH, used when the config sets none. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Quotes one word for POSIX sh: `'...'` with `'` written as `'\''`. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** The files of the config disk, by name (spec §6.4). */
export function renderConfigFiles(
  config: BootstrapConfig,
  options: { hostname?: string } = {},
): Map<string, string> {
  const c = BootstrapConfigSchema.parse(config);
  const argv = [...(c.entrypoint ?? []), ...(c.cmd ?? [])];
  const env = [...c.env];
  if (!env.some((e) => e.startsWith("PATH="))) env.unshift(`PATH=${DEFAULT_PATH}`);
  const path = env.findLast((e) => e.startsWith("PATH="))!.slice(5);
  const files = new Map<string, string>();
  files.set("version", "1\n");
  files.set("argv", argv.map(shellQuote).join(" ") + "\n");
  files.set("env", env.map(shellQuote).join(" ") + "\n");
  files.set("path", path + "\n");
  files.set("workdir", (c.workdir ?? "/") + "\n");
  files.set("user", (c.user ?? "0:0") + "\n");
  files.set("stopsignal", (c.stopSignal ?? "SIGTERM").replace(/^SIG/, "") + "\n");
  const hostname = options.hostname ?? c.hostname;
  if (hostname !== undefined) {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9.-]{0,62}$/.test(hostname)) {
      throw new ValidationError(`Invalid hostname "${hostname}"`, {
        hint: "letters, digits, '.' and '-', up to 63",
      });
    }
    files.set("hostname", hostname + "\n");
  }
  files.set("config.json", JSON.stringify(c) + "\n");
  for (const [name, text] of files) {
    if (text.includes("\0")) {
      throw new ValidationError(`Config disk file "${name}" would contain NUL`);
    }
  }
  return files;
}

/** Builds the config disk ovms-init reads (bootstrap config + overrides) as a file the VMM attaches. */
export async function buildConfigDisk(
  path: string,
  config: BootstrapConfig,
  options: { hostname?: string } = {},
): Promise<void> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const [name, text] of [...renderConfigFiles(config, options)].sort()) {
    const data = enc.encode(text);
    parts.push(tarHeader(name, data.byteLength), data);
    const pad = (512 - (data.byteLength % 512)) % 512;
    if (pad) parts.push(new Uint8Array(pad));
  }
  parts.push(tarTrailer(0));
  let size = parts.reduce((n, p) => n + p.byteLength, 0);
  // Whole 64 KiB: block devices expose whole sectors, and some VMMs want aligned sizes.
  size = Math.ceil(size / 65536) * 65536;
  const out = new Uint8Array(size);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  await writeFileAtomic(path, out);
}
