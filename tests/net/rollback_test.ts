/**
 * A start that fails after its network setup rolls all of it back: the
 * lease, the TAP, the port table and the instance. ovm runs inside a network
 * namespace the test creates (real bridge, TAP, nftables); the VMM is the
 * contract-checking fake Firecracker, made to fail where a real one can.
 */
import * as assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../_helpers/cli.ts";
import { linkNames, netns, ok } from "../_helpers/netns.ts";
import { killAll } from "../_helpers/runtime.ts";
import { fakeBin, packFakeArtifact } from "../_helpers/vmm_runtimes.ts";
import { dropTemplate } from "../../src/runtime/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const SFX = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);

Deno.test(
  "a VMM that fails after the network setup leaves no lease, TAP, port table or instance, on a boot and on a restore",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    await using good = await fakeBin();
    await using noStart = await fakeBin({ fail: "PUT /actions 400 no KVM here" });
    await using noLoad = await fakeBin({ fail: "PUT /snapshot/load 400 bad snapshot" });
    const [src, a, c] = ["s", "a", "c"].map((p) => `${p}-rb-${SFX}`);
    let ramsnap: string | undefined;
    try {
      await packFakeArtifact(home.path, "firecracker");
      const run = (bin: string, name: string, ref: string) =>
        ns.ovm(home.path, [
          "run",
          "--runtime",
          "firecracker",
          "--runtime-path",
          bin,
          "--net",
          "bridge",
          "-p",
          "127.0.0.1:18600:80",
          "-d",
          "--name",
          name,
          ref,
        ]);
      const leases = async () =>
        JSON.parse(ok(await ns.ovm(home.path, ["network", "inspect", "ovm0", "--json"])))
          .leases.map((l: { instance: string }) => l.instance);
      const gone = async (id: string) =>
        assert.equal(
          await Deno.stat(join(home.path, "instances", id)).catch(() => undefined),
          undefined,
        );

      // A boot whose InstanceStart fails.
      const boot = await run(noStart.fc, a, "fake/vm:1");
      assert.equal(boot.code, 1, boot.stderr);
      assert.match(boot.stderr, /no KVM here/);
      assert.deepEqual(await leases(), []);
      assert.deepEqual(await linkNames(ns), ["ovm0"]);
      assert.equal((await ns.nftTables()).length, 1);
      await gone(a);

      // A restore whose snapshot load fails.
      ok(await run(good.fc, src, "fake/vm:1"));
      ok(await ns.ovm(home.path, ["snapshot", src, "-t", "fake/snap:1"]));
      ramsnap = (await loadArtifact(await ContentStore.open(home.path), "fake/snap:1")).manifest
        .ramSnapshot?.ref;
      ok(await ns.ovm(home.path, ["rm", "-f", src]));
      const restore = await run(noLoad.fc, c, "fake/snap:1");
      assert.equal(restore.code, 1, restore.stderr);
      assert.match(restore.stderr, /bad snapshot/);
      assert.deepEqual(await leases(), []);
      assert.deepEqual(await linkNames(ns), ["ovm0"]);
      assert.equal((await ns.nftTables()).length, 1);
      await gone(c);
    } finally {
      await killAll(home.path);
      if (ramsnap) await dropTemplate(ramsnap);
    }
  },
);
