/**
 * @module
 * Byte sizes for people: `64M`, `1.5G`, `512MiB` in, `64.0 MiB` out.
 */
import { ValidationError } from "../errors.ts";

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parses a size; units are binary (K = 1024). `what` names the flag in errors. */
export function parseSize(input: string | number, what = "size"): number {
  if (typeof input === "number") return input;
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new ValidationError(`Invalid ${what} "${input}"`, {
      hint: 'use a number of bytes or a number with K, M, G or T (binary units), e.g. "512M"',
    });
  }
  const n = Math.round(parseFloat(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new ValidationError(`Invalid ${what} "${input}": must be positive and below 8 PiB`);
  }
  return n;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}
