/**
 * oras with a real VM (QEMU under TCG): a running guest is snapshotted, the
 * base and the snapshot are pushed, and `oras discover` finds the snapshot as
 * a referrer of the base; the artifact re-published file by file with
 * `oras push` (OVMS media types, the OVMS manifest as config) boots with
 * `ovm run` and counts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { resetCapabilities } from "../../src/oci/mod.ts";
import { startInstance, stopInstance } from "../../src/runtime/mod.ts";
import { counterHome, lastCount } from "../_helpers/snapshot.ts";
import { ovmIn, waitFor } from "../_helpers/runtime.ts";
import { startRegistry } from "../_helpers/registry.ts";
import { needs, runOk, toolEnv } from "../_helpers/tools.ts";

const oras = await needs("oras");
const OVMS = "application/vnd.ovms.manifest.v1+json";

async function countsPast(home: string, id: string, n: number): Promise<number> {
  return await waitFor(async () => {
    const c = (await lastCount(home, id)) ?? 0;
    return c > n ? c : undefined;
  }, { timeoutMs: 90_000, what: `instance ${id} to count past ${n}` });
}

Deno.test({
  name:
    "oras discover lists an ovm snapshot of a pushed artifact; an oras-pushed artifact boots with ovm run",
  ...oras,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    resetCapabilities();
    await using reg = await startRegistry();
    await using h = await counterHome();
    await using t = await toolEnv();
    const { home, store } = h;

    const src = await startInstance(store, h.ref, {
      memoryBytes: 256 << 20,
      cpus: 1,
      accel: "tcg",
      net: "none",
      detach: true,
    });
    const id = src.state.id;
    await countsPast(home, id, 2);
    const s = await ovmIn(home, "snapshot", id, "-t", "test/counter:snap");
    assert.equal(s.code, 0, s.stderr);
    await stopInstance(home, id, { force: true });
    const base = await store.resolve(h.ref);
    const snap = await store.resolve("test/counter:snap");

    const baseRef = `${reg.host}/vms/counter:1`;
    assert.equal((await ovmIn(home, "push", h.ref, baseRef)).code, 0);
    const p = await ovmIn(home, "push", "test/counter:snap", `${reg.host}/vms/counter:snap`);
    assert.equal(p.code, 0, p.stderr);
    const d = JSON.parse(
      await runOk("oras", ["discover", "--plain-http", "--format", "json", baseRef], {
        env: t.env,
      }),
    );
    assert.equal(d.digest, base.digest);
    const entry = d.referrers.find((r: { digest: string }) => r.digest === snap.digest);
    assert(entry, JSON.stringify(d));
    assert.equal(entry.artifactType, OVMS);

    // Re-publish the base with oras, blob by blob, under the OVMS media types.
    const dir = join(home, "oras-files");
    await Deno.mkdir(dir);
    const m = JSON.parse(
      await runOk("oras", ["manifest", "fetch", "--plain-http", baseRef], { env: t.env }),
    );
    const files: string[] = [];
    for (const [i, l] of m.layers.entries()) {
      const name = `layer${i}`;
      await runOk("oras", [
        "blob",
        "fetch",
        "--plain-http",
        "-o",
        join(dir, name),
        `${reg.host}/vms/counter@${l.digest}`,
      ], { env: t.env });
      files.push(`${name}:${l.mediaType}`);
    }
    await runOk("oras", [
      "manifest",
      "fetch-config",
      "--plain-http",
      "-o",
      join(dir, "manifest.json"),
      baseRef,
    ], { env: t.env });
    await runOk("oras", [
      "push",
      "--plain-http",
      `${reg.host}/oras/counter:1`,
      "--artifact-type",
      OVMS,
      "--config",
      `manifest.json:${OVMS}`,
      ...files,
    ], { env: t.env, cwd: dir });

    const pulled = await ovmIn(home, "pull", `${reg.host}/oras/counter:1`, "-t", "oras/counter:1");
    assert.equal(pulled.code, 0, pulled.stderr);
    const r = await ovmIn(home, "run", "-d", "--name", "from-oras", "-m", "256M", "oras/counter:1");
    assert.equal(r.code, 0, r.stderr);
    assert((await countsPast(home, "from-oras", 1)) > 1);
    await stopInstance(home, "from-oras", { force: true });
  },
});
