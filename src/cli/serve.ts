/**
 * @module
 * `ovm serve`: the OVMS runtime contract (spec section 11) over a UNIX
 * socket, until SIGTERM/SIGINT. Then it stops accepting, finishes in-flight
 * requests and leaves the VMs running — the next `ovm serve` reattaches to
 * them from their state files — unless `--stop-instances-on-exit`.
 */
import { ValidationError } from "../errors.ts";
import { Controller, createHandler, defaultSocketPath, listen } from "../api/mod.ts";
import { isActive, listInstances, stopInstance } from "../runtime/mod.ts";
import { bool, type Command, str } from "./command.ts";

export const serveCommand: Command = {
  name: "serve",
  summary: "Serve the OVMS runtime API on a UNIX socket",
  usage: "serve [--socket PATH] [--stop-instances-on-exit]",
  description: "Serves POST /start, /stop, /snapshot, /inject and GET /status/{id}, /logs/{id},\n" +
    "/instances, /healthz, /version (spec/api/ovms-runtime.openapi.yaml). The socket\n" +
    "is 0600 in a 0700 directory; default /run/ovm/ovm.sock for root, else\n" +
    "$XDG_RUNTIME_DIR/ovm/ovm.sock. `ovm run -d`, ps, stop and logs use it when it runs.",
  options: {
    socket: { type: "string", valueName: "PATH", help: "Socket path (default: see above)" },
    "stop-instances-on-exit": {
      type: "boolean",
      help: "Stop every running instance when the server exits",
    },
    policy: {
      type: "string",
      valueName: "FILE",
      help: "Admission policy for /start (default $OVM_HOME/policy.json when present)",
    },
    "boot-timeout": {
      type: "string",
      valueName: "SEC",
      help: "Fail a start whose guest prints nothing for this long",
      default: "60",
    },
    verbose: { type: "boolean", short: "v", help: "Log every request on stderr" },
  },
  examples: ["ovm serve", "ovm serve --socket /tmp/ovm.sock --stop-instances-on-exit"],
  async run(ctx, input) {
    const path = str(input, "socket") ?? defaultSocketPath(ctx.env);
    const bootS = Number(str(input, "boot-timeout") ?? "60");
    if (!Number.isFinite(bootS) || bootS <= 0) {
      throw new ValidationError(`Invalid --boot-timeout "${str(input, "boot-timeout")}"`, {
        hint: "use a number of seconds",
      });
    }
    const store = await ctx.store();
    const running = (await listInstances(ctx.home)).filter(isActive);
    const controller = new Controller(store, {
      policyFile: str(input, "policy"),
      bootTimeoutMs: bootS * 1000,
      note: (m) => ctx.out.warn(m),
    });
    const verbose = bool(input, "verbose");
    const server = await listen(
      createHandler(controller, {
        onResponse: verbose
          ? (req, status, ms) =>
            ctx.out.info(
              `${req.method} ${new URL(req.url).pathname} ${status} ${ms.toFixed(1)} ms`,
            )
          : undefined,
      }),
      { path },
    );
    ctx.out.info(
      `ovm serve: listening on ${server.path}` +
        (running.length ? ` (reattached to ${running.length} running instance(s))` : ""),
    );
    ctx.out.result({ socket: server.path, reattached: running.map((s) => s.id) });
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    ctx.out.info("ovm serve: shutting down (finishing in-flight requests)");
    // Log streams would hold the shutdown open: end them first.
    controller.close();
    await server.shutdown();
    await controller.drain();
    if (bool(input, "stop-instances-on-exit")) {
      for (const s of (await listInstances(ctx.home)).filter(isActive)) {
        ctx.out.info(`stopping ${s.id}`);
        await stopInstance(ctx.home, s.id, {
          timeoutMs: 10_000,
          reason: "stopped by 'ovm serve --stop-instances-on-exit'",
        }).catch((e) => ctx.out.warn(`stopping ${s.id} failed: ${(e as Error).message}`));
      }
    }
    return 0;
  },
};
