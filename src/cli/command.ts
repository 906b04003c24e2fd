/**
 * @module
 * The CLI frame: each verb is a {@linkcode Command} object in its own file;
 * `src/cli/main.ts` parses argv with `node:util` parseArgs (strict), prints
 * help, and runs the verb with a {@linkcode CliContext}.
 */
import type { ContentStore } from "../store/mod.ts";
import type { Output } from "./output.ts";

export interface OptionSpec {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  /** Shown in help after the flag, e.g. `FILE`. */
  valueName?: string;
  help: string;
}

export interface ParsedInput {
  options: Record<string, string | boolean | string[] | undefined>;
  args: string[];
}

export interface CliContext {
  /** `$OVM_HOME` resolved. */
  home: string;
  /** `--json`: machine-readable output on stdout, nothing else there. */
  json: boolean;
  /** Aborted on the first Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  env: { get(key: string): string | undefined };
  out: Output;
  /** Opens the content store lazily (most verbs need it, `version` does not). */
  store(): Promise<ContentStore>;
}

export interface Command {
  name: string;
  summary: string;
  /** The synopsis after `ovm `, e.g. `pack --kernel FILE [options] -t NAME:TAG`. */
  usage: string;
  description?: string;
  examples?: string[];
  options?: Record<string, OptionSpec>;
  /** Positional arguments: bounds and their names for help. */
  args?: { min: number; max: number; names?: string };
  subcommands?: Command[];
  /** Load the runtime descriptors of `--home` first (verbs that act on instances). */
  usesRuntimes?: boolean;
  run?(ctx: CliContext, input: ParsedInput): Promise<number | void>;
}

/** Reads a string option, or undefined. */
export function str(input: ParsedInput, name: string): string | undefined {
  const v = input.options[name];
  return typeof v === "string" ? v : undefined;
}

export function strs(input: ParsedInput, name: string): string[] {
  const v = input.options[name];
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
}

export function bool(input: ParsedInput, name: string): boolean {
  return input.options[name] === true;
}
