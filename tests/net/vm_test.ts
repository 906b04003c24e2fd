/**
 * Bridge networking with real guests: QEMU (TCG) on TAPs on an ovm bridge,
 * all inside a network namespace the test creates and removes. The guest is
 * busybox httpd plus a probe loop (tests/_helpers/net_vm.ts); ovm runs inside
 * the namespace as its own process.
 */
import * as assert from "node:assert/strict";
import { join } from "node:path";
import { linkNames, type Netns, netns, ok, waitFor } from "../_helpers/netns.ts";
import { webHome } from "../_helpers/net_vm.ts";
import { tempDir } from "../_helpers/cli.ts";
import { OvmsClient } from "../../src/api/mod.ts";
import { tapName } from "../../src/net/mod.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** Instance ids name host-wide files (/dev/shm/ovm-<id>-ram): unique per run. */
const SFX = crypto.getRandomValues(new Uint32Array(1))[0].toString(36).slice(0, 5);
const A = `a-${SFX}`, B = `b-${SFX}`, C = `c-${SFX}`;
const SRC = `src-${SFX}`, C1 = `c1-${SFX}`, C2 = `c2-${SFX}`;

async function consoleOf(home: string, id: string): Promise<string> {
  return await Deno.readTextFile(join(home, "instances", id, "vm", "console.log")).catch(() => "");
}

/** GET over HTTP/1.0 from inside the namespace (curl), or undefined when nothing answers. */
async function get(ns: Netns, url: string): Promise<string | undefined> {
  const r = await ns.exec("curl", ["-sS", "--max-time", "10", url]);
  return r.code === 0 ? r.stdout : undefined;
}

Deno.test(
  "a guest on a bridge gets its address, reaches the host and another guest, and -p reaches its HTTP server",
  opts,
  async () => {
    await using h = await webHome();
    await using ns = await netns();
    await using www = await tempDir();
    await Deno.writeTextFile(join(www.path, "index.html"), "hello from the host\n");
    // The host's own service, on every address of the namespace (the bridge's too, once it exists).
    assert.equal((await ns.exec("busybox", ["httpd", "-p", "8000", "-h", www.path])).code, 0);

    const a = ok(
      await ns.ovm(h.home, [
        "run",
        "-d",
        "--net",
        "bridge",
        "--name",
        A,
        "-p",
        "127.0.0.1:18080:80",
        "-p",
        "0.0.0.0:18090:80",
        "--env",
        "TARGETS=10.89.0.1:8000 10.89.0.3",
        h.ref,
      ]),
    );
    assert.equal(a.trim(), A);
    ok(
      await ns.ovm(h.home, [
        "run",
        "-d",
        "--net",
        "bridge",
        "--name",
        B,
        "--env",
        "TARGETS=10.89.0.2",
        h.ref,
      ]),
    );
    const ps = JSON.parse(ok(await ns.ovm(h.home, ["ps", "--json"])));
    const byId = Object.fromEntries(ps.map((s: { id: string }) => [s.id, s]));
    assert.deepEqual(byId[A].network.addresses, [
      { network: "ovm0", address: "10.89.0.2", mac: "02:4f:0a:59:00:02" },
    ]);
    assert.equal(byId[B].network.addresses[0].address, "10.89.0.3");
    assert.match(ok(await ns.ovm(h.home, ["ps"])), new RegExp(`^${A}\\s.*10\\.89\\.0\\.2`, "m"));

    // The guest configured what ovm gave it, and reaches the host and the other guest.
    await waitFor(
      "guest a's address",
      async () => /guest eth0: 10\.89\.0\.2\/24 02:4f:0a:59:00:02/.test(await consoleOf(h.home, A)),
      60_000,
    );
    await waitFor(
      "a reaching the host",
      async () => (await consoleOf(h.home, A)).includes("reach 10.89.0.1:8000 ok"),
      60_000,
    );
    await waitFor(
      "a reaching b",
      async () => (await consoleOf(h.home, A)).includes("reach 10.89.0.3 ok"),
      60_000,
    );
    await waitFor(
      "b reaching a",
      async () => (await consoleOf(h.home, B)).includes("reach 10.89.0.2 ok"),
      60_000,
    );

    // Published ports: loopback (the nft output chain) and the bridge address.
    assert.equal(await get(ns, "http://127.0.0.1:18080/"), "hello from the guest\n");
    assert.equal(await get(ns, "http://10.89.0.1:18090/"), "hello from the guest\n");
    assert.equal(await get(ns, "http://10.89.0.2/"), "hello from the guest\n");
    // The TAP belongs to the VMM's own uid, not root.
    const tap = (await linkNames(ns)).find((l) => l.startsWith("ovt"))!;
    const detail = (await ns.exec("ip", ["-d", "link", "show", "dev", tap])).stdout;
    assert.match(detail, /tun type tap .*user (\d+)/);
    assert.notEqual(Number(/user (\d+)/.exec(detail)![1]), 0);

    // Faults: a port another instance publishes, a port the host holds, a network in use.
    const clash = await ns.ovm(h.home, [
      "run",
      "-d",
      "--net",
      "bridge",
      "--name",
      C,
      "-p",
      "18080:80",
      h.ref,
    ]);
    assert.equal(clash.code, 1);
    assert.match(
      clash.stderr,
      /Port 127\.0\.0\.1:18080\/tcp is already published by instance "a-\w+"/,
    );
    const held = await ns.ovm(h.home, [
      "run",
      "-d",
      "--net",
      "bridge",
      "--name",
      C,
      "-p",
      "8000:80",
      h.ref,
    ]);
    assert.equal(held.code, 1);
    assert.match(held.stderr, /Port 127\.0\.0\.1:8000\/tcp is already bound on this host/);
    assert.ok(!(await Deno.stat(join(h.home, "instances", C)).catch(() => undefined)));
    const inUse = await ns.ovm(h.home, ["network", "rm", "ovm0"]);
    assert.equal(inUse.code, 1);
    assert.match(inUse.stderr, /Network "ovm0" is in use by instance\(s\) "a-\w+", "b-\w+"/);
    const unknown = await ns.ovm(h.home, ["run", "-d", "--net", "bridge=nope", h.ref]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /No network "nope"/);

    // Stop: TAP and port rules go, the address stays; rm releases it.
    ok(await ns.ovm(h.home, ["stop", A]));
    assert.equal((await linkNames(ns)).filter((l) => l.startsWith("ovt")).length, 1);
    assert.equal(await get(ns, "http://127.0.0.1:18080/"), undefined);
    assert.equal((await ns.nftTables()).length, 1);
    ok(await ns.ovm(h.home, ["rm", "-f", A, B]));
    assert.deepEqual(await linkNames(ns), ["ovm0"]);
    const net = JSON.parse(ok(await ns.ovm(h.home, ["network", "inspect", "ovm0", "--json"])));
    assert.deepEqual(net.leases, []);
  },
);

Deno.test(
  "two clones restored from one snapshot come back with their own MAC, address and hostname, and both answer",
  opts,
  async () => {
    await using h = await webHome();
    await using ns = await netns();
    await using www = await tempDir();
    await Deno.writeTextFile(join(www.path, "index.html"), "hello from the host\n");
    assert.equal((await ns.exec("busybox", ["httpd", "-p", "8000", "-h", www.path])).code, 0);
    ok(
      await ns.ovm(h.home, [
        "run",
        "-d",
        "--net",
        "bridge",
        "--name",
        SRC,
        "--env",
        "TARGETS=10.89.0.1:8000 10.89.0.3 10.89.0.4",
        h.ref,
      ]),
    );
    await waitFor(
      "the source's httpd",
      async () => (await get(ns, "http://10.89.0.2/cgi-bin/id")) !== undefined,
      60_000,
    );
    assert.equal(
      await get(ns, "http://10.89.0.2/cgi-bin/id"),
      "ovms 02:4f:0a:59:00:02 10.89.0.2/24\n",
    );
    ok(await ns.ovm(h.home, ["snapshot", SRC, "-t", "web:warm"]));

    for (const id of [C1, C2]) {
      ok(await ns.ovm(h.home, ["run", "-d", "--net", "bridge", "--name", id, "web:warm"]));
    }
    const ids: Record<string, string> = {};
    for (const [id, addr] of [[C1, "10.89.0.3"], [C2, "10.89.0.4"]]) {
      await waitFor(
        `${id} on ${addr}`,
        async () => (await get(ns, `http://${addr}/cgi-bin/id`))?.startsWith(id) ?? false,
        30_000,
      );
      ids[id] = (await get(ns, `http://${addr}/cgi-bin/id`))!;
    }
    assert.equal(ids[C1], `${C1} 02:4f:0a:59:00:03 10.89.0.3/24\n`);
    assert.equal(ids[C2], `${C2} 02:4f:0a:59:00:04 10.89.0.4/24\n`);
    // The source resumed and keeps its own identity (and the bridge still knows its MAC's
    // port: the clones' TAPs joined only after their guests took their own MACs).
    assert.equal(
      await get(ns, "http://10.89.0.2/cgi-bin/id"),
      "ovms 02:4f:0a:59:00:02 10.89.0.2/24\n",
    );
    const fdb = (await ns.exec("bridge", ["fdb", "show", "br", "ovm0"])).stdout;
    const srcTap = /02:4f:0a:59:00:02 dev (\S+)/.exec(fdb)?.[1];
    assert.equal(srcTap, tapName(h.home, SRC, 0), fdb);
    // The host's neighbour table agrees: three MACs for three addresses.
    const neigh = (await ns.exec("ip", ["neigh", "show", "dev", "ovm0"])).stdout;
    for (const n of [2, 3, 4]) {
      assert.match(neigh, new RegExp(`10\\.89\\.0\\.${n} lladdr 02:4f:0a:59:00:0${n}`));
    }
    // Each clone applied its identity once, and reaches the host and the other clone.
    for (const [id, peer] of [[C1, "10.89.0.4"], [C2, "10.89.0.3"]]) {
      const text = await consoleOf(h.home, id);
      assert.equal([...text.matchAll(/OVMS-IDENTITY: /g)].length, 1, text.slice(-2000));
      const after = () => consoleOf(h.home, id).then((t) => t.slice(t.indexOf("OVMS-IDENTITY")));
      await waitFor(
        `${id} reaching the host`,
        async () => (await after()).includes("reach 10.89.0.1:8000 ok"),
        30_000,
      );
      await waitFor(
        `${id} reaching ${peer}`,
        async () => (await after()).includes(`reach ${peer} ok`),
        30_000,
      );
    }
    ok(await ns.ovm(h.home, ["rm", "-f", SRC, C1, C2]));
    assert.deepEqual(await linkNames(ns), ["ovm0"]);
  },
);

Deno.test(
  "ovm serve --net bridge puts API starts on the bridge; overrides publish ports and GET /status shows the address",
  opts,
  async () => {
    await using h = await webHome();
    await using ns = await netns();
    await using sock = await tempDir();
    const socket = join(sock.path, "ovm.sock");
    // The server lives inside the namespace (its bridges, TAPs and QEMUs do); its
    // UNIX socket is a file, so the client here reaches it from outside.
    const server = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns.name,
        Deno.execPath(),
        "run",
        "-A",
        new URL("../../main.ts", import.meta.url).pathname,
        "serve",
        "--home",
        h.home,
        "--socket",
        socket,
        "--net",
        "bridge",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let log = "";
    const reading = (async () => {
      for (let r = await stderr.read(); !r.done; r = await stderr.read()) log += r.value;
    })();
    try {
      using client = new OvmsClient({ socket });
      await waitFor("ovm serve", async () => await client.health().catch(() => false), 30_000);
      const id = `api-${SFX}`;
      const started = await client.start(h.ref, {
        overrides: { name: id, publish: ["127.0.0.1:18300:80"] },
        wait: true,
      });
      assert.equal(started.instance_id, id);
      const st = await client.status(id);
      assert.deepEqual((st as { network?: unknown }).network, {
        mode: "bridge",
        network: "ovm0",
        addresses: [{ network: "ovm0", address: "10.89.0.2", mac: "02:4f:0a:59:00:02" }],
      });
      await waitFor(
        "the published port",
        async () => (await get(ns, "http://127.0.0.1:18300/")) === "hello from the guest\n",
        60_000,
      );
      // A bad override is a 400 naming it; nothing is made for it.
      await assert.rejects(
        () => client.start(h.ref, { overrides: { net: "tap" } as never }),
        /overrides\.net/,
      );
      await client.remove(id, { force: true });
      assert.deepEqual(await linkNames(ns), ["ovm0"]);
    } finally {
      try {
        server.kill("SIGTERM");
      } catch { /* gone */ }
      await server.status;
      await reading.catch(() => {});
      if (!log.includes("listening")) console.error(log);
    }
  },
);
