/**
 * @module
 * `ovm standby`: snapshot a running instance and stop it, keeping the
 * instance (its id, disk and console) for `ovm resume` (spec 8.7).
 */
import { standbyInstance, standbyTag } from "../runtime/mod.ts";
import { type Command, str } from "./command.ts";

export const standbyCommand: Command = {
  usesRuntimes: true,
  name: "standby",
  summary: "Snapshot a running instance and stop it; 'ovm resume' brings it back",
  usage: "standby <instance> [-t <name:tag>] [--push <remote-ref>]",
  options: {
    tag: {
      type: "string",
      short: "t",
      valueName: "NAME:TAG",
      help: "Local ref of the snapshot (default standby/<instance>:latest)",
    },
    push: { type: "string", valueName: "REF", help: "Also push the snapshot there" },
  },
  args: { min: 1, max: 1, names: "INSTANCE" },
  examples: ["ovm standby web", "ovm standby web --push 127.0.0.1:5000/web:standby"],
  async run(ctx, input) {
    const id = input.args[0];
    const res = await standbyInstance(ctx.home, id, {
      tag: str(input, "tag") ?? standbyTag(id),
      push: str(input, "push"),
      signal: ctx.signal,
      onProgress: (m) => ctx.out.info(m),
    });
    ctx.out.result({ instance: id, ...res });
    ctx.out.line(`${id} on standby: ${res.ref} ${res.digest}`);
  },
};
