/**
 * @module
 * `ovm snapshot`: a RAM snapshot of a running instance as a new artifact
 * (guest memory + device state + the overlay as a diff layer); `ovm run`
 * on the new ref restores it (spec §8).
 */
import { ValidationError } from "../errors.ts";
import { snapshotInstance } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { bool, type Command, str } from "./command.ts";

export const snapshotCommand: Command = {
  usesRuntimes: true,
  name: "snapshot",
  summary: "Snapshot a running instance's RAM and disk into a new artifact",
  usage: "snapshot <instance> -t <name:tag> [--push <remote-ref>] [--stop] [--mlock]",
  options: {
    tag: { type: "string", short: "t", valueName: "NAME:TAG", help: "Local ref of the snapshot" },
    push: { type: "string", valueName: "REF", help: "Also push it to this remote reference" },
    stop: { type: "boolean", help: "Stop the instance afterwards (default: it resumes)" },
    mlock: {
      type: "boolean",
      help: "Restores must lock the memory template in RAM (mlock_required)",
    },
    socket: SOCKET_OPTION,
  },
  args: { min: 1, max: 1, names: "INSTANCE" },
  examples: [
    "ovm snapshot web -t web:warm",
    "ovm snapshot web -t web:warm --push 127.0.0.1:5000/web:warm --stop",
  ],
  async run(ctx, input) {
    const tag = str(input, "tag");
    if (!tag) {
      throw new ValidationError("Missing -t NAME:TAG", { hint: "ovm snapshot ID -t name:tag" });
    }
    // Through a running `ovm serve` when the API can carry it (POST /snapshot: tag only).
    const plain = !str(input, "push") && !bool(input, "stop") && !bool(input, "mlock");
    if (str(input, "socket") !== undefined && !plain) {
      throw new ValidationError("--socket snapshots take only -t", {
        hint: "drop --socket for --push, --stop or --mlock",
      });
    }
    using server = plain
      ? await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home })
      : undefined;
    if (server) {
      const r = await server.snapshot(input.args[0], tag);
      const res = { ref: r.tag, digest: r.snapshot_ref };
      ctx.out.result(res);
      ctx.out.line(`${res.ref} ${res.digest}`);
      return;
    }
    const res = await snapshotInstance(ctx.home, input.args[0], {
      tag,
      push: str(input, "push"),
      after: bool(input, "stop") ? "stop" : "resume",
      mlockRequired: bool(input, "mlock"),
      signal: ctx.signal,
      onProgress: (m) => ctx.out.info(m),
    });
    ctx.out.result(res);
    ctx.out.line(`${res.ref} ${res.digest}${res.pushed ? ` pushed ${res.pushed}` : ""}`);
  },
};
