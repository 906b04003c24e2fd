/**
 * @module
 * `ovm standby`: snapshot a running instance and stop it, keeping the
 * instance (its id, disk and console) for `ovm resume` (spec 8.7). Through
 * a running `ovm serve` when there is one (`POST /snapshot` with `stop`).
 */
import { ValidationError } from "../errors.ts";
import { standbyInstance, standbyTag } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
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
    socket: SOCKET_OPTION,
  },
  args: { min: 1, max: 1, names: "INSTANCE" },
  examples: ["ovm standby web", "ovm standby web --push 127.0.0.1:5000/web:standby"],
  async run(ctx, input) {
    const id = input.args[0];
    const tag = str(input, "tag") ?? standbyTag(id);
    if (str(input, "socket") !== undefined && str(input, "push")) {
      throw new ValidationError("--socket standbys take no --push", {
        hint: "give the registry reference as -t (the server pushes a tag naming a registry)",
      });
    }
    using server = str(input, "push")
      ? undefined
      : await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home });
    const res = server
      ? await server.snapshot(id, tag, { stop: true }).then((r) => ({
        ref: r.tag,
        digest: r.snapshot_ref,
        ...(r.pushed ? { pushed: r.pushed } : {}),
      }))
      : await standbyInstance(ctx.home, id, {
        tag,
        push: str(input, "push"),
        signal: ctx.signal,
        onProgress: (m) => ctx.out.info(m),
      });
    ctx.out.result({ instance: id, ...res });
    ctx.out.line(`${id} on standby: ${res.ref} ${res.digest}`);
  },
};
