/**
 * Images built by podman 4.3 and buildah 1.28 (the real binaries, their
 * storage confined to a temp directory), pushed by podman to a real
 * docker-registry 2.8, converted by `ovm convert` and booted under QEMU TCG.
 * The workload prints a report of every semantic a container image carries
 * (argv from ENTRYPOINT+CMD, WORKDIR, ENV, USER by name and by number, a
 * whiteout, an opaque directory, a symlink, a hardlink, a setuid file, an
 * owner, a user xattr) and exits with a chosen code; the same image under
 * `podman run` is the reference the VM's report is compared with.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ensureSystem } from "../../src/system/mod.ts";
import { assertExit, ovm, tempDir } from "../_helpers/cli.ts";
import { needsPodman, type Podman, startPodman } from "../_helpers/podman.ts";
import { startRegistry } from "../_helpers/registry.ts";
import { sh } from "../_helpers/convert.ts";
import { consoleTail, TEST_CACHE } from "../_helpers/vm.ts";

const podmanOk = await needsPodman();

/** The workload: one `R: key=value` line per semantic, then the exit code asked for. */
const REPORT = `#!/bin/sh
r() { echo "R: $1=$2"; }
r argv "$(printf '%s|' "$@")"
r cwd "$(pwd)"
r uid "$(id -u)"
r gid "$(id -g)"
r groups "$(id -G)"
r home "$HOME"
r path "$PATH"
r greeting "$GREETING"
r layered "$LAYERED"
r doomed "$(if [ -e /etc/doomed ]; then echo present; else echo absent; fi)"
r opaque "$(ls -A /d | tr '\\n' ' ')"
r kept "$(cat /kept/file)"
r symlink "$(readlink /link) $(cat /link)"
r hardlink "$(stat -c %h /h1) $([ "$(stat -c %i /h1)" = "$(stat -c %i /h2)" ] && echo same-inode || echo two-inodes)"
r setuid "$(stat -c '%a %U:%G' /usr/bin/suid)"
r owner "$(stat -c '%a %U:%G' /home/app)"
r xattr "$(getfattr --absolute-names --only-values -n user.ovm /d/new 2>&1)"
exit "\${EXIT_CODE:-7}"
`;

/**
 * Layer by layer: the root (busybox, getfattr/setfattr with the libc they
 * need, passwd and group naming "app"); busybox's applets; a layer with
 * /d/old and /etc/doomed; then one that deletes /etc/doomed (a whiteout),
 * recreates /d (an opaque directory on overlay storage) and makes the
 * symlink, hardlink, setuid file, owner and xattr.
 */
const CONTAINERFILE = `FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /d /kept /home/app && echo old > /d/old && echo kept > /kept/file && \\
    echo doomed > /etc/doomed
RUN rm /etc/doomed && rm -rf /d && mkdir /d && echo new > /d/new && \\
    setfattr -n user.ovm -v kept /d/new && ln -s /d/new /link && \\
    echo x > /h1 && ln /h1 /h2 && cp /bin/busybox /usr/bin/suid && chmod 4755 /usr/bin/suid && \\
    chown app:app /home/app && chmod 700 /home/app
USER app
WORKDIR /work/dir
ENV GREETING="hi there" LAYERED=one
ENTRYPOINT ["/app/report.sh", "from-entrypoint"]
CMD ["from-cmd", "two words"]
`;

/** What the report says for the USER app image (podman's reference and ovm's VM alike). */
const NAMED_REPORT: Record<string, string> = {
  argv: "from-entrypoint|from-cmd|two words|",
  cwd: "/work/dir",
  uid: "1000",
  gid: "1001",
  groups: "1001 3000",
  home: "/home/app",
  path: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  greeting: "hi there",
  layered: "one",
  doomed: "absent",
  opaque: "new ",
  kept: "kept",
  symlink: "/d/new new",
  hardlink: "2 same-inode",
  setuid: "4755 root:root",
  owner: "700 app:app",
  xattr: "kept",
};

/** The buildah re-configuration: USER 4321 (no /etc/passwd line), another ENV, exit 3. */
const NUMERIC_REPORT: Record<string, string> = {
  ...NAMED_REPORT,
  uid: "4321",
  gid: "0",
  groups: "0",
  home: "/",
  layered: "two",
};

async function buildContext(dir: string): Promise<void> {
  const root = join(dir, "rootfs");
  for (const d of ["bin", "etc", "app", "lib64", "lib/x86_64-linux-gnu", "usr/bin"]) {
    await Deno.mkdir(join(root, d), { recursive: true });
  }
  await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
  // getfattr/setfattr (package attr) are dynamic: their libc and loader come along.
  for (const f of ["usr/bin/getfattr", "usr/bin/setfattr", "lib/x86_64-linux-gnu/libc.so.6"]) {
    await Deno.copyFile(`/${f}`, join(root, f));
  }
  await Deno.copyFile("/lib64/ld-linux-x86-64.so.2", join(root, "lib64/ld-linux-x86-64.so.2"));
  await Deno.writeTextFile(
    join(root, "etc/passwd"),
    "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
  );
  await Deno.writeTextFile(join(root, "etc/group"), "root:x:0:\napp:x:1001:\nextra:x:3000:app\n");
  await Deno.writeTextFile(join(root, "app/report.sh"), REPORT);
  await Deno.chmod(join(root, "app/report.sh"), 0o755);
  await Deno.writeTextFile(join(dir, "Containerfile"), CONTAINERFILE);
}

function parseReport(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.replaceAll("\r", "").matchAll(/^R: (\w+)=(.*)$/gm)) out[m[1]] = m[2];
  return out;
}

interface LayerEntry {
  name: string;
  type: string;
  mode: number;
  linkname: string;
  xattrs: Record<string, string>;
}

const PY_LIST = `
import json, sys, tarfile
types = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}
with tarfile.open(sys.argv[1]) as t:
    print(json.dumps([{"name": m.name, "type": types.get(m.type, "other"), "mode": m.mode,
        "linkname": m.linkname,
        "xattrs": {k[len("SCHILY.xattr."):]: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}}
        for m in t.getmembers()]))
`;

/** The manifest of `repo:tag` in the registry, OCI or Docker v2 schema 2. */
async function fetchManifest(regUrl: string, repo: string, tag: string) {
  const res = await fetch(`${regUrl}/v2/${repo}/manifests/${tag}`, {
    headers: {
      accept: "application/vnd.oci.image.manifest.v1+json, " +
        "application/vnd.docker.distribution.manifest.v2+json",
    },
  });
  assert.equal(res.status, 200);
  return await res.json();
}

/** Every layer of `repo:tag` in the registry, listed by Python's tarfile (not ovm's reader). */
async function listLayers(regUrl: string, repo: string, tag: string, dir: string) {
  const manifest = await fetchManifest(regUrl, repo, tag);
  const layers: LayerEntry[][] = [];
  for (const l of manifest.layers) {
    const blob = await fetch(`${regUrl}/v2/${repo}/blobs/${l.digest}`);
    const file = join(dir, l.digest.replace(":", "-"));
    await Deno.writeFile(file, new Uint8Array(await blob.arrayBuffer()));
    layers.push(JSON.parse(await sh("python3", ["-c", PY_LIST, file])));
    await Deno.remove(file);
  }
  return { manifest, layers };
}

/** `ovm convert SRC -t TAG --json`, asserting exit 0. */
async function convert(home: string, src: string, tag: string) {
  const r = await ovm(home, "convert", src, "-t", tag, "--json", "--progress", "none");
  assertExit(r, 0);
  return JSON.parse(r.stdout);
}

/** The image under `podman run` (runc): the reference report and exit code. */
async function podmanRun(p: Podman, image: string, ...flags: string[]) {
  const r = await p.podman(["run", "--rm", "--network", "none", ...flags, image], {
    allowFailure: true,
  });
  return { code: r.code, report: parseReport(r.stdout), stderr: r.stderr };
}

Deno.test({
  name:
    "images built by podman and buildah keep every semantic when ovm converts and boots them, and the workload's exit code is ovm run's",
  ...podmanOk,
  timeout: 1_200_000,
  async fn(t) {
    await using podman = await startPodman();
    await using reg = await startRegistry();
    await using work = await tempDir("ovm-podman-work-");
    await using home = await tempDir("ovm-podman-home-");
    await ensureSystem(home.path, { cacheDir: TEST_CACHE });
    const ctx = join(work.path, "ctx");
    await buildContext(ctx);
    // The conversion of the OCI gzip push, for the other formats to compare with.
    let named:
      | { image: { manifestDigest: string }; unpack: unknown; bootstrap: { config: unknown } }
      | undefined;

    // podman build, then a buildah re-configuration of the same image with a numeric USER.
    await podman.podman(["build", "--network", "none", "-t", "localhost/ovm-test/report:1", ctx]);
    const ctr = (await podman.buildah(["from", "localhost/ovm-test/report:1"])).stdout.trim();
    await podman.buildah([
      "config",
      "--user",
      "4321",
      "--env",
      "LAYERED=two",
      "--env",
      "EXIT_CODE=3",
      ctr,
    ]);
    await podman.buildah(["commit", "-q", ctr, "localhost/ovm-test/numeric:1"]);
    await podman.buildah(["rm", ctr]);
    for (const name of ["report", "numeric"]) {
      await podman.podman([
        "push",
        "--tls-verify=false",
        `localhost/ovm-test/${name}:1`,
        `${reg.host}/podman/${name}:1`,
      ]);
    }

    await t.step(
      "the layers podman pushed carry a whiteout, an opaque directory, links, setuid and an xattr",
      async () => {
        const { manifest, layers } = await listLayers(reg.url, "podman/report", "1", work.path);
        assert.equal(manifest.mediaType, "application/vnd.oci.image.manifest.v1+json");
        const last = layers.at(-1)!;
        const entry = (name: string) => {
          const e = last.find((x) => x.name === name);
          assert.ok(e, `the last layer has no "${name}": ${last.map((x) => x.name).join(" ")}`);
          return e;
        };
        entry("etc/.wh.doomed");
        entry("d/.wh..wh..opq");
        assert.equal(entry("link").type, "symlink");
        assert.equal(entry("link").linkname, "/d/new");
        assert.equal(entry("h2").type, "hardlink");
        assert.equal(entry("h2").linkname, "h1");
        assert.equal(entry("usr/bin/suid").mode & 0o7777, 0o4755);
        assert.deepEqual(entry("d/new").xattrs, { "user.ovm": "kept" });
        // d/old lives in a lower layer only: the opaque directory is what hides it.
        assert.ok(layers.slice(0, -1).some((l) => l.some((x) => x.name === "d/old")));
        assert.ok(!last.some((x) => x.name === "d/.wh.old"));
      },
    );

    await t.step("podman run gives the reference reports", async () => {
      const named = await podmanRun(podman, "localhost/ovm-test/report:1");
      assert.equal(named.code, 7, named.stderr);
      assert.deepEqual(named.report, NAMED_REPORT);
      // --passwd=false: podman would otherwise add a passwd line with HOME=WORKDIR for uid 4321.
      const numeric = await podmanRun(podman, "localhost/ovm-test/numeric:1", "--passwd=false");
      assert.equal(numeric.code, 3, numeric.stderr);
      assert.deepEqual(numeric.report, NUMERIC_REPORT);
    });

    await t.step(
      "ovm converts the USER app image, and the VM reports what podman run did",
      async () => {
        const res = named = await convert(
          home.path,
          `${reg.host}/podman/report:1`,
          "podman/report:1",
        );
        assert.equal(res.image.layers, 4);
        assert.equal(res.unpack.skippedXattrs, 0);
        assert.equal(res.bootstrap.config.user, "app");
        assert.deepEqual(res.bootstrap.config.entrypoint, ["/app/report.sh", "from-entrypoint"]);
        assert.deepEqual(res.bootstrap.config.cmd, ["from-cmd", "two words"]);
        const run = await ovm(
          home.path,
          "run",
          "podman/report:1",
          "--accel",
          "tcg",
          "--net",
          "none",
        );
        const report = parseReport(run.stdout);
        assert.deepEqual(report, NAMED_REPORT, consoleTail(run.stdout));
        assert.equal(run.code, 7, consoleTail(run.stdout));
      },
    );

    await t.step(
      "ovm converts the buildah USER 4321 image: uid 4321, gid 0, exit code 3",
      async () => {
        const res = await convert(home.path, `${reg.host}/podman/numeric:1`, "podman/numeric:1");
        assert.equal(res.bootstrap.config.user, "4321");
        const run = await ovm(
          home.path,
          "run",
          "podman/numeric:1",
          "--accel",
          "tcg",
          "--net",
          "none",
        );
        assert.deepEqual(parseReport(run.stdout), NUMERIC_REPORT, consoleTail(run.stdout));
        assert.equal(run.code, 3, consoleTail(run.stdout));
      },
    );

    await t.step(
      "podman's docker v2s2 and zstd pushes of the image convert to the same tree and bootstrap config",
      async () => {
        if (!named) throw new Error("the OCI push was not converted");
        const pushes = [
          ["v2s2", ["--format", "v2s2"], "application/vnd.docker.image.rootfs.diff.tar.gzip"],
          ["zstd", ["--compression-format", "zstd"], "application/vnd.oci.image.layer.v1.tar+zstd"],
        ] as const;
        for (const [name, flags, layerType] of pushes) {
          await podman.podman([
            "push",
            "--tls-verify=false",
            ...flags,
            "localhost/ovm-test/report:1",
            `${reg.host}/podman/report-${name}:1`,
          ]);
          const manifest = await fetchManifest(reg.url, `podman/report-${name}`, "1");
          assert.deepEqual([
            ...new Set(manifest.layers.map((l: { mediaType: string }) => l.mediaType)),
          ], [
            layerType,
          ]);
          const res = await convert(
            home.path,
            `${reg.host}/podman/report-${name}:1`,
            `podman/${name}:1`,
          );
          assert.notEqual(res.image.manifestDigest, named.image.manifestDigest);
          // The same uncompressed layers (podman's diff ids), entry for entry.
          assert.deepEqual(res.unpack, named.unpack);
          assert.deepEqual(res.bootstrap.config, named.bootstrap.config);
        }
      },
    );
  },
});
