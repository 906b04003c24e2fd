/**
 * `ovm convert` end to end with real components: an image built by umoci,
 * the loopback docker-registry fed by skopeo, ovm run under QEMU TCG,
 * cloud-init's own schema check, blkid and mtools on the seed disk.
 */
import nodeAssert from "node:assert/strict";
import { join } from "node:path";
import { ensureSystem } from "../../src/system/mod.ts";
import { ContentStore, loadArtifact } from "../../src/store/mod.ts";
import { locateDiskInTar } from "../../src/disk/mod.ts";
import { SEED_MEDIA_TYPE } from "../../src/convert/mod.ts";
import { assertExit, listFiles, ovm, tempDir } from "../_helpers/cli.ts";
import { TEST_CACHE } from "../_helpers/vm.ts";
import { startRegistry } from "../_helpers/registry.ts";
import {
  buildSelfBootingImage,
  buildTestImage,
  IMAGE_TAG,
  sh,
  writeLayout,
  writeTar,
} from "../_helpers/convert.ts";

const assert = (v: unknown, msg?: string) => nodeAssert.ok(v, msg);
const assertEquals = (a: unknown, b: unknown) => nodeAssert.deepEqual(a, b);

/** A temp home with the system kernel and initrd installed from the shared test cache. */
async function systemHome(): Promise<{ path: string } & AsyncDisposable> {
  const t = await tempDir("ovm-convert-test-");
  await ensureSystem(t.path, { cacheDir: TEST_CACHE });
  return t;
}

let imageDir: string | undefined;
/** The umoci test image, built once per file. */
async function testImage(): Promise<string> {
  if (!imageDir) {
    imageDir = join(await Deno.makeTempDir({ prefix: "ovm-convert-image-" }), "layout");
    await buildTestImage(imageDir);
  }
  return imageDir;
}

addEventListener("unload", () => {
  if (imageDir) Deno.removeSync(join(imageDir, ".."), { recursive: true });
});

async function convertJson(home: string, ...args: string[]) {
  const r = await ovm(home, "convert", ...args, "--json", "--progress", "none");
  assertExit(r, 0);
  return JSON.parse(r.stdout);
}

function assertWorkloadRan(stdout: string): void {
  for (
    const line of [
      "ARGV: hello two words",
      "CWD: /work",
      "UID: 1000 GID: 1000",
      "ENV-GREETING: hi there",
      "ENV-SPACED: a 'quoted' $value",
      "DOOMED: absent",
      "KEPT: kept from layer 1",
      "OVMS-EXIT: 7",
    ]
  ) {
    assert(stdout.includes(line), `console lacks "${line}":\n${stdout}`);
  }
}

async function noBuildDirsLeft(home: string): Promise<void> {
  for await (const e of Deno.readDir(home)) {
    assert(!e.name.startsWith(".convert-"), `build dir left behind: ${e.name}`);
  }
}

Deno.test("convert turns an umoci image into a VM that keeps argv, env, cwd and uid", async () => {
  await using home = await systemHome();
  const layout = await testImage();
  const res = await convertJson(home.path, `oci:${layout}:${IMAGE_TAG}`, "-t", "test/app:1");
  assertEquals(res.ref, "test/app:1");
  assertEquals(res.image.layers, 2);
  assertEquals(res.bootstrap.config.entrypoint, ["/app/entry.sh"]);
  assertEquals(res.bootstrap.config.cmd, ["hello", "two words"]);
  assertEquals(res.bootstrap.config.user, "1000:1000");
  assertEquals(res.bootstrap.config.exposedPorts, ["8080/tcp"]);
  assertEquals(res.bootstrap.config.stopSignal, "SIGINT");
  const store = await ContentStore.open(home.path);
  const a = await loadArtifact(store, "test/app:1");
  assertEquals(a.manifest.diskLayers.length, 1);
  assertEquals(a.manifest.diskLayers[0].format, "raw");
  assert(a.manifest.kernel.args.includes("ovms.mode=exec"), a.manifest.kernel.args);
  assert(a.manifest.initrd, "an initrd");
  await noBuildDirsLeft(home.path);

  const run = await ovm(home.path, "run", "test/app:1", "--accel", "tcg", "--net", "none");
  assertWorkloadRan(run.stdout);
  assertEquals(run.code, 7);

  // Container-style overrides at run time: a new entrypoint drops the image's cmd.
  const over = await ovm(
    home.path,
    "run",
    "test/app:1",
    "--accel",
    "tcg",
    "--net",
    "none",
    "--entrypoint",
    "/app/entry.sh",
    "-e",
    "GREETING=overridden",
    "-e",
    "SPACED",
    "x",
    "y z",
  );
  for (const line of ["ARGV: x y z", "ENV-GREETING: overridden", "ENV-SPACED: ", "CWD: /work"]) {
    const re = new RegExp(`^${line.replace(/[$^*+?.()|[\]{}\\]/g, "\\$&")}\r?$`, "m");
    assert(re.test(over.stdout), `console lacks "${line}":\n${over.stdout}`);
  }
  assertEquals(over.code, 7);
});

Deno.test("converting the same image twice gives the same disk digest, ext4 and erofs", async () => {
  await using home = await systemHome();
  const src = `oci:${await testImage()}:${IMAGE_TAG}`;
  const a = await convertJson(home.path, src, "-t", "test/a:1");
  // A second later, so any wall-clock time leaking into the disk would show.
  await new Promise((r) => setTimeout(r, 1100));
  const b = await convertJson(home.path, src, "-t", "test/b:1");
  assertEquals(a.disk.digest, b.disk.digest);
  const e1 = await convertJson(home.path, src, "-t", "test/e1:1", "--fs", "erofs");
  const e2 = await convertJson(home.path, src, "-t", "test/e2:1", "--fs", "erofs");
  assertEquals(e1.disk.digest, e2.disk.digest);
  assertEquals(e1.disk.fs, "erofs");
  assert(e1.disk.size < a.disk.size, "erofs carries no free-space buffer");
  // The read-only erofs root boots with a tmpfs overlay and runs the same workload.
  const run = await ovm(home.path, "run", "test/e1:1", "--accel", "tcg", "--net", "none");
  assertWorkloadRan(run.stdout);
});

Deno.test("convert pulls an image from a registry and pushes the artifact back", async () => {
  await using home = await systemHome();
  await using reg = await startRegistry();
  const layout = await testImage();
  await sh("skopeo", [
    "copy",
    "--dest-tls-verify=false",
    `oci:${layout}:${IMAGE_TAG}`,
    `docker://${reg.host}/test/app:${IMAGE_TAG}`,
  ]);
  const fromLayout = await convertJson(home.path, `oci:${layout}:${IMAGE_TAG}`, "-t", "l/app:1");
  const res = await convertJson(
    home.path,
    `${reg.host}/test/app:${IMAGE_TAG}`,
    "-t",
    "r/app:1",
    "--push",
    `${reg.host}/vms/app:1`,
  );
  assertEquals(res.disk.digest, fromLayout.disk.digest);
  assertEquals(res.pushed.digest, res.digest);
  // The pushed artifact is an ordinary OVMS artifact: ovm pull accepts it (no --any).
  await using other = await tempDir();
  const pulled = await ovm(other.path, "pull", `${reg.host}/vms/app:1`, "--json");
  assertExit(pulled, 0);
  assertEquals(JSON.parse(pulled.stdout).digest, res.digest);
});

Deno.test("the cloud-init profile writes a cidata seed whose user-data passes cloud-init schema", async () => {
  await using home = await systemHome();
  await using work = await tempDir();
  const res = await convertJson(
    home.path,
    `oci:${await testImage()}:${IMAGE_TAG}`,
    "-t",
    "test/ci:1",
    "--profile",
    "cloud-init",
  );
  const store = await ContentStore.open(home.path);
  const a = await loadArtifact(store, "test/ci:1");
  assert(a.manifest.kernel.args.includes("ovms.mode=switch_root"), a.manifest.kernel.args);
  const seedLayer = a.oci.layers.find((l) => l.mediaType === SEED_MEDIA_TYPE);
  if (!seedLayer) throw new Error("no seed layer");
  assertEquals(seedLayer.digest, res.seed.digest);
  assertEquals(a.manifest.annotations?.["ovms.convert.seed"], res.seed.digest);
  // The seed disk sits at offset 512 of its layer tar, like every disk layer.
  const blob = store.blobPath(seedLayer.digest);
  const loc = await locateDiskInTar(blob);
  const seed = join(work.path, "seed.raw");
  const bytes = await Deno.readFile(blob);
  await Deno.writeFile(seed, bytes.subarray(loc.offset, loc.offset + loc.size));
  assertEquals((await sh("blkid", ["-o", "value", "-s", "LABEL", seed])).trim(), "cidata");
  assertEquals((await sh("blkid", ["-o", "value", "-s", "TYPE", seed])).trim(), "vfat");
  const listing = await sh("mdir", ["-b", "-i", seed, "::"]);
  assert(listing.includes("user-data") && listing.includes("meta-data"), listing);
  const userData = join(work.path, "user-data");
  await sh("mcopy", ["-i", seed, "::user-data", userData]);
  const text = await Deno.readTextFile(userData);
  assert(text.startsWith("#cloud-config\n"), text);
  assert(text.includes("/usr/local/sbin/ovms-workload"), text);
  assert(text.includes("export GREETING='hi there'"), text);
  assert(text.includes("cd '/work'"), text);
  assert(text.includes("'/app/entry.sh' 'hello' 'two words'"), text);
  const schema = await new Deno.Command("cloud-init", {
    args: ["schema", "--config-file", userData],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  assert(
    schema.success,
    `cloud-init schema failed: ${dec.decode(schema.stdout)}${dec.decode(schema.stderr)}`,
  );
  // The same seed is in the root filesystem, where NoCloud finds it without the disk.
  const disk = a.manifest.diskLayers[0];
  const dl = await locateDiskInTar(store.blobPath(disk.ref));
  const raw = join(work.path, "root.raw");
  const rb = await Deno.readFile(store.blobPath(disk.ref));
  await Deno.writeFile(raw, rb.subarray(dl.offset, dl.offset + dl.size));
  const inRoot = await sh("debugfs", ["-R", "cat /var/lib/cloud/seed/nocloud/user-data", raw]);
  assertEquals(inRoot, text);
});

Deno.test("convert refuses an image with no Entrypoint and no Cmd unless --profile none", async () => {
  await using home = await systemHome();
  await using work = await tempDir();
  const layer = join(work.path, "l.tar");
  await writeTar(layer, [{ name: "sbin/", type: "dir" }, {
    name: "sbin/init",
    data: "#!/bin/sh\n",
  }]);
  const layout = join(work.path, "layout");
  await writeLayout(layout, [{ path: layer }], { config: { Env: ["A=1"] } });
  const r = await ovm(home.path, "convert", `oci:${layout}:1`, "-t", "x/none:1");
  assertExit(r, 2);
  assert(r.stderr.includes("no Entrypoint and no Cmd"), r.stderr);
  const store = await ContentStore.open(home.path);
  assertEquals((await store.listRefs()).length, 0);
  const ok = await convertJson(home.path, `oci:${layout}:1`, "-t", "x/none:1", "--profile", "none");
  assertEquals(ok.bootstrap.config.env, ["A=1"]);
  const a = await loadArtifact(store, "x/none:1");
  assert(a.manifest.kernel.args.includes("ovms.mode=switch_root"), a.manifest.kernel.args);
});

Deno.test("the none profile boots the image's own /sbin/init", async () => {
  await using home = await systemHome();
  await using work = await tempDir();
  const layout = join(work.path, "layout");
  await buildSelfBootingImage(layout);
  const r = await ovm(home.path, "convert", `oci:${layout}:${IMAGE_TAG}`, "-t", "self/boot:1");
  assertExit(r, 2);
  await convertJson(
    home.path,
    `oci:${layout}:${IMAGE_TAG}`,
    "-t",
    "self/boot:1",
    "--profile",
    "none",
  );
  const run = await ovm(home.path, "run", "self/boot:1", "--accel", "tcg", "--net", "none");
  assert(/SELF-BOOT: pid 1 ovms.mode=switch_root/.test(run.stdout), run.stdout);
});

Deno.test("convert leaves nothing in the store when a layer is hostile or unknown", async () => {
  await using home = await systemHome();
  await using work = await tempDir();
  const cases: { name: string; layer: () => Promise<{ path: string; mediaType?: string }> }[] = [
    {
      name: "dotdot",
      layer: async () => {
        const p = join(work.path, "dotdot.tar");
        await writeTar(p, [{ name: "bin/", type: "dir" }, { name: "../../x", data: "evil" }]);
        return { path: p };
      },
    },
    {
      name: "hardlink",
      layer: async () => {
        const p = join(work.path, "hl.tar");
        await writeTar(p, [{ name: "pw", type: "hardlink", linkname: "../../../etc/shadow" }]);
        return { path: p };
      },
    },
    {
      name: "mediatype",
      layer: async () => {
        const p = join(work.path, "mt.tar");
        await writeTar(p, [{ name: "a", data: "a" }]);
        return { path: p, mediaType: "application/vnd.oci.image.layer.v1.tar+lzma" };
      },
    },
  ];
  const store = await ContentStore.open(home.path);
  const before = await listFiles(join(home.path, "store"));
  for (const c of cases) {
    const layout = join(work.path, `layout-${c.name}`);
    await writeLayout(layout, [await c.layer()], { config: { Cmd: ["/bin/true"] } });
    const r = await ovm(home.path, "convert", `oci:${layout}:1`, "-t", `bad/${c.name}:1`);
    assertExit(r, 2);
  }
  assertEquals((await store.listRefs()).length, 0);
  assertEquals(await listFiles(join(home.path, "store")), before);
  await noBuildDirsLeft(home.path);
});
