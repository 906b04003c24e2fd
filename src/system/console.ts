/**
 * @module
 * The lines ovms-init prints on the console that a host parses (spec §6.6):
 * `OVMS-EXIT: <code>` when the workload ends, `ovms-init: error: <message>`
 * before it when ovms-init itself failed.
 */

/** Matches the exit line; group 1 is the code. */
export const EXIT_LINE_RE = /^OVMS-EXIT: (\d{1,3})\r?$/m;

/** Exit codes ovms-init uses for its own failures. */
export const InitExitCodes = {
  /** No program, or it was not found or not executable in the root. */
  entrypointNotFound: 127,
  /** The user, group or working directory could not be applied. */
  cannotApplyConfig: 126,
  /** The root or config disk could not be found or mounted. */
  bootFailed: 125,
} as const;

export interface InitOutcome {
  /** The workload's exit code, or undefined when no exit line was printed. */
  exitCode?: number;
  /** ovms-init's own error messages, in order. */
  errors: string[];
}

/** Reads the exit code (the last exit line wins) and ovms-init errors from console text. */
export function parseConsole(text: string): InitOutcome {
  const codes = [...text.matchAll(new RegExp(EXIT_LINE_RE.source, "gm"))];
  const errors = [...text.matchAll(/^ovms-init: error: (.*?)\r?$/gm)].map((m) => m[1]);
  return { exitCode: codes.length ? Number(codes.at(-1)![1]) : undefined, errors };
}
