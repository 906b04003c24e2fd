/**
 * @module
 * Every verb of the CLI, in the order `ovm --help` lists them. Each verb
 * lives in its own file; add new verbs here.
 */
import type { Command } from "./command.ts";
import { exportCommand } from "./export.ts";
import { gcCommand } from "./gc.ts";
import { networkCommand } from "./network.ts";
import { inspectCommand } from "./inspect.ts";
import { lsCommand } from "./ls.ts";
import { packCommand } from "./pack.ts";
import { pullCommand } from "./pull.ts";
import { pushCommand } from "./push.ts";
import { copyCommand } from "./copy.ts";
import { convertCommand } from "./convert.ts";
import { referrersCommand } from "./referrers.ts";
import { loginCommand, logoutCommand } from "./login.ts";
import { systemCommand } from "./system.ts";
import { versionCommand } from "./version.ts";
import { logsCommand } from "./logs.ts";
import { psCommand } from "./ps.ts";
import { rmCommand } from "./rm.ts";
import { runCommand } from "./run.ts";
import { stopCommand } from "./stop.ts";
import { snapshotCommand } from "./snapshot.ts";
import { standbyCommand } from "./standby.ts";
import { resumeCommand } from "./resume.ts";
import { keygenCommand } from "./keygen.ts";
import { signCommand } from "./sign.ts";
import { verifyCommand } from "./verify.ts";
import { policyCommand } from "./policy.ts";
import { serveCommand } from "./serve.ts";
import { conformanceCommand } from "./conformance.ts";
import { runtimesCommand } from "./runtimes.ts";
import { shimCommand } from "./shim.ts";

export const COMMANDS: Command[] = [
  packCommand,
  inspectCommand,
  lsCommand,
  exportCommand,
  pushCommand,
  pullCommand,
  copyCommand,
  convertCommand,
  referrersCommand,
  loginCommand,
  logoutCommand,
  runCommand,
  psCommand,
  stopCommand,
  logsCommand,
  rmCommand,
  snapshotCommand,
  standbyCommand,
  resumeCommand,
  serveCommand,
  conformanceCommand,
  runtimesCommand,
  shimCommand,
  keygenCommand,
  signCommand,
  verifyCommand,
  policyCommand,
  gcCommand,
  networkCommand,
  systemCommand,
  versionCommand,
];
