/**
 * What crashes leave on a bridge network, through the real CLI inside a
 * network namespace the test creates and removes: an `ovm run` SIGKILLed in
 * the middle of its network setup (`OVM_FAILPOINT`), and a running guest
 * whose QEMU is SIGKILLed. `ovm gc`, `ovm network prune` and `ovm rm` remove
 * what is left; no address is handed out twice meanwhile.
 */
import * as assert from "node:assert/strict";
import { join } from "node:path";
import { linkNames, type Netns, netns, ok, waitFor } from "../_helpers/netns.ts";
import { webHome } from "../_helpers/net_vm.ts";
import { tapName } from "../../src/net/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
/** Instance ids name host-wide files (/dev/shm/ovm-<id>-ram): unique per run. */
const SFX = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);

async function leases(ns: Netns, home: string): Promise<string[]> {
  const net = JSON.parse(ok(await ns.ovm(home, ["network", "inspect", "ovm0", "--json"])));
  return net.leases.map((l: { instance: string; address: string }) => `${l.instance} ${l.address}`);
}

Deno.test(
  "an ovm run killed -9 in its network setup leaves a lease and TAP that gc, rm and network prune remove; the address is never handed out twice",
  opts,
  async () => {
    await using h = await webHome();
    await using ns = await netns();
    const [k1, k2, k3] = ["k1", "k2", "k3"].map((p) => `${p}-${SFX}`);
    const run = (name: string, point: string) =>
      ns.ovm(h.home, [
        "run",
        "-d",
        "--net",
        "bridge",
        "--name",
        name,
        "-p",
        `127.0.0.1:${18500 + [k1, k2, k3].indexOf(name)}:80`,
        h.ref,
      ], { OVM_FAILPOINT: `net:${point}` });

    // Killed once its lease is on disk (no TAP yet), and once its TAP exists (no port table).
    assert.equal((await run(k1, "after-lease")).code, 137);
    assert.equal((await run(k2, "after-tap")).code, 137);
    assert.deepEqual(await leases(ns, h.home), [`${k1} 10.89.0.2`, `${k2} 10.89.0.3`]);
    assert.deepEqual(await linkNames(ns), ["ovm0", tapName(h.home, k2, 0)].sort());
    // The instances are there, in error: their ovm died while starting them.
    const ps = JSON.parse(ok(await ns.ovm(h.home, ["ps", "-a", "--json"])));
    for (const id of [k1, k2]) {
      const s = ps.find((x: { id: string }) => x.id === id);
      assert.equal(s?.state, "error", JSON.stringify(s));
      assert.match(s.reason, /exited while starting the VM/);
    }
    // A later attach skips both addresses (the instances exist, their leases stand).
    assert.equal((await run(k3, "after-lease")).code, 137);
    assert.deepEqual((await leases(ns, h.home)).at(-1), `${k3} 10.89.0.4`);

    // gc: the TAP of an instance that is not running goes; its address stays while it exists.
    const gc = JSON.parse(ok(await ns.ovm(h.home, ["gc", "--json"])));
    assert.deepEqual(gc.network.links, [tapName(h.home, k2, 0)]);
    assert.deepEqual(await linkNames(ns), ["ovm0"]);
    assert.equal((await leases(ns, h.home)).length, 3);
    // rm releases the address; an instance directory lost with its ovm is reclaimed by prune.
    ok(await ns.ovm(h.home, ["rm", "-f", k1]));
    await Deno.remove(join(h.home, "instances", k2), { recursive: true });
    await Deno.remove(join(h.home, "instances", k3), { recursive: true });
    const pruned = JSON.parse(ok(await ns.ovm(h.home, ["network", "prune", "--json"])));
    assert.deepEqual(pruned.leases.map((l: { instance: string }) => l.instance).sort(), [k2, k3]);
    assert.deepEqual(pruned.networks, ["ovm0"]);
    assert.deepEqual(await linkNames(ns), []);
    assert.deepEqual(await ns.nftTables(), []);
  },
);

Deno.test(
  "a bridge guest whose QEMU is killed -9 leaves a TAP and port rules that gc removes, keeping its address until rm",
  opts,
  async () => {
    await using h = await webHome();
    await using ns = await netns();
    const id = `v-${SFX}`;
    ok(
      await ns.ovm(h.home, [
        "run",
        "-d",
        "--net",
        "bridge",
        "--name",
        id,
        "-p",
        "127.0.0.1:18510:80",
        h.ref,
      ]),
    );
    const tap = tapName(h.home, id, 0);
    assert.deepEqual(await linkNames(ns), ["ovm0", tap].sort());
    assert.equal((await ns.nftTables()).length, 2);
    await waitFor(
      "the published port",
      async () =>
        (await ns.exec("curl", ["-sS", "--max-time", "5", "http://127.0.0.1:18510/"])).stdout ===
          "hello from the guest\n",
      90_000,
    );
    // The VMM dies under ovm's feet: nobody is left to detach it.
    const pid = JSON.parse(
      await Deno.readTextFile(join(h.home, "instances", id, "state.json")),
    ).pid as number;
    Deno.kill(pid, "SIGKILL");
    await waitFor("QEMU gone", async () => {
      try {
        return (await Deno.readTextFile(`/proc/${pid}/stat`)).split(" ")[2] === "Z";
      } catch {
        return true;
      }
    });
    assert.deepEqual(await linkNames(ns), ["ovm0", tap].sort());
    const gc = JSON.parse(ok(await ns.ovm(h.home, ["gc", "--json"])));
    assert.deepEqual(gc.network.leases, []);
    assert.deepEqual(await linkNames(ns), ["ovm0"]);
    assert.equal((await ns.nftTables()).length, 1);
    const st = JSON.parse(ok(await ns.ovm(h.home, ["ps", "-a", "--json"])))
      .find((s: { id: string }) => s.id === id);
    assert.notEqual(st.state, "running");
    assert.deepEqual(st.network.addresses, [
      { network: "ovm0", address: "10.89.0.2", mac: "02:4f:0a:59:00:02" },
    ]);
    ok(await ns.ovm(h.home, ["rm", "-f", id]));
    assert.deepEqual(await leases(ns, h.home), []);
  },
);
