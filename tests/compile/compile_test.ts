import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "../_helpers/cli.ts";

const root = new URL("../../", import.meta.url).pathname;
const denort = Deno.env.get("DENORT_BIN");

Deno.test({
  name: "deno task compile builds a working single binary",
  ignore: !denort,
  async fn() {
    await using tmp = await tempDir();
    const out = join(tmp.path, "ovm");
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "scripts/compile.ts", out],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(res.code, 0, new TextDecoder().decode(res.stderr));
    const v = await new Deno.Command(out, { args: ["version", "--json"], stdout: "piped" })
      .output();
    assert.equal(v.code, 0);
    assert.equal(JSON.parse(new TextDecoder().decode(v.stdout)).ovms, "0.1");
  },
});

if (!denort) {
  console.error(
    "compile test skipped: no denort runtime here (deno compile downloads it; set DENORT_BIN to a local copy)",
  );
}

Deno.test("the compile task grants exactly the documented permissions", async () => {
  const { PERMISSIONS, compileArgs } = await import("../../scripts/compile.ts");
  const args = compileArgs("x");
  assert.ok(!args.includes("--allow-all") && !args.includes("-A"));
  for (const p of PERMISSIONS) assert.ok(args.includes(p));
  const cfg = JSON.parse(await Deno.readTextFile(join(root, "deno.json")));
  assert.match(cfg.tasks.compile, /scripts\/compile\.ts/);
});
