/**
 * Bridge clones on Cloud Hypervisor and Firecracker (spec 8.4): neither VMM
 * can give a restored guest a new identity, so a clone keeps the snapshot's
 * MAC and address — leased as such — and a second holder of that address on
 * the network is refused with nothing made. ovm runs inside a network
 * namespace the test creates (real bridge, TAPs, nftables) against the
 * contract-checking fake VMMs: every API call, the restore's TAP override
 * included, is checked against the official API documents.
 */
import * as assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../_helpers/cli.ts";
import { netns, ok } from "../_helpers/netns.ts";
import { killAll } from "../_helpers/runtime.ts";
import { fakeBin, packFakeArtifact, readCallLog } from "../_helpers/vmm_runtimes.ts";
import { dropTemplate } from "../../src/runtime/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { tapName } from "../../src/net/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** Instance ids name host-wide files (/dev/shm/ovm-<id>-ram): unique per run. */
const SFX = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);

for (const runtime of ["cloud-hypervisor", "firecracker"]) {
  Deno.test(
    `a ${runtime} bridge clone keeps its snapshot's MAC and address, and a second holder of it is refused with nothing made`,
    opts,
    async () => {
      await using ns = await netns();
      await using home = await tempDir();
      const log = join(home.path, "calls.jsonl");
      await using bin = await fakeBin({ log });
      const [src, c1, c2] = ["s", "c1", "c2"].map((p) => `${p}-${runtime.slice(0, 2)}-${SFX}`);
      let ramsnap: string | undefined;
      try {
        await packFakeArtifact(home.path, runtime);
        const run = (name: string, ref: string, ...more: string[]) =>
          ns.ovm(home.path, [
            "run",
            "--runtime",
            runtime,
            "--runtime-path",
            runtime === "firecracker" ? bin.fc : bin.ch,
            "--net",
            "bridge",
            "-d",
            "--name",
            name,
            ...more,
            ref,
          ]);
        const lease = async () =>
          JSON.parse(ok(await ns.ovm(home.path, ["network", "inspect", "ovm0", "--json"])))
            .leases.map((l: { instance: string; address: string; mac: string }) =>
              `${l.instance} ${l.address} ${l.mac}`
            );
        const links = async () =>
          (await ns.ipJson<{ ifname: string; master?: string }>(["link", "show"]))
            .filter((l) => l.ifname !== "lo").map((l) =>
              `${l.ifname}${l.master ? `@${l.master}` : ""}`
            )
            .sort();

        ok(await run(src, "fake/vm:1"));
        ok(await ns.ovm(home.path, ["snapshot", src, "-t", "fake/snap:1"]));
        const store = await ContentStore.open(home.path);
        ramsnap = (await loadArtifact(store, "fake/snap:1")).manifest.ramSnapshot?.ref;
        assert.deepEqual(await lease(), [`${src} 10.89.0.2 02:4f:0a:59:00:02`]);
        const before = await links();

        // The source still holds the snapshot's address: the clone would collide with it.
        const withSource = await run(c1, "fake/snap:1");
        assert.equal(withSource.code, 1, withSource.stderr);
        assert.match(
          withSource.stderr,
          new RegExp(
            `Address 10\\.89\\.0\\.2 on network "ovm0" is already held by instance "${src}"`,
          ),
        );
        assert.match(withSource.stderr, new RegExp(`a ${runtime} clone keeps its snapshot's MAC`));
        assert.deepEqual(await links(), before);
        assert.deepEqual(await lease(), [`${src} 10.89.0.2 02:4f:0a:59:00:02`]);
        assert.equal(
          await Deno.stat(join(home.path, "instances", c1)).catch(() => undefined),
          undefined,
        );

        // Source gone: the clone takes its address and MAC, on a TAP of its own on the bridge.
        ok(await ns.ovm(home.path, ["rm", "-f", src]));
        ok(await run(c1, "fake/snap:1"));
        assert.deepEqual(await lease(), [`${c1} 10.89.0.2 02:4f:0a:59:00:02`]);
        const tap = tapName(home.path, c1, 0);
        assert.deepEqual(await links(), ["ovm0", `${tap}@ovm0`].sort());
        const ps = JSON.parse(ok(await ns.ovm(home.path, ["ps", "--json"])));
        assert.deepEqual(ps.find((s: { id: string }) => s.id === c1).network.addresses, [
          { network: "ovm0", address: "10.89.0.2", mac: "02:4f:0a:59:00:02" },
        ]);
        // The restore named the clone's TAP (checked against the official API document).
        const calls = await readCallLog(log);
        assert.deepEqual(calls.filter((c) => c.violations.length), []);
        if (runtime === "firecracker") {
          const load = calls.findLast((c) => c.path === "/snapshot/load")!;
          assert.deepEqual(load.body!.network_overrides, [{
            iface_id: "eth0",
            host_dev_name: tap,
          }]);
        } else {
          assert.ok(calls.some((c) => c.path.endsWith("/vm.restore")));
          const cfg = JSON.parse(
            await Deno.readTextFile(
              join(home.path, "instances", c1, "vm", "ch-restore", "config.json"),
            ),
          );
          assert.deepEqual(cfg.net.map((n: { tap: string; mac: string }) => [n.tap, n.mac]), [
            [tap, "02:4f:0a:59:00:02"],
          ]);
        }

        // A second clone of the same snapshot on the same network: refused, naming the first.
        const second = await run(c2, "fake/snap:1", "-p", "127.0.0.1:18400:80");
        assert.equal(second.code, 1);
        assert.match(
          second.stderr,
          new RegExp(
            `Address 10\\.89\\.0\\.2 on network "ovm0" is already held by instance "${c1}"`,
          ),
        );
        assert.deepEqual(await links(), ["ovm0", `${tap}@ovm0`].sort());
        assert.deepEqual(await lease(), [`${c1} 10.89.0.2 02:4f:0a:59:00:02`]);
        assert.equal((await ns.nftTables()).length, 1);
        // Another network does not hold the snapshot's address: refused too.
        ok(await ns.ovm(home.path, ["network", "create", "--subnet", "10.97.0.0/24", "other"]));
        const other = await run(c2, "fake/snap:1", "--net", "bridge=other");
        assert.equal(other.code, 1);
        assert.match(
          other.stderr,
          /Address 10\.89\.0\.2 is not a guest address of network "other"/,
        );
        assert.equal(
          await Deno.stat(join(home.path, "instances", c2)).catch(() => undefined),
          undefined,
        );

        ok(await ns.ovm(home.path, ["rm", "-f", c1]));
        assert.deepEqual(await lease(), []);
        assert.deepEqual(await links(), ["other", "ovm0"]);
      } finally {
        await killAll(home.path);
        if (ramsnap) await dropTemplate(ramsnap);
      }
    },
  );
}
