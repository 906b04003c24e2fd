/**
 * `ovm snapshot` and snapshot restores refuse bad input before touching a VM
 * (no boot needed).
 */
import assert from "node:assert/strict";
import { ovmIn } from "../_helpers/runtime.ts";
import { checkOptions, readRestoreRecord } from "../../src/runtime/mod.ts";
import type { RestoreRecord } from "../../src/runtime/mod.ts";
import { ConflictError, ValidationError } from "../../src/errors.ts";
import type { Manifest } from "../../src/manifest/mod.ts";

const RECORD: RestoreRecord = {
  recordVersion: 1,
  vmm: "qemu",
  vmmVersion: "7.2.22",
  machine: "q35",
  accel: "tcg",
  memoryBytes: 256 << 20,
  cpus: 1,
  kernelDigest: `sha256:${"a".repeat(64)}`,
  diskChain: [],
  ramsnapVersion: 1,
  cmdline: "console=ttyS0",
  network: "none",
  devices: [],
};

Deno.test("ovm snapshot needs a tag and an existing instance", async () => {
  const home = await Deno.makeTempDir({ prefix: "ovm-snap-refuse-" });
  try {
    const noTag = await ovmIn(home, "snapshot", "web");
    assert.equal(noTag.code, 2);
    assert.match(noTag.stderr, /Missing -t NAME:TAG/);
    const missing = await ovmIn(home, "snapshot", "web", "-t", "web:warm");
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /No instance "web"/);
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("restore options that contradict the snapshot name the field and both values", () => {
  assert.throws(
    () => checkOptions(RECORD, { memoryBytes: 512 << 20 }),
    (e) =>
      e instanceof ConflictError &&
      /memory size is "536870912".*recorded "268435456"/.test(e.message),
  );
  assert.throws(
    () => checkOptions(RECORD, { cpus: 2 }),
    (e) => e instanceof ConflictError && /CPU count is "2".*recorded "1"/.test(e.message),
  );
  assert.throws(
    () => checkOptions(RECORD, { net: "user" }),
    (e) => e instanceof ConflictError && /network mode is "user".*recorded "none"/.test(e.message),
  );
  assert.throws(() => checkOptions(RECORD, { cmd: ["sh"] }), ValidationError);
  checkOptions(RECORD, { memoryBytes: 256 << 20, cpus: 1, net: "none", accel: "auto" });
});

Deno.test("a snapshot manifest without a restore record is refused with a hint", () => {
  const m = { name: "x", version: "1", annotations: {} } as unknown as Manifest;
  assert.throws(() => readRestoreRecord(m), /no "ovms.snapshot.restore" annotation/);
  const newer = {
    ...m,
    annotations: { "ovms.snapshot.restore": JSON.stringify({ recordVersion: 9 }) },
  } as unknown as Manifest;
  assert.throws(() => readRestoreRecord(newer), /unknown shape/);
});
