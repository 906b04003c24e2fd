/**
 * @module
 * `ovm serve`: the OVMS runtime contract (spec section 11) over a UNIX
 * socket, until SIGTERM/SIGINT. Then it stops accepting, finishes in-flight
 * requests and leaves the VMs running — the next `ovm serve` reattaches to
 * them from their state files — unless `--stop-instances-on-exit`.
 */
import { ValidationError } from "../errors.ts";
import { Controller, createHandler, defaultSocketPath, listen } from "../api/mod.ts";
import { isActive, listInstances, parseNetFlag, stopInstance } from "../runtime/mod.ts";
import { WarmPool } from "../runtime/mod.ts";
import { bool, type Command, str, strs } from "./command.ts";

export const serveCommand: Command = {
  usesRuntimes: true,
  name: "serve",
  summary: "Serve the OVMS runtime API on a UNIX socket",
  usage: "serve [--socket PATH] [--stop-instances-on-exit] [--warm-snapshot REF --warm-pool N]",
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
    "warm-snapshot": {
      type: "string",
      multiple: true,
      valueName: "REF",
      help: "Keep VMs of this snapshot artifact ready; a /start of it takes one (repeatable)",
    },
    "warm-pool": {
      type: "string",
      valueName: "N",
      help: "VMs kept ready per --warm-snapshot",
      default: "1",
    },
    net: {
      type: "string",
      valueName: "MODE",
      help: "Network of starts whose overrides name none: user (default), bridge[=NETWORK] or none",
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
    const warm = strs(input, "warm-snapshot");
    const size = Number(str(input, "warm-pool") ?? "1");
    if (!Number.isInteger(size) || size < 0 || size > 64) {
      throw new ValidationError(`Invalid --warm-pool "${str(input, "warm-pool")}"`, {
        hint: "use a whole number from 0 to 64",
      });
    }
    const store = await ctx.store();
    const pool = warm.length && size > 0 ? new WarmPool(ctx.home, { size }) : undefined;
    const running = (await listInstances(ctx.home)).filter(isActive);
    const net = str(input, "net");
    if (net !== undefined) parseNetFlag(net, []);
    const controller = new Controller(store, {
      policyFile: str(input, "policy"),
      net,
      bootTimeoutMs: bootS * 1000,
      note: (m) => ctx.out.warn(m),
      pool,
    });
    const verbose = bool(input, "verbose");
    // A stray rejection deep in an adapter must fail its request, not end the
    // server (and every other client's stream) with it.
    const onUnhandled = (e: PromiseRejectionEvent) => {
      e.preventDefault();
      ctx.out.warn(`unhandled rejection: ${(e.reason as Error)?.message ?? e.reason}`);
    };
    globalThis.addEventListener("unhandledrejection", onUnhandled);
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
    // Filled in the background: the API answers meanwhile (starts restore cold until then).
    const filling = Promise.all(warm.map((ref) =>
      pool!.fill(ref).then(
        () => ctx.out.info(`ovm serve: warm pool of ${size} ready for ${ref}`),
        (e) => ctx.out.warn(`warm pool for ${ref} failed: ${(e as Error).message}`),
      )
    ));
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    ctx.out.info("ovm serve: shutting down (finishing in-flight requests)");
    // Log streams would hold the shutdown open: end them first.
    controller.close();
    await server.shutdown();
    await controller.drain();
    await pool?.close();
    await filling;
    globalThis.removeEventListener("unhandledrejection", onUnhandled);
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
