/**
 * The guest identity document and the `--net` flag (pure; no VM, no kernel objects).
 */
import * as assert from "node:assert/strict";
import { identityDocument } from "../../src/system/mod.ts";
import { IDENTITY_SIZE } from "../../src/vmm/adapter.ts";
import { keptGuestAddress, parseNetFlag } from "../../src/runtime/mod.ts";
import { ValidationError } from "../../src/errors.ts";
import { macFor, parseAddr, parseSubnet, tapName } from "../../src/net/mod.ts";

Deno.test("the identity document has a fixed size, the generation first, and one line per NIC", () => {
  const doc = identityDocument({
    generation: "0b9a6c2e-1f7e-4d55-9a0e-3c3d2f1e0a11",
    hostname: "c1",
    nics: [{
      mac: "02:4f:0a:59:00:03",
      address: "10.89.0.3/24",
      gateway: "10.89.0.1",
      dns: "9.9.9.9",
    }],
  });
  assert.equal(doc.length, IDENTITY_SIZE);
  const lines = doc.split("\n").filter(Boolean);
  assert.equal(lines[0], "generation=0b9a6c2e-1f7e-4d55-9a0e-3c3d2f1e0a11");
  assert.ok(lines.includes("hostname=c1"));
  assert.ok(lines.includes("net0=02:4f:0a:59:00:03 10.89.0.3/24 10.89.0.1 9.9.9.9"));
  assert.match(lines.find((l) => l.startsWith("seed="))!, /^seed=[0-9a-f]{64}$/);
  // A new seed every time: two clones never share RNG input.
  const again = identityDocument({ generation: "g", nics: [] });
  assert.notEqual(again.match(/seed=(\w+)/)![1], doc.match(/seed=(\w+)/)![1]);
  assert.ok(again.includes("\nnet") === false);
  assert.throws(
    () => identityDocument({ generation: "a,b", nics: [] }),
    (e) => e instanceof ValidationError && /Invalid generation "a,b"/.test(e.message),
  );
  assert.throws(
    () => identityDocument({ generation: "g", hostname: "x".repeat(600), nics: [] }),
    /over 512/,
  );
});

Deno.test("--net takes none, user and bridge[=NETWORK], and refuses the rest naming the value", () => {
  assert.deepEqual(parseNetFlag(undefined, []), { mode: "user" });
  assert.deepEqual(parseNetFlag("bridge", []), { mode: "bridge" });
  assert.deepEqual(parseNetFlag("bridge=back", []), { mode: "bridge", network: "back" });
  for (const bad of ["tap", "bridge=", "user=x", "bridge=a=b", "Bridge"]) {
    assert.throws(
      () => parseNetFlag(bad, []),
      (e) => e instanceof ValidationError && e.message === `Invalid --net "${bad}"`,
    );
  }
  assert.throws(
    () =>
      parseNetFlag("none", [{ hostIp: "127.0.0.1", hostPort: 1, guestPort: 1, protocol: "tcp" }]),
    /-p needs a network/,
  );
});

Deno.test("MACs follow addresses, TAP names fit IFNAMSIZ, and subnets are checked", () => {
  assert.equal(macFor(parseAddr("10.89.0.2")), "02:4f:0a:59:00:02");
  assert.equal(macFor(parseAddr("172.16.255.254")), "02:4f:ac:10:ff:fe");
  const tap = tapName("/var/lib/ovm", "a-very-long-instance-name-that-goes-on-and-on", 0);
  assert.match(tap, /^ovt[0-9a-f]{8}0$/);
  assert.ok(tap.length <= 15);
  assert.notEqual(tapName("/h1", "x", 0), tapName("/h2", "x", 0));
  assert.deepEqual(parseSubnet("10.89.0.0/24"), { base: parseAddr("10.89.0.0"), prefix: 24 });
  for (const bad of ["10.89.0.0", "10.89.0.0/31", "10.89.0.0/4", "300.1.1.0/24", "10.89.0.1/24"]) {
    assert.throws(() => parseSubnet(bad), ValidationError, bad);
  }
});

Deno.test("a clone that keeps its identity reads the snapshot's address from the recorded ovms.net=", () => {
  const kept = (c: string) => keptGuestAddress(c);
  assert.equal(kept("console=ttyS0 ovms.net=10.89.0.2/24,10.89.0.1,9.9.9.9 quiet"), "10.89.0.2");
  assert.equal(kept("ovms.net=10.90.0.7/16,10.90.0.1"), "10.90.0.7");
  assert.equal(kept("ovms.net=10.90.0.7/16"), "10.90.0.7");
  for (const none of ["ovms.net=none", "ovms.net=dhcp", "console=ttyS0", "xovms.net=10.1.1.1/24"]) {
    assert.equal(kept(none), undefined, none);
  }
});
