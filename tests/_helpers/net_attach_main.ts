/**
 * @module
 * A test program that calls the network module the way the runtime does,
 * run inside a test's network namespace: `net_attach_main.ts HOME REQUEST`
 * where REQUEST is JSON `{op: "attach"|"detach"|"prune", ...}`. Prints the
 * result as JSON; errors as `{error, code}` with exit code 1.
 */
import { attachInstance, detachInstance, pruneNetworks } from "../../src/net/mod.ts";
import { OvmError } from "../../src/errors.ts";

const [home, raw] = Deno.args;
const req = JSON.parse(raw);
try {
  let out: unknown;
  if (req.op === "attach") {
    out = await attachInstance(home, req.instance, {
      network: req.network,
      publish: req.publish,
      runAs: req.runAs,
      nic: req.nic,
      address: req.address,
    });
  } else if (req.op === "detach") {
    out = await detachInstance(home, req.instance, { release: req.release });
  } else if (req.op === "prune") {
    const running = new Set<string>(req.running ?? []);
    out = await pruneNetworks(home, {
      isRunning: (id) => Promise.resolve(running.has(id)),
      unused: req.unused,
    });
  } else {
    throw new Error(`unknown op ${req.op}`);
  }
  console.log(JSON.stringify(out ?? null));
} catch (e) {
  console.log(JSON.stringify({
    error: e instanceof Error ? e.message : String(e),
    code: e instanceof OvmError ? e.code : "internal",
  }));
  Deno.exitCode = 1;
}
