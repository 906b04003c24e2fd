/**
 * @module
 * `ovm stop`: asks the guest to power off (Ctrl-Alt-Del and ACPI power
 * button), waits, then makes the VMM quit or kills it. Leaves no process,
 * socket or shared-memory file.
 */
import { ValidationError } from "../errors.ts";
import { assertAllowed, getInstance, stopInstance } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { bool, type Command, str } from "./command.ts";

export const stopCommand: Command = {
  usesRuntimes: true,
  name: "stop",
  summary: "Stop running instances",
  usage: "stop <id>... [--timeout SEC] [--force]",
  options: {
    timeout: {
      type: "string",
      short: "t",
      valueName: "SEC",
      help: "Wait this long for the guest to power off",
      default: "10",
    },
    force: { type: "boolean", short: "f", help: "Do not ask the guest; stop the VMM at once" },
    socket: SOCKET_OPTION,
  },
  args: { min: 1, max: Infinity, names: "ID..." },
  async run(ctx, input) {
    const t = Number(str(input, "timeout") ?? "10");
    if (!Number.isFinite(t) || t < 0) {
      throw new ValidationError(`Invalid --timeout "${str(input, "timeout")}"`, {
        hint: "use a number of seconds",
      });
    }
    using server = await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home });
    if (server) {
      const done = [];
      for (const id of input.args) {
        const s = await server.stop(id, { timeoutMs: t * 1000, force: bool(input, "force") });
        done.push(s);
        ctx.out.line(`${id} ${s.runtime_state}${s.reason ? `: ${s.reason}` : ""}`);
      }
      ctx.out.result(done);
      return;
    }
    const results = [];
    for (const id of input.args) {
      // The state machine the API answers with: an ended instance is refused.
      assertAllowed(id, (await getInstance(ctx.home, id)).state, "stop");
      const s = await stopInstance(ctx.home, id, {
        timeoutMs: t * 1000,
        force: bool(input, "force"),
      });
      results.push(s);
      ctx.out.line(`${id} ${s.state}${s.reason ? `: ${s.reason}` : ""}`);
    }
    ctx.out.result(results);
  },
};
