/**
 * @module
 * The `ovm` executable: runs the CLI, and is the only place that exits.
 * A first Ctrl-C (or SIGTERM) aborts the running operation cleanly; a second
 * Ctrl-C exits at once.
 */
import { runCli } from "./src/cli/app.ts";

if (import.meta.main) {
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = () => {
    interrupts++;
    if (interrupts > 1) Deno.exit(130);
    controller.abort(new DOMException("interrupted", "AbortError"));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const code = await runCli(Deno.args, { signal: controller.signal });
  Deno.exit(code);
}
