/**
 * @module
 * `ovm version`: the versions of ovm, the OVMS spec and the Deno runtime.
 */
import { SPEC_VERSION, VERSION } from "../version.ts";
import type { Command } from "./command.ts";

export const versionCommand: Command = {
  name: "version",
  summary: "Print the version of ovm and of the OVMS spec it implements",
  usage: "version [--json]",
  async run(ctx) {
    const info = { ovm: VERSION, ovms: SPEC_VERSION, deno: Deno.version.deno, v8: Deno.version.v8 };
    ctx.out.result(info);
    ctx.out.line(`ovm ${VERSION} (OVMS ${SPEC_VERSION}, deno ${Deno.version.deno})`);
    await Promise.resolve();
  },
};
