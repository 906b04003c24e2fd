/**
 * @module
 * `ovm rm`: removes stopped instances (their overlay, console log and state).
 */
import { removeInstance } from "../runtime/mod.ts";
import { bool, type Command } from "./command.ts";

export const rmCommand: Command = {
  usesRuntimes: true,
  name: "rm",
  summary: "Remove instances",
  usage: "rm [-f] <id>...",
  options: { force: { type: "boolean", short: "f", help: "Stop running instances first" } },
  args: { min: 1, max: Infinity, names: "ID..." },
  async run(ctx, input) {
    for (const id of input.args) {
      await removeInstance(ctx.home, id, { force: bool(input, "force") });
      ctx.out.line(id);
    }
    ctx.out.result({ removed: input.args });
  },
};
