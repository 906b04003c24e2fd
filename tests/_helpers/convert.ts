/**
 * @module
 * Helpers for the convert tests: a small OCI image built with umoci from a
 * busybox-static root (an entry script that prints argv, env, cwd and uid;
 * a second layer whose whiteout deletes a file), and hand-made OCI layouts
 * holding hostile layers crafted with Python's tarfile.
 */
import { join } from "node:path";

const enc = new TextEncoder();

export async function sh(cmd: string, args: string[], opts: { cwd?: string; stdin?: string } = {}) {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(enc.encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${dec.decode(out.stderr)}`);
  }
  return dec.decode(out.stdout);
}

/** The workload script of the test image: everything the console check needs. */
export const ENTRY_SCRIPT = `#!/bin/sh
echo "ARGV: $*"
echo "CWD: $(pwd)"
echo "UID: $(id -u) GID: $(id -g)"
echo "ENV-GREETING: $GREETING"
echo "ENV-SPACED: $SPACED"
if [ -e /etc/doomed.txt ]; then echo "DOOMED: present"; else echo "DOOMED: absent"; fi
echo "KEPT: $(cat /etc/kept.txt)"
exit 7
`;

export const IMAGE_TAG = "1.0";

/**
 * Builds `dir` as an OCI layout holding `tag`: layer 1 the busybox root with
 * /etc/doomed.txt, layer 2 deleting it (umoci writes the whiteout), then
 * Entrypoint, Cmd, Env, WorkingDir and User set with `umoci config`.
 */
export async function buildTestImage(dir: string, tag = IMAGE_TAG): Promise<void> {
  const image = `${dir}:${tag}`;
  const bundle = `${dir}.bundle`;
  try {
    await sh("umoci", ["init", "--layout", dir]);
    await sh("umoci", ["new", "--image", image]);
    await sh("umoci", ["unpack", "--image", image, bundle]);
    const root = join(bundle, "rootfs");
    for (const d of ["bin", "etc", "app", "tmp", "home/app", "proc", "sys", "dev"]) {
      await Deno.mkdir(join(root, d), { recursive: true });
    }
    await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
    await Deno.chmod(join(root, "bin/busybox"), 0o755);
    for (const a of ["sh", "echo", "id", "pwd", "cat", "ls", "env", "sleep", "true"]) {
      await Deno.symlink("busybox", join(root, "bin", a));
    }
    await Deno.writeTextFile(
      join(root, "etc/passwd"),
      "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    );
    await Deno.writeTextFile(join(root, "etc/group"), "root:x:0:\napp:x:1000:\n");
    await Deno.writeTextFile(join(root, "etc/doomed.txt"), "delete me in layer 2\n");
    await Deno.writeTextFile(join(root, "etc/kept.txt"), "kept from layer 1\n");
    await Deno.writeTextFile(join(root, "app/entry.sh"), ENTRY_SCRIPT);
    await Deno.chmod(join(root, "app/entry.sh"), 0o755);
    await Deno.chown(join(root, "home/app"), 1000, 1000);
    await sh("umoci", ["repack", "--image", image, bundle]);
    await Deno.remove(bundle, { recursive: true });
    await sh("umoci", ["unpack", "--image", image, bundle]);
    await Deno.remove(join(bundle, "rootfs/etc/doomed.txt"));
    await Deno.mkdir(join(bundle, "rootfs/work"));
    await Deno.chown(join(bundle, "rootfs/work"), 1000, 1000);
    await sh("umoci", ["repack", "--image", image, bundle]);
    await sh("umoci", [
      "config",
      "--image",
      image,
      "--config.entrypoint",
      "/app/entry.sh",
      "--config.cmd",
      "hello",
      "--config.cmd",
      "two words",
      "--config.env",
      "GREETING=hi there",
      "--config.env",
      "SPACED=a 'quoted' $value",
      "--config.workingdir",
      "/work",
      "--config.user",
      "1000:1000",
      "--config.exposedports",
      "8080/tcp",
      "--config.stopsignal",
      "SIGINT",
    ]);
    await sh("umoci", ["gc", "--layout", dir]);
  } finally {
    await Deno.remove(bundle, { recursive: true }).catch(() => {});
  }
}

/**
 * An image that boots itself: busybox and a `/sbin/init` that prints a line
 * and powers off, with no Entrypoint and no Cmd (for `--profile none`).
 */
export async function buildSelfBootingImage(dir: string, tag = IMAGE_TAG): Promise<void> {
  const image = `${dir}:${tag}`;
  const bundle = `${dir}.bundle`;
  try {
    await sh("umoci", ["init", "--layout", dir]);
    await sh("umoci", ["new", "--image", image]);
    await sh("umoci", ["unpack", "--image", image, bundle]);
    const root = join(bundle, "rootfs");
    for (const d of ["bin", "sbin", "proc", "sys", "dev"]) {
      await Deno.mkdir(join(root, d), { recursive: true });
    }
    await Deno.copyFile("/bin/busybox", join(root, "bin/busybox"));
    await Deno.chmod(join(root, "bin/busybox"), 0o755);
    for (const a of ["sh", "echo", "poweroff", "cat"]) {
      await Deno.symlink("busybox", join(root, "bin", a));
    }
    await Deno.writeTextFile(
      join(root, "sbin/init"),
      '#!/bin/sh\necho "SELF-BOOT: pid $$ $(cat /proc/cmdline | grep -o ovms.mode=[a-z_]*)"\npoweroff -f\n',
    );
    await Deno.chmod(join(root, "sbin/init"), 0o755);
    await sh("umoci", ["repack", "--image", image, bundle]);
    await sh("umoci", ["gc", "--layout", dir]);
  } finally {
    await Deno.remove(bundle, { recursive: true }).catch(() => {});
  }
}

/** One entry of a hostile layer, as Python's tarfile builds it. */
export interface TarSpec {
  name: string;
  type?: "file" | "dir" | "symlink" | "hardlink" | "chardev" | "blockdev";
  data?: string;
  linkname?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string>;
}

const PY_TAR = `
import io, json, sys, tarfile
spec = json.load(sys.stdin)
out = sys.argv[1]
types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
         "hardlink": tarfile.LNKTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}
fmt = tarfile.GNU_FORMAT if sys.argv[2] == "gnu" else tarfile.PAX_FORMAT
with tarfile.open(out, "w", format=fmt) as t:
    for e in spec:
        ti = tarfile.TarInfo(e["name"])
        ti.type = types[e.get("type", "file")]
        ti.mode = e.get("mode", 0o755 if ti.type == tarfile.DIRTYPE else 0o644)
        ti.uid = e.get("uid", 0)
        ti.gid = e.get("gid", 0)
        ti.mtime = 1700000000
        ti.linkname = e.get("linkname", "")
        ti.devmajor = e.get("devmajor", 0)
        ti.devminor = e.get("devminor", 0)
        if e.get("xattrs"):
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in e["xattrs"].items()}
        data = e.get("data", "").encode()
        ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
        t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
`;

/** Writes a tar made from `entries` to `out`. */
export async function writeTar(
  out: string,
  entries: TarSpec[],
  format: "pax" | "gnu" = "pax",
): Promise<void> {
  await sh("python3", ["-c", PY_TAR, out, format], { stdin: JSON.stringify(entries) });
}

async function sha256File(path: string): Promise<string> {
  const out = await sh("sha256sum", [path]);
  return out.split(" ")[0];
}

export interface LayoutLayer {
  /** A tar file, or bytes to store as they are (a gzip bomb, say). */
  path: string;
  mediaType?: string;
}

/** A hand-made OCI layout: layers as given, an image config, index.json tagging it `tag`. */
export async function writeLayout(
  dir: string,
  layers: LayoutLayer[],
  config: Record<string, unknown>,
  tag = "1",
): Promise<void> {
  const blobs = join(dir, "blobs", "sha256");
  await Deno.mkdir(blobs, { recursive: true });
  await Deno.writeTextFile(join(dir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  const put = async (path: string) => {
    const hex = await sha256File(path);
    await Deno.copyFile(path, join(blobs, hex));
    return { digest: `sha256:${hex}`, size: (await Deno.stat(path)).size };
  };
  const putBytes = async (text: string) => {
    const tmp = join(dir, "tmp.json");
    await Deno.writeTextFile(tmp, text);
    const r = await put(tmp);
    await Deno.remove(tmp);
    return r;
  };
  const layerDescs = [];
  const diffIds = [];
  for (const l of layers) {
    const d = await put(l.path);
    layerDescs.push({ mediaType: l.mediaType ?? "application/vnd.oci.image.layer.v1.tar", ...d });
    diffIds.push(d.digest);
  }
  const cfg = await putBytes(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: diffIds },
    ...config,
  }));
  const manifest = await putBytes(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...cfg },
    layers: layerDescs,
  }));
  await Deno.writeTextFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        ...manifest,
        annotations: { "org.opencontainers.image.ref.name": tag },
      }],
    }),
  );
}
