/**
 * @module
 * `ovm resume`: restore an instance put on standby into the same instance
 * (its id, disk and console go on; spec 8.7). It runs detached.
 */
import { ContentStore } from "../store/mod.ts";
import { resumeInstance } from "../runtime/mod.ts";
import type { Command } from "./command.ts";

export const resumeCommand: Command = {
  usesRuntimes: true,
  name: "resume",
  summary: "Restore an instance put on standby, under the same id",
  usage: "resume <instance>",
  options: {},
  args: { min: 1, max: 1, names: "INSTANCE" },
  examples: ["ovm resume web"],
  async run(ctx, input) {
    const store = await ContentStore.open(ctx.home);
    const started = await resumeInstance(store, input.args[0], {
      detach: true,
      signal: ctx.signal,
    });
    started.vm.release();
    ctx.out.result(started.state);
    ctx.out.line(`${started.state.id} ${started.state.state}`);
  },
};
