/**
 * @module
 * `ovm resume`: restore an instance put on standby into the same instance
 * (its id, disk and console go on; spec 8.7). It runs detached. Through a
 * running `ovm serve` when there is one (`POST /resume`).
 */
import { ContentStore } from "../store/mod.ts";
import { resumeInstance } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { type Command, str } from "./command.ts";

export const resumeCommand: Command = {
  usesRuntimes: true,
  name: "resume",
  summary: "Restore an instance put on standby, under the same id",
  usage: "resume <instance>",
  options: { socket: SOCKET_OPTION },
  args: { min: 1, max: 1, names: "INSTANCE" },
  examples: ["ovm resume web"],
  async run(ctx, input) {
    const id = input.args[0];
    using server = await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home });
    if (server) {
      const st = await server.resume(id);
      ctx.out.result(st);
      ctx.out.line(`${id} ${st.runtime_state}`);
      return;
    }
    const started = await resumeInstance(await ContentStore.open(ctx.home), id, {
      detach: true,
      signal: ctx.signal,
    });
    started.vm.release();
    ctx.out.result(started.state);
    ctx.out.line(`${started.state.id} ${started.state.state}`);
  },
};
