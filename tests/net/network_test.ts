/**
 * Bridge networks, the IPAM and published ports, against the real kernel
 * (bridges, TAPs, veths, nftables) inside network namespaces each test
 * creates and removes. ovm runs inside them as a separate process
 * (`ip netns exec NS deno run -A main.ts ...`), exactly as a user runs it.
 */
import * as assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../_helpers/cli.ts";
import { type Netns, netns, ok, waitFor } from "../_helpers/netns.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

interface Link {
  ifname: string;
  ifalias?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
}

async function links(ns: Netns): Promise<Link[]> {
  return (await ns.ipJson<Link>(["-d", "link", "show"])).filter((l) => l.ifname !== "lo");
}

async function state(home: string) {
  try {
    return JSON.parse(await Deno.readTextFile(join(home, "networks", "state.json")));
  } catch {
    return { networks: [], leases: [] };
  }
}

async function mkInstance(home: string, id: string): Promise<void> {
  await Deno.mkdir(join(home, "instances", id), { recursive: true });
}

Deno.test(
  "network create, ls, inspect and rm manage a bridge, its gateway address and its nft table",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    const created = JSON.parse(ok(
      await ns.ovm(home.path, ["network", "create", "--subnet", "10.90.0.0/24", "back", "--json"]),
    ));
    assert.equal(created.bridge, "back");
    assert.equal(created.gateway, "10.90.0.1");
    const addrs = await ns.ipJson<{ addr_info: { local: string; prefixlen: number }[] }>(
      ["-4", "addr", "show", "dev", "back"],
    );
    assert.deepEqual(addrs[0].addr_info.map((a) => `${a.local}/${a.prefixlen}`), ["10.90.0.1/24"]);
    const br = (await links(ns)).find((l) => l.ifname === "back")!;
    assert.equal(br.linkinfo?.info_kind, "bridge");
    assert.match(br.ifalias ?? "", /^ovm:[0-9a-f]{8}:net:back$/);
    const tables = await ns.nftTables();
    assert.equal(tables.length, 1);
    assert.match(tables[0], /^ip ovm_[0-9a-f]{8}_net_back$/);
    const rules = (await ns.exec("nft", ["list", "table", ...tables[0].split(" ")])).stdout;
    assert.match(rules, /ip saddr 10\.90\.0\.0\/24 ip daddr != 10\.90\.0\.0\/24 .*masquerade/);
    assert.equal(
      (await ns.exec("cat", ["/proc/sys/net/ipv4/conf/back/route_localnet"])).stdout.trim(),
      "1",
    );

    // A second network picks the first free automatic subnet.
    const auto = JSON.parse(ok(await ns.ovm(home.path, ["network", "create", "front", "--json"])));
    assert.equal(auto.subnet, "10.89.0.0/24");
    const ls = JSON.parse(ok(await ns.ovm(home.path, ["network", "ls", "--json"])));
    assert.deepEqual(ls.map((n: { name: string; present: boolean }) => [n.name, n.present]), [
      ["back", true],
      ["front", true],
    ]);
    const table = ok(await ns.ovm(home.path, ["network", "ls"]));
    assert.match(table, /^back\s+back\s+10\.90\.0\.0\/24\s+10\.90\.0\.1\s+0\s+nat$/m);
    const inspected = JSON.parse(
      ok(await ns.ovm(home.path, ["network", "inspect", "front", "--json"])),
    );
    assert.equal(inspected.gateway, "10.89.0.1");
    assert.deepEqual(inspected.leases, []);

    ok(await ns.ovm(home.path, ["network", "rm", "back", "front"]));
    assert.deepEqual(await links(ns), []);
    assert.deepEqual(await ns.nftTables(), []);
    assert.deepEqual((await state(home.path)).networks, []);
    const missing = await ns.ovm(home.path, ["network", "inspect", "back"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /No network "back"/);
  },
);

Deno.test("network verbs have --help", opts, async () => {
  await using ns = await netns();
  await using home = await tempDir();
  for (const verb of ["create", "ls", "inspect", "rm", "prune"]) {
    const r = await ns.ovm(home.path, ["network", verb, "--help"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`Usage: ovm network ${verb}`));
  }
});

Deno.test(
  "network create refuses bad names, a subnet on a host route, a foreign bridge and a shared subnet, creating nothing",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    // A device that is not ovm's, with a route of its own.
    assert.equal((await ns.exec("ip", ["link", "add", "foo0", "type", "bridge"])).code, 0);
    await ns.exec("ip", ["addr", "add", "10.70.0.1/16", "dev", "foo0"]);
    await ns.exec("ip", ["link", "set", "foo0", "up"]);
    const before = await links(ns);

    const routed = await ns.ovm(home.path, ["network", "create", "--subnet", "10.70.5.0/24", "n1"]);
    assert.equal(routed.code, 1);
    assert.match(
      routed.stderr,
      /Subnet 10\.70\.5\.0\/24 overlaps a route of this host: 10\.70\.0\.0\/16 dev foo0/,
    );

    const foreign = await ns.ovm(home.path, ["network", "create", "--bridge", "foo0", "n2"]);
    assert.equal(foreign.code, 1);
    assert.match(foreign.stderr, /Network device "foo0" exists and is not ovm's/);

    const badName = await ns.ovm(home.path, ["network", "create", "Bad/Name"]);
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /Invalid network name "Bad\/Name"/);
    const badSubnet = await ns.ovm(home.path, [
      "network",
      "create",
      "--subnet",
      "10.1.2.3/24",
      "n3",
    ]);
    assert.equal(badSubnet.code, 2);
    assert.match(badSubnet.stderr, /host bits are set[\s\S]*10\.1\.2\.0\/24/);
    const longName = await ns.ovm(home.path, ["network", "create", "a-very-long-network-name"]);
    assert.equal(longName.code, 2);
    assert.match(longName.stderr, /--bridge NAME/);

    // Nothing of the refused ones exists.
    assert.deepEqual((await links(ns)).map((l) => l.ifname), before.map((l) => l.ifname));
    assert.deepEqual(await ns.nftTables(), []);
    assert.deepEqual((await state(home.path)).networks, []);

    ok(await ns.ovm(home.path, ["network", "create", "--subnet", "10.91.0.0/24", "a"]));
    const shared = await ns.ovm(home.path, ["network", "create", "--subnet", "10.91.0.0/16", "b"]);
    assert.equal(shared.code, 1);
    assert.match(
      shared.stderr,
      /Subnet 10\.91\.0\.0\/16 overlaps network "a" \(10\.91\.0\.0\/24\)/,
    );
    const again = await ns.ovm(home.path, ["network", "create", "a"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /Network "a" already exists/);
    assert.deepEqual((await state(home.path)).networks.map((n: { name: string }) => n.name), ["a"]);
    assert.equal((await ns.nftTables()).length, 1);
  },
);

Deno.test(
  "attach gives each instance its own address and a TAP owned by its uid; rm is refused while one holds an address",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    ok(
      await ns.ovm(home.path, [
        "network",
        "create",
        "--subnet",
        "10.92.0.0/24",
        "--isolate",
        "iso",
      ]),
    );
    // Six concurrent attaches (separate processes): six different addresses.
    const ids = ["i1", "i2", "i3", "i4", "i5", "i6"];
    for (const id of ids) await mkInstance(home.path, id);
    const results = await Promise.all(ids.map((id, i) =>
      ns.net(home.path, {
        op: "attach",
        instance: id,
        network: "iso",
        runAs: { uid: 0x4f560000 + i, gid: 0x4f560000 + i },
      })
    ));
    const atts = results.map((r) => JSON.parse(ok(r)));
    const addrs = atts.map((a) => a.address);
    assert.equal(new Set(addrs).size, 6, `addresses: ${addrs}`);
    for (const a of atts) {
      assert.match(a.address, /^10\.92\.0\.([2-7])$/);
      assert.equal(a.gateway, "10.92.0.1");
      assert.equal(a.prefix, 24);
      const oct = a.address.split(".").map((x: string) => Number(x).toString(16).padStart(2, "0"));
      assert.equal(a.mac, `02:4f:${oct.join(":")}`);
    }
    const all = await links(ns);
    for (const [i, a] of atts.entries()) {
      const tap = all.find((l) => l.ifname === a.tap)!;
      assert.equal(tap.master, "iso");
      assert.equal(tap.linkinfo?.info_kind, "tun");
      const detail = (await ns.exec("ip", ["-d", "link", "show", "dev", a.tap])).stdout;
      assert.match(detail, new RegExp(`tun type tap .*user ${0x4f560000 + i}`));
      assert.match(detail, /isolated on/);
    }

    const refused = await ns.ovm(home.path, ["network", "rm", "iso"]);
    assert.equal(refused.code, 1);
    assert.match(
      refused.stderr,
      /Network "iso" is in use by instance\(s\) "i1", "i2", "i3", "i4", "i5", "i6"/,
    );

    // An instance that keeps its lease (a restart) keeps its address.
    const again = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "i3", network: "iso" })),
    );
    assert.equal(again.address, atts[2].address);

    // Release on remove; the freed address is the next one handed out.
    ok(await ns.net(home.path, { op: "detach", instance: "i2", release: true }));
    assert.ok(!(await links(ns)).some((l) => l.ifname === atts[1].tap));
    await mkInstance(home.path, "i7");
    const i7 = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "i7", network: "iso" })),
    );
    assert.equal(i7.address, atts[1].address);

    // Instances that no longer exist give their addresses back; then rm works.
    await Deno.remove(join(home.path, "instances"), { recursive: true });
    ok(await ns.ovm(home.path, ["network", "rm", "iso"]));
    assert.deepEqual(await links(ns), []);
    assert.deepEqual(await ns.nftTables(), []);
    assert.deepEqual(await state(home.path), { schemaVersion: 1, networks: [], leases: [] });
  },
);

Deno.test(
  "attach refuses a port already bound on the host or published by another instance, leaving no lease, TAP or rule",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    await using www = await tempDir();
    await Deno.writeTextFile(join(www.path, "index.html"), "x\n");
    // Something of the host's own listens on 127.0.0.1:18080.
    const httpd = await ns.exec("busybox", ["httpd", "-p", "127.0.0.1:18080", "-h", www.path]);
    assert.equal(httpd.code, 0, httpd.stderr);
    await waitFor(
      "the host's httpd",
      async () => /:46A0 [0-9A-F:]+ 0A /.test((await ns.exec("cat", ["/proc/net/tcp"])).stdout),
    );
    await mkInstance(home.path, "a");
    await mkInstance(home.path, "b");
    const publish = (hostPort: number, hostIp = "127.0.0.1") => [
      { hostIp, hostPort, guestPort: 80, protocol: "tcp" },
    ];
    const bound = await ns.net(home.path, { op: "attach", instance: "a", publish: publish(18080) });
    assert.equal(bound.code, 1);
    assert.match(JSON.parse(bound.stdout).error, /Port 127\.0\.0\.1:18080\/tcp is already bound/);
    // The default network came up, but no lease, TAP or port table.
    const s = await state(home.path);
    assert.deepEqual(s.networks.map((n: { name: string }) => n.name), ["ovm0"]);
    assert.deepEqual(s.leases, []);
    assert.deepEqual((await links(ns)).map((l) => l.ifname), ["ovm0"]);
    assert.equal((await ns.nftTables()).length, 1);
    // 0.0.0.0 clashes with any address.
    const wild = await ns.net(home.path, {
      op: "attach",
      instance: "a",
      publish: publish(18080, "0.0.0.0"),
    });
    assert.equal(wild.code, 1);

    ok(await ns.net(home.path, { op: "attach", instance: "a", publish: publish(18081) }));
    const taken = await ns.net(home.path, { op: "attach", instance: "b", publish: publish(18081) });
    assert.equal(taken.code, 1);
    assert.match(
      JSON.parse(taken.stdout).error,
      /Port 127\.0\.0\.1:18081\/tcp is already published by instance "a"/,
    );
    assert.deepEqual((await state(home.path)).leases.map((l: { instance: string }) => l.instance), [
      "a",
    ]);
    assert.equal((await ns.nftTables()).length, 2);
  },
);

Deno.test(
  "published ports DNAT to the instance's address, from loopback and from another host",
  opts,
  async () => {
    await using ns = await netns();
    // Stand-ins for the guest and for a remote client: namespaces on veths, so the
    // DNAT, route_localnet and masquerade paths are the real kernel's.
    await using guest = await netns("ovmg");
    await using client = await netns("ovmc");
    await using home = await tempDir();
    await using www = await tempDir();
    await Deno.writeTextFile(join(www.path, "index.html"), "hello from the guest\n");
    await mkInstance(home.path, "web");
    const att = JSON.parse(ok(
      await ns.net(home.path, {
        op: "attach",
        instance: "web",
        publish: [
          { hostIp: "127.0.0.1", hostPort: 18080, guestPort: 80, protocol: "tcp" },
          { hostIp: "0.0.0.0", hostPort: 18090, guestPort: 80, protocol: "tcp" },
        ],
      }),
    ));
    const ip = (...a: string[]) => ns.exec("ip", a);
    const must = async (p: Promise<{ code: number; stderr: string }>) => {
      const r = await p;
      assert.equal(r.code, 0, r.stderr);
    };
    await must(
      ip("link", "add", "vg0", "type", "veth", "peer", "name", "vg1", "netns", guest.name),
    );
    await must(ip("link", "set", "vg0", "master", att.bridge, "up"));
    await must(guest.exec("ip", ["addr", "add", `${att.address}/${att.prefix}`, "dev", "vg1"]));
    await must(guest.exec("ip", ["link", "set", "vg1", "up"]));
    await must(guest.exec("ip", ["route", "add", "default", "via", att.gateway]));
    await must(guest.exec("busybox", ["httpd", "-p", "80", "-h", www.path]));

    await must(
      ip("link", "add", "vc0", "type", "veth", "peer", "name", "vc1", "netns", client.name),
    );
    await must(ip("addr", "add", "192.168.77.1/24", "dev", "vc0"));
    await must(ip("link", "set", "vc0", "up"));
    await must(client.exec("ip", ["addr", "add", "192.168.77.2/24", "dev", "vc1"]));
    await must(client.exec("ip", ["link", "set", "vc1", "up"]));

    const get = (n: Netns, url: string) => n.exec("curl", ["-sS", "--max-time", "5", url]);
    await waitFor(
      "the guest's httpd",
      async () => (await get(ns, `http://${att.address}/`)).code === 0,
      10_000,
    );
    assert.equal((await get(ns, "http://127.0.0.1:18080/")).stdout, "hello from the guest\n");
    assert.equal((await get(ns, "http://127.0.0.1:18090/")).stdout, "hello from the guest\n");
    assert.equal(
      (await get(client, "http://192.168.77.1:18090/")).stdout,
      "hello from the guest\n",
    );
    // 127.0.0.1:18080 is the host's loopback only: a remote client does not get it.
    assert.notEqual(
      (await get(client, "http://192.168.77.1:18080/")).stdout,
      "hello from the guest\n",
    );
    // The guest reaches the host (its gateway) and beyond it through NAT.
    assert.equal((await guest.exec("busybox", ["ping", "-c1", "-W2", att.gateway])).code, 0);
    assert.equal((await guest.exec("busybox", ["ping", "-c1", "-W2", "192.168.77.2"])).code, 0);

    // Detach removes the DNAT: the published port no longer answers.
    ok(await ns.net(home.path, { op: "detach", instance: "web" }));
    assert.notEqual((await get(ns, "http://127.0.0.1:18080/")).code, 0);
    assert.equal((await ns.nftTables()).length, 1);
  },
);

Deno.test(
  "a kill -9 at any step leaves records and tagged objects that prune and gc remove; no address is handed out twice",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    const kill = (point: string) => ({ OVM_FAILPOINT: `net:${point}` });

    // Create killed after the record: a later rm finds and removes it.
    const r1 = await ns.ovm(
      home.path,
      ["network", "create", "--subnet", "10.93.0.0/24", "k1"],
      kill("after-record"),
    );
    assert.equal(r1.code, 137, r1.stderr);
    assert.deepEqual((await state(home.path)).networks.map((n: { name: string }) => n.name), [
      "k1",
    ]);
    // Killed after the bridge, before its nft table.
    const r2 = await ns.ovm(
      home.path,
      ["network", "create", "--subnet", "10.94.0.0/24", "k2"],
      kill("after-bridge"),
    );
    assert.equal(r2.code, 137);
    assert.ok((await links(ns)).some((l) => l.ifname === "k2"));
    // A network create that the namespace can repair: the next attach brings k2 fully up.
    await mkInstance(home.path, "x1");
    const x1 = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "x1", network: "k2" })),
    );
    assert.equal(x1.address, "10.94.0.2");
    assert.equal((await ns.nftTables()).filter((t) => t.endsWith("_net_k2")).length, 1);

    // Attach killed after the lease, and after the TAP: the addresses stay taken.
    await mkInstance(home.path, "x2");
    await mkInstance(home.path, "x3");
    const a2 = await ns.net(
      home.path,
      { op: "attach", instance: "x2", network: "k2" },
      kill("after-lease"),
    );
    assert.equal(a2.code, 137);
    const a3 = await ns.net(home.path, {
      op: "attach",
      instance: "x3",
      network: "k2",
      publish: [{ hostIp: "127.0.0.1", hostPort: 18100, guestPort: 80, protocol: "tcp" }],
    }, kill("after-tap"));
    assert.equal(a3.code, 137);
    const leases = (await state(home.path)).leases;
    assert.deepEqual(
      leases.map((l: { instance: string; address: string }) => [l.instance, l.address]),
      [["x1", "10.94.0.2"], ["x2", "10.94.0.3"], ["x3", "10.94.0.4"]],
    );
    await mkInstance(home.path, "x4");
    const x4 = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "x4", network: "k2" })),
    );
    assert.equal(x4.address, "10.94.0.5");

    // x3's instance is gone (its start never finished), x2 exists but is not running.
    await Deno.remove(join(home.path, "instances", "x3"), { recursive: true });
    const pruned = JSON.parse(ok(await ns.net(home.path, { op: "prune", running: ["x1", "x4"] })));
    assert.deepEqual(pruned.leases, [{ network: "k2", address: "10.94.0.4", instance: "x3" }]);
    assert.ok(!pruned.links.includes(x1.tap) && !pruned.links.includes(x4.tap));
    const names = (await links(ns)).map((l) => l.ifname).sort();
    assert.deepEqual(names, ["k2", x1.tap, x4.tap].sort());
    assert.deepEqual(
      (await state(home.path)).leases.map((l: { instance: string }) => l.instance),
      ["x1", "x2", "x4"],
    );
    // The freed address is reused; the stopped instance's is not.
    await mkInstance(home.path, "x5");
    const x5 = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "x5", network: "k2" })),
    );
    assert.equal(x5.address, "10.94.0.4");

    // network prune (the CLI): every instance gone → every lease, TAP, table and network.
    await Deno.remove(join(home.path, "instances"), { recursive: true });
    const all = JSON.parse(ok(await ns.ovm(home.path, ["network", "prune", "--json"])));
    assert.deepEqual(all.networks.sort(), ["k1", "k2"]);
    assert.deepEqual(await links(ns), []);
    assert.deepEqual(await ns.nftTables(), []);
    assert.deepEqual(await state(home.path), { schemaVersion: 1, networks: [], leases: [] });
  },
);

Deno.test(
  "ovm gc removes the TAPs and rules of instances that are gone, but keeps networks",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    await mkInstance(home.path, "g1");
    const g1 = JSON.parse(ok(
      await ns.net(home.path, {
        op: "attach",
        instance: "g1",
        publish: [{ hostIp: "127.0.0.1", hostPort: 18200, guestPort: 80, protocol: "tcp" }],
      }),
    ));
    assert.equal((await ns.nftTables()).length, 2);
    await Deno.remove(join(home.path, "instances", "g1"), { recursive: true });
    // A tagged TAP no record names (a lease lost with its state file) is removed too.
    const fake = await ns.exec("ip", ["tuntap", "add", "dev", "ovt00000000", "mode", "tap"]);
    assert.equal(fake.code, 0);
    const tag = ((await links(ns)).find((l) => l.ifname === g1.tap)!.ifalias ?? "").replace(
      /tap:g1:0$/,
      "tap:lost:0",
    );
    await ns.exec("ip", ["link", "set", "dev", "ovt00000000", "alias", tag]);
    // Something that is not ovm's stays.
    await ns.exec("ip", ["tuntap", "add", "dev", "other0", "mode", "tap"]);
    const r = JSON.parse(ok(await ns.ovm(home.path, ["gc", "--json"])));
    assert.deepEqual(r.network.leases, [{ network: "ovm0", address: g1.address, instance: "g1" }]);
    assert.deepEqual((await links(ns)).map((l) => l.ifname).sort(), ["other0", "ovm0"]);
    assert.equal((await ns.nftTables()).length, 1);
    assert.deepEqual((await state(home.path)).networks.map((n: { name: string }) => n.name), [
      "ovm0",
    ]);
  },
);

Deno.test(
  "attach with a kept address leases exactly it on the network that holds it, and refuses it while another instance holds it",
  opts,
  async () => {
    await using ns = await netns();
    await using home = await tempDir();
    ok(await ns.ovm(home.path, ["network", "create", "--subnet", "10.95.0.0/24", "back"]));
    ok(await ns.ovm(home.path, ["network", "create", "--subnet", "10.96.0.0/24", "other"]));
    for (const id of ["src", "k1", "k2"]) await mkInstance(home.path, id);
    const src = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "src", network: "back" })),
    );
    assert.equal(src.address, "10.95.0.2");
    const before = (await links(ns)).map((l) => l.ifname).sort();

    // The source holds 10.95.0.2: a clone that must keep it is refused, with nothing made.
    const held = await ns.net(home.path, { op: "attach", instance: "k1", address: "10.95.0.2" });
    assert.equal(held.code, 1);
    assert.match(
      JSON.parse(held.stdout).error,
      /Address 10\.95\.0\.2 on network "back" is already held by instance "src"/,
    );
    // On a network whose subnet does not hold it, also refused.
    const elsewhere = await ns.net(home.path, {
      op: "attach",
      instance: "k1",
      network: "other",
      address: "10.95.0.2",
    });
    assert.equal(elsewhere.code, 1);
    assert.match(
      JSON.parse(elsewhere.stdout).error,
      /Address 10\.95\.0\.2 is not a guest address of network "other" \(10\.96\.0\.0\/24\)/,
    );
    assert.deepEqual((await links(ns)).map((l) => l.ifname).sort(), before);
    assert.deepEqual(
      (await state(home.path)).leases.map((l: { instance: string }) => l.instance),
      ["src"],
    );

    // Once the source is gone, the first clone takes the address and its MAC (on "back",
    // found from the address); a second one is refused, naming the first.
    ok(await ns.net(home.path, { op: "detach", instance: "src", release: true }));
    const k1 = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "k1", address: "10.95.0.2" })),
    );
    assert.deepEqual([k1.network, k1.address, k1.mac], ["back", "10.95.0.2", src.mac]);
    assert.equal((await links(ns)).find((l) => l.ifname === k1.tap)?.master, "back");
    const k2 = await ns.net(home.path, { op: "attach", instance: "k2", address: "10.95.0.2" });
    assert.equal(k2.code, 1);
    assert.match(JSON.parse(k2.stdout).error, /already held by instance "k1"/);
    assert.deepEqual(
      (await state(home.path)).leases.map((l: { instance: string }) => l.instance),
      ["k1"],
    );
    // Without a kept address, k2 gets the next free one as usual.
    const k2b = JSON.parse(
      ok(await ns.net(home.path, { op: "attach", instance: "k2", network: "back" })),
    );
    assert.equal(k2b.address, "10.95.0.3");
  },
);
