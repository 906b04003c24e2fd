/**
 * Accelerator choice: KVM only when /dev/kvm opens and it is not PVM.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { kvmUnusableReason, parseAccel } from "../../src/vmm/accel.ts";

Deno.test("auto refuses KVM when the kvm_pvm module is loaded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const dev = join(dir, "kvm");
    await Deno.writeFile(dev, new Uint8Array());
    await Deno.mkdir(join(dir, "module", "kvm_pvm"), { recursive: true });
    const why = await kvmUnusableReason({
      devKvm: dev,
      sysModule: join(dir, "module"),
      procModules: join(dir, "none"),
    });
    assert.match(why ?? "", /PVM/);
    await Deno.remove(join(dir, "module", "kvm_pvm"));
    await Deno.writeTextFile(join(dir, "modules"), "kvm_pvm 1 0 - Live 0x0\nkvm 2 1 kvm_pvm\n");
    assert.match(
      (await kvmUnusableReason({
        devKvm: dev,
        sysModule: join(dir, "module"),
        procModules: join(dir, "modules"),
      })) ?? "",
      /PVM/,
    );
    await Deno.writeTextFile(join(dir, "modules"), "kvm_intel 1 0 - Live 0x0\n");
    assert.equal(
      await kvmUnusableReason({
        devKvm: dev,
        sysModule: join(dir, "module"),
        procModules: join(dir, "modules"),
      }),
      undefined,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("auto refuses KVM when /dev/kvm is missing", async () => {
  assert.match((await kvmUnusableReason({ devKvm: "/nonexistent/kvm" })) ?? "", /not usable/);
});

Deno.test("--accel accepts auto, kvm and tcg only", () => {
  assert.equal(parseAccel(undefined), "auto");
  assert.equal(parseAccel("tcg"), "tcg");
  assert.throws(() => parseAccel("xen"), /Invalid --accel "xen"/);
});
