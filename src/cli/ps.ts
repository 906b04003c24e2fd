/**
 * @module
 * `ovm ps`: lists instances, reattaching to each (a VM that died since is
 * recorded as stopped or error, with the reason).
 */
import { listInstances } from "../runtime/mod.ts";
import { isActive } from "../runtime/mod.ts";
import { bool, type Command } from "./command.ts";

export const psCommand: Command = {
  name: "ps",
  summary: "List running instances (-a: all)",
  usage: "ps [-a] [--json]",
  options: { all: { type: "boolean", short: "a", help: "Also list stopped instances" } },
  async run(ctx, input) {
    const all = await listInstances(ctx.home);
    const shown = bool(input, "all") ? all : all.filter(isActive);
    ctx.out.result(shown);
    ctx.out.table(
      ["ID", "ARTIFACT", "STATE", "PID", "CREATED", "PORTS", "REASON"],
      shown.map((s) => [
        s.id,
        `${s.name}:${s.version}`,
        s.state + (s.exitCode !== undefined ? ` (${s.exitCode})` : ""),
        isActive(s) && s.pid ? String(s.pid) : "-",
        s.createdAt.replace(/\.\d+Z$/, "Z"),
        s.network.publish.map((p) => `${p.hostIp}:${p.hostPort}->${p.guestPort}/${p.protocol}`)
          .join(",") || "-",
        s.reason ?? "",
      ]),
    );
  },
};
