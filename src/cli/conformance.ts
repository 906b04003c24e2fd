/**
 * @module
 * `ovm conformance`: runs the runtime-contract suite against a server on a
 * UNIX socket (ovm's own or any other implementation) and prints a pass/fail
 * table; exits 1 when a case fails.
 */
import { ValidationError } from "../errors.ts";
import { clientSocketPath, ResponseValidator, runConformance } from "../api/mod.ts";
import { type Command, str } from "./command.ts";

export const conformanceCommand: Command = {
  name: "conformance",
  summary: "Check a runtime server against the OVMS runtime contract",
  usage: "conformance [--socket PATH] [--manifest REF] [--memory 256M] [--accel tcg]",
  description:
    "Runs the contract suite: error codes, bodies against the OpenAPI document, and with\n" +
    "--manifest (one the runtime can boot) the lifecycle: start, status, logs, inject,\n" +
    "follow, stop, wrong-state actions, delete.",
  options: {
    socket: {
      type: "string",
      valueName: "PATH",
      help: "The server's socket (default $OVM_SOCKET)",
    },
    manifest: { type: "string", valueName: "REF", help: "A manifest to boot for the lifecycle" },
    memory: { type: "string", valueName: "SIZE", help: "Memory override for the start" },
    accel: { type: "string", valueName: "MODE", help: "Accelerator override: auto, kvm or tcg" },
    openapi: {
      type: "string",
      valueName: "FILE",
      help: "Check bodies against this OpenAPI YAML (default: this build's document)",
    },
  },
  examples: ["ovm conformance --socket /run/ovm/ovm.sock --manifest demo/busybox:1.0"],
  async run(ctx, input) {
    const socket = clientSocketPath(str(input, "socket"), ctx.env);
    const accel = str(input, "accel");
    if (accel !== undefined && !["auto", "kvm", "tcg"].includes(accel)) {
      throw new ValidationError(`Invalid --accel "${accel}"`, { hint: "use auto, kvm or tcg" });
    }
    const file = str(input, "openapi");
    const validator = file ? ResponseValidator.fromYaml(await Deno.readTextFile(file)) : undefined;
    const overrides: Record<string, unknown> = {};
    if (str(input, "memory")) overrides.memory = str(input, "memory");
    if (accel) overrides.accel = accel;
    const results = await runConformance(socket, {
      manifest: str(input, "manifest"),
      overrides,
      validator,
      onResult: (r) => ctx.out.info(`${r.skipped ? "skip" : r.ok ? "pass" : "FAIL"}  ${r.name}`),
    });
    ctx.out.result(results);
    ctx.out.table(
      ["CASE", "RESULT", "MS", "DETAIL"],
      results.map((r) => [
        r.name,
        r.skipped ? "skip" : r.ok ? "pass" : "FAIL",
        r.ms.toFixed(0),
        r.detail,
      ]),
    );
    const failed = results.filter((r) => !r.ok).length;
    ctx.out.info(
      `${results.length - failed} of ${results.length} passed` +
        (failed ? `, ${failed} failed` : ""),
    );
    return failed ? 1 : 0;
  },
};
