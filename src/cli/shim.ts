/**
 * @module
 * `ovm shim`: the containerd runtime v2 shim. `install` writes the
 * `containerd-shim-ovm-v2` launcher containerd finds on its PATH; `v2` is the
 * launcher's entry point (containerd's Go-style flags after `--`).
 */
import { ValidationError } from "../errors.ts";
import { installLauncher, parseShimArgs, shimDelete, shimServe, shimStart } from "../shim/mod.ts";
import { VERSION } from "../version.ts";
import { type Command, str } from "./command.ts";

const installCommand: Command = {
  name: "install",
  summary: "Write the containerd-shim-ovm-v2 launcher",
  usage: "shim install [--dir DIR] [--net none|user|bridge[=NETWORK]] [--json]",
  description: "containerd runs runtime io.containerd.ovm.v2 as containerd-shim-ovm-v2 from its " +
    "PATH. The launcher runs this ovm (the compiled binary, or deno with this checkout's main.ts) " +
    "in shim mode, with OVM_HOME set to this home unless containerd's environment sets one. " +
    "--net is the network of tasks without an io.ovms.net annotation (OVM_SHIM_NET in the " +
    "launcher, unless containerd's environment sets it); default none.",
  options: {
    dir: {
      type: "string",
      valueName: "DIR",
      help: "Directory on containerd's PATH",
      default: "/usr/local/bin",
    },
    net: {
      type: "string",
      valueName: "MODE",
      help: "Default network of tasks: none, user or bridge[=NETWORK] (default none)",
    },
  },
  examples: [
    "ovm shim install --dir /usr/local/bin",
    "ovm shim install --net bridge=pods",
    "ctr run --runtime io.containerd.ovm.v2 ...",
  ],
  async run(ctx, input) {
    const dir = str(input, "dir") ?? "/usr/local/bin";
    const net = str(input, "net");
    const path = await installLauncher(dir, { home: ctx.home, net });
    ctx.out.line(path);
    ctx.out.result({
      path,
      runtime: "io.containerd.ovm.v2",
      home: ctx.home,
      ...(net ? { net } : {}),
    });
  },
};

const v2Command: Command = {
  name: "v2",
  summary: "Shim mode as containerd calls it (start, delete, serve)",
  usage: "shim v2 -- [-namespace NS] [-address ADDR] [-publish-binary BIN] -id ID [-bundle DIR] " +
    "start|delete|serve",
  description: "What the containerd-shim-ovm-v2 launcher runs; not for people. 'start' prints " +
    "the ttrpc address, 'delete' a protobuf DeleteResponse, 'serve' serves the task.",
  args: { min: 0, max: Infinity, names: "SHIM-ARGS..." },
  async run(ctx, input) {
    const a = parseShimArgs(input.args, Deno.cwd());
    const write = (b: Uint8Array) => {
      let off = 0;
      while (off < b.byteLength) off += ctx.out.stdout.writeSync(b.subarray(off));
    };
    if (a.version) {
      write(new TextEncoder().encode(`containerd-shim-ovm-v2:\n  Version: ${VERSION}\n`));
      return;
    }
    switch (a.action) {
      case "start":
        write(new TextEncoder().encode(await shimStart(a, ctx.home)));
        return;
      case "delete":
        write(await shimDelete(a, ctx.home));
        return;
      case "serve":
        await shimServe(a, ctx.home, { signal: ctx.signal });
        return;
      default:
        throw new ValidationError(`Unknown shim action "${a.action ?? ""}"`, {
          hint: "containerd calls the shim with start or delete",
        });
    }
  },
};

export const shimCommand: Command = {
  name: "shim",
  summary: "containerd runtime v2 shim (io.containerd.ovm.v2)",
  usage: "shim <command>",
  subcommands: [installCommand, v2Command],
};
