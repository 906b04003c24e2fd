/**
 * @module
 * The fake `cloud-hypervisor` / `firecracker` executable used by the
 * adapters' spawn-path tests (test code, not a stand-in for a real-binary
 * test): it accepts only `--api-socket PATH` (ch) or `--api-sock PATH` (fc),
 * serves the contract-checking fake API there, appends every call with its
 * violations to `$OVM_FAKE_VMM_LOG` (JSON lines), and exits when the API
 * asks it to. `$OVM_FAKE_VMM_FAIL` = `METHOD /path STATUS message` injects
 * an error reply; `$OVM_FAKE_VMM_EXIT_AT_ONCE` = text makes it print that on
 * stderr and exit 1 before serving.
 *
 * Usage: deno run -A fake_vmm_main.ts ch|fc [--api-socket|--api-sock] PATH
 */
import {
  ApiContract,
  FakeCloudHypervisor,
  FakeFirecracker,
  type FakeVmm,
  serveFake,
} from "./vmm_contract.ts";

const [kind, flag, socket, ...rest] = Deno.args;
const wanted = kind === "ch" ? "--api-socket" : "--api-sock";
const early = Deno.env.get("OVM_FAKE_VMM_EXIT_AT_ONCE");
if (early) {
  console.error(early);
  Deno.exit(1);
}
if (flag === "--version") {
  console.log(kind === "ch" ? "cloud-hypervisor v53.0-fake" : "Firecracker v1.17.0-fake");
  Deno.exit(0);
}
if (flag !== wanted || !socket || rest.length) {
  console.error(`fake ${kind}: usage: ${wanted} PATH (got ${JSON.stringify(Deno.args.slice(1))})`);
  Deno.exit(2);
}
const contract = await ApiContract.load(
  kind === "ch" ? "cloud-hypervisor.yaml" : "firecracker.yaml",
);
const fake: FakeVmm = kind === "ch"
  ? new FakeCloudHypervisor(contract)
  : new FakeFirecracker(contract);
const fail = Deno.env.get("OVM_FAKE_VMM_FAIL");
if (fail) {
  const [method, path, status, ...msg] = fail.split(" ");
  fake.failures[`${method} ${path}`] = fake.errorReply(Number(status), msg.join(" "));
}
const log = Deno.env.get("OVM_FAKE_VMM_LOG");
fake.onCall = (c) => {
  if (log) Deno.writeTextFileSync(log, JSON.stringify(c) + "\n", { append: true });
  if (fake.exitRequested) setTimeout(() => Deno.exit(0), 100);
};
const served = serveFake(fake, socket);
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(sig, () => Deno.exit(0));
}
await served.server.finished;
