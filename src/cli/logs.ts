/**
 * @module
 * `ovm logs`: prints an instance's console log; `-f` follows it until the VM ends.
 */
import { followConsole, getInstance, instancePaths, isActive } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { bool, type Command, str } from "./command.ts";

export const logsCommand: Command = {
  usesRuntimes: true,
  name: "logs",
  summary: "Print the console of an instance",
  usage: "logs [-f] <id>",
  options: {
    follow: { type: "boolean", short: "f", help: "Keep printing until the VM ends" },
    socket: SOCKET_OPTION,
  },
  args: { min: 1, max: 1, names: "ID" },
  async run(ctx, input) {
    const id = input.args[0];
    using server = await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home });
    if (server) {
      const enc = new TextEncoder();
      const records = server.logs(id, { follow: bool(input, "follow"), signal: ctx.signal });
      try {
        for await (const rec of records) {
          const b = enc.encode(rec.line + "\n");
          let off = 0;
          while (off < b.byteLength) off += ctx.out.stdout.writeSync(b.subarray(off));
        }
      } catch (e) {
        if (!ctx.signal.aborted) throw e;
      }
      return;
    }
    await getInstance(ctx.home, id);
    const follow = bool(input, "follow");
    let lastCheck = 0;
    let active = true;
    const sink = ctx.out.stdout;
    await followConsole(instancePaths(ctx.home, id).consoleLog, (b) => {
      let off = 0;
      while (off < b.byteLength) off += sink.writeSync(b.subarray(off));
    }, {
      signal: ctx.signal,
      until: async () => {
        if (!follow) return true;
        if (Date.now() - lastCheck > 500) {
          lastCheck = Date.now();
          active = isActive(await getInstance(ctx.home, id));
        }
        return !active;
      },
    });
  },
};
