/**
 * @module
 * `ovm ps`: lists instances, reattaching to each (a VM that died since is
 * recorded as stopped or error, with the reason).
 */
import { listInstances } from "../runtime/mod.ts";
import { isActive } from "../runtime/mod.ts";
import { findServer, SOCKET_OPTION } from "../api/client.ts";
import { bool, type Command, str } from "./command.ts";

export const psCommand: Command = {
  usesRuntimes: true,
  name: "ps",
  summary: "List running instances (-a: all)",
  usage: "ps [-a] [--json]",
  options: {
    all: { type: "boolean", short: "a", help: "Also list stopped instances" },
    socket: SOCKET_OPTION,
  },
  async run(ctx, input) {
    using server = await findServer({ socket: str(input, "socket"), env: ctx.env, home: ctx.home });
    if (server) {
      const active = ["starting", "running", "paused", "stopping"];
      const listed = (await server.instances())
        .filter((s) => bool(input, "all") || active.includes(s.runtime_state));
      ctx.out.result(listed);
      ctx.out.table(
        ["ID", "ARTIFACT", "STATE", "PID", "CREATED", "REASON"],
        listed.map((s) => [
          s.instance_id,
          s.name ? `${s.name}:${s.version}` : s.manifest,
          s.runtime_state + (s.exit_code !== undefined ? ` (${s.exit_code})` : ""),
          s.pid ? String(s.pid) : "-",
          (s.created_at ?? "").replace(/\.\d+Z$/, "Z"),
          s.reason ?? "",
        ]),
      );
      return;
    }
    const all = await listInstances(ctx.home);
    const shown = bool(input, "all") ? all : all.filter(isActive);
    ctx.out.result(shown);
    ctx.out.table(
      ["ID", "ARTIFACT", "STATE", "PID", "CREATED", "ADDRESSES", "PORTS", "REASON"],
      shown.map((s) => [
        s.id,
        `${s.name}:${s.version}`,
        s.state + (s.exitCode !== undefined ? ` (${s.exitCode})` : ""),
        isActive(s) && s.pid ? String(s.pid) : "-",
        s.createdAt.replace(/\.\d+Z$/, "Z"),
        (s.network.addresses ?? []).map((a) => a.address).join(",") || "-",
        s.network.publish.map((p) => `${p.hostIp}:${p.hostPort}->${p.guestPort}/${p.protocol}`)
          .join(",") || "-",
        s.reason ?? "",
      ]),
    );
  },
};
