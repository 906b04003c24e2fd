/**
 * @module
 * Runs the CLI: finds the verb (and sub-verb), parses its flags strictly,
 * prints help, and turns errors into messages and exit codes (0 ok, 1 failed,
 * 2 usage or validation error, 130 interrupted). `main.ts` is its only caller.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { describeError, OvmError, ValidationError } from "../errors.ts";
import { ContentStore, defaultHome } from "../store/mod.ts";
import { loadRuntimes } from "../vmm/mod.ts";
import { VERSION } from "../version.ts";
import type { CliContext, Command, OptionSpec, ParsedInput } from "./command.ts";
import { COMMANDS } from "./mod.ts";
import { Output, type Writer } from "./output.ts";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

const COMMON_OPTIONS: Record<string, OptionSpec> = {
  help: { type: "boolean", short: "h", help: "Show help for this command" },
  json: { type: "boolean", help: "Print machine-readable JSON on stdout" },
  home: {
    type: "string",
    valueName: "DIR",
    help: "ovm state directory (default $OVM_HOME or ~/.local/share/ovm)",
  },
  quiet: { type: "boolean", short: "q", help: "Print only results and errors" },
};

export interface RunOptions {
  stdout?: Writer;
  stderr?: Writer;
  env?: { get(key: string): string | undefined };
  signal?: AbortSignal;
}

function optionHelp(options: Record<string, OptionSpec>): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : "    "}--${name}${
      o.type === "string" ? ` ${o.valueName ?? "VALUE"}` : ""
    }`;
    const extra = [
      o.multiple ? "(repeatable)" : "",
      o.default !== undefined && o.default !== false ? `(default: ${o.default})` : "",
    ].filter(Boolean).join(" ");
    return [flag, `${o.help}${extra ? ` ${extra}` : ""}`];
  });
  const w = Math.max(...rows.map((r) => r[0].length));
  return rows.map(([f, h]) => `  ${f.padEnd(w)}  ${h}`);
}

export function commandHelp(cmd: Command, path: string[]): string {
  const lines = [`Usage: ovm ${cmd.usage}`, "", cmd.summary];
  if (cmd.description) lines.push("", cmd.description);
  if (cmd.subcommands?.length) {
    lines.push("", "Commands:");
    const w = Math.max(...cmd.subcommands.map((c) => c.name.length));
    for (const c of cmd.subcommands) lines.push(`  ${c.name.padEnd(w)}  ${c.summary}`);
    lines.push("", `Run 'ovm ${[...path, "<command>"].join(" ")} --help' for more.`);
  }
  lines.push("", "Options:", ...optionHelp({ ...(cmd.options ?? {}), ...COMMON_OPTIONS }));
  if (cmd.examples?.length) lines.push("", "Examples:", ...cmd.examples.map((e) => `  ${e}`));
  return lines.join("\n") + "\n";
}

export function topHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "ovm — package, distribute and run whole virtual machines as OCI artifacts (OVMS)",
    "",
    "Usage: ovm <command> [options]",
    "",
    "Commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    "",
    "Global options: --json, --home DIR, -q/--quiet, -h/--help, --version",
    "Run 'ovm <command> --help' for the options of a command.",
    "",
  ].join("\n");
}

function parseCommandArgs(cmd: Command, argv: string[]): ParsedInput {
  const all = { ...(cmd.options ?? {}), ...COMMON_OPTIONS };
  const options: ParseArgsConfig["options"] = {};
  for (const [name, o] of Object.entries(all)) {
    options[name] = {
      type: o.type,
      ...(o.short ? { short: o.short } : {}),
      ...(o.multiple ? { multiple: true } : {}),
      ...(o.default !== undefined ? { default: o.default } : {}),
    };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    const msg = (e as Error).message.replace(/\. To specify .*$/s, "");
    throw new ValidationError(msg, {
      hint: `run 'ovm ${cmd.usage.split(" ")[0]} --help' for the options`,
    });
  }
  return {
    options: parsed.values as ParsedInput["options"],
    args: parsed.positionals,
  };
}

/** Runs `ovm` with argv; returns the exit code. */
export async function runCli(argv: string[], runOptions: RunOptions = {}): Promise<number> {
  const env = runOptions.env ?? Deno.env;
  const preJson = argv.includes("--json");
  const out0 = new Output({ stdout: runOptions.stdout, stderr: runOptions.stderr, json: preJson });
  const controller = new AbortController();
  runOptions.signal?.addEventListener("abort", () => controller.abort(runOptions.signal?.reason));
  try {
    if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
      const target = argv[0] === "help" && argv[1]
        ? COMMANDS.find((c) => c.name === argv[1])
        : undefined;
      writeText(out0.stdout, target ? commandHelp(target, [target.name]) : topHelp());
      return argv.length === 0 ? EXIT_USAGE : EXIT_OK;
    }
    if (argv[0] === "--version") argv = ["version", ...argv.slice(1)];
    // Walk down sub-verbs: `ovm system kernel add ...`.
    let cmd = COMMANDS.find((c) => c.name === argv[0]);
    if (!cmd) {
      throw new ValidationError(`Unknown command "${argv[0]}"`, {
        hint: `run 'ovm --help' to list the commands`,
      });
    }
    const path = [cmd.name];
    let rest = argv.slice(1);
    while (cmd.subcommands?.length && rest.length > 0 && !rest[0].startsWith("-")) {
      const sub: Command | undefined = cmd.subcommands.find((c) => c.name === rest[0]);
      if (!sub) {
        throw new ValidationError(`Unknown command "ovm ${[...path, rest[0]].join(" ")}"`, {
          hint: `run 'ovm ${path.join(" ")} --help' to list its commands`,
        });
      }
      cmd = sub;
      path.push(sub.name);
      rest = rest.slice(1);
    }
    const input = parseCommandArgs(cmd, rest);
    if (input.options.help || !cmd.run) {
      writeText(out0.stdout, commandHelp(cmd, path));
      return input.options.help ? EXIT_OK : EXIT_USAGE;
    }
    const { min, max } = cmd.args ?? { min: 0, max: 0 };
    if (input.args.length < min || input.args.length > max) {
      const want = min === max
        ? `${min}`
        : max === Infinity
        ? `at least ${min}`
        : `${min} to ${max}`;
      throw new ValidationError(
        `'ovm ${path.join(" ")}' takes ${want} argument(s)${
          cmd.args?.names ? ` (${cmd.args.names})` : ""
        }, got ${input.args.length}`,
        { hint: `usage: ovm ${cmd.usage}` },
      );
    }
    const home = (input.options.home as string | undefined) ?? defaultHome(env);
    const out = new Output({
      stdout: runOptions.stdout,
      stderr: runOptions.stderr,
      json: input.options.json === true,
      quiet: input.options.quiet === true,
    });
    let store: Promise<ContentStore> | undefined;
    const ctx: CliContext = {
      home,
      json: out.json,
      signal: controller.signal,
      env,
      out,
      store: () => (store ??= ContentStore.open(home)),
    };
    if (cmd.usesRuntimes) await loadRuntimes(home);
    const code = await cmd.run(ctx, input);
    return code ?? EXIT_OK;
  } catch (err) {
    return reportError(err, out0, controller.signal);
  }
}

function reportError(err: unknown, out: Output, signal: AbortSignal): number {
  const interrupted = signal.aborted ||
    (err instanceof DOMException && err.name === "AbortError");
  const code = interrupted
    ? EXIT_INTERRUPTED
    : err instanceof ValidationError
    ? EXIT_USAGE
    : EXIT_FAILED;
  if (out.json) {
    const e = err instanceof OvmError
      ? { code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
      : {
        code: interrupted ? "interrupted" : "internal",
        message: String((err as Error)?.message ?? err),
      };
    out.record({ error: e });
  }
  if (interrupted) {
    out.raw("\ninterrupted\n");
  } else {
    const msg = describeError(err);
    out.raw(`error: ${msg}\n`);
    if (!(err instanceof OvmError) && Deno.env.get("OVM_DEBUG") && err instanceof Error) {
      out.raw(`${err.stack}\n`);
    }
  }
  return code;
}

function writeText(w: Writer, s: string): void {
  const b = new TextEncoder().encode(s);
  let off = 0;
  while (off < b.byteLength) off += w.writeSync(b.subarray(off));
}

export { VERSION };
