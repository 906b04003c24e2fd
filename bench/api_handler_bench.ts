/**
 * The API's own work on a `/start`, with nothing else competing for the
 * event loop: parsing the request into an action (body, JSON, zod), and the
 * admission checks the controller runs before handing over to the runtime.
 *
 *   deno bench -A bench/api_handler_bench.ts
 */
import { parseAction } from "../src/api/server.ts";
import { enforcePolicy } from "../src/sign/mod.ts";
import { isExportDir } from "../src/runtime/mod.ts";
import { ContentStore } from "../src/store/mod.ts";

const home = await Deno.makeTempDir({ prefix: "ovm-bench-handler-" });
const store = await ContentStore.open(home);
const body = JSON.stringify({
  manifest: "bench/counter:snap",
  overrides: { memory: "256M", accel: "tcg", cpus: 1, name: "w1" },
});

Deno.bench("parse POST /start into an action", { group: "api", baseline: true }, async () => {
  await parseAction(
    new Request("http://ovms/start?wait=true", {
      method: "POST",
      body,
      headers: { "content-type": "application/json" },
    }),
  );
});

Deno.bench("export-dir probe + admission policy (no policy file)", { group: "api" }, async () => {
  await isExportDir("bench/counter:snap");
  await enforcePolicy("bench/counter:snap", { kind: "start", home, store });
});

globalThis.addEventListener("unload", () => Deno.removeSync(home, { recursive: true }));
