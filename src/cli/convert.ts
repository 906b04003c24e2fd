/**
 * @module
 * `ovm convert`: a container image (registry reference or `oci:<dir>[:tag]`)
 * becomes a bootable OVMS artifact in the local store, keeping Entrypoint,
 * Cmd, Env, WorkingDir and User; `--push` sends it on to a registry.
 */
import { ValidationError } from "../errors.ts";
import { type ConvertFs, convertImage, type ConvertProfile } from "../convert/mod.ts";
import { pushFromStore } from "../oci/mod.ts";
import { formatBytes, parseSize } from "../util/size.ts";
import { bool, type Command, str } from "./command.ts";
import { REMOTE_OPTIONS, remoteOptions } from "./push.ts";

export const convertCommand: Command = {
  name: "convert",
  summary: "Turn a container image into a bootable OVMS artifact",
  usage:
    "convert <IMAGE-REF | oci:DIR[:TAG]> -t NAME:TAG [--fs ext4|erofs] [--profile init|cloud-init|none]",
  description:
    "Pulls the image (a multi-platform index yields linux/amd64), applies its layers into a\n" +
    "private build directory (whiteouts honoured, owners, modes, xattrs and links kept, nothing\n" +
    "written outside it), and makes one raw disk layer (ext4, or read-only erofs with a tmpfs\n" +
    "overlay at boot). Profiles: init (default) runs Entrypoint+Cmd under ovms-init with the\n" +
    "image's Env, WorkingDir and User; cloud-init boots the image's own init with a NoCloud seed\n" +
    "that runs the workload; none boots the image's /sbin/init. Must run as root.",
  args: { min: 1, max: 1, names: "IMAGE" },
  options: {
    tag: { type: "string", short: "t", valueName: "NAME:TAG", help: "Local reference to create" },
    fs: { type: "string", valueName: "FS", help: "ext4 (default) or erofs" },
    profile: { type: "string", valueName: "NAME", help: "init (default), cloud-init or none" },
    "size-buffer": {
      type: "string",
      valueName: "SIZE",
      help: "Free space on the ext4 disk beyond the contents (default 64M)",
    },
    "allow-devices": {
      type: "boolean",
      help: "Create device nodes from the layers (default: skip them with a warning)",
    },
    "max-unpacked": {
      type: "string",
      valueName: "SIZE",
      help: "Refuse layers that unpack to more than this in total (default 16G)",
    },
    push: { type: "string", valueName: "REMOTE-REF", help: "Push the artifact there afterwards" },
    ...REMOTE_OPTIONS,
  },
  examples: [
    "ovm convert oci:./layout:1.0 -t demo/app:1.0",
    "ovm convert localhost:5000/library/nginx:1.25 -t vms/nginx:1.25 --fs erofs",
    "ovm convert docker.io/library/debian:12 -t vms/debian:12 --profile none --push localhost:5000/vms/debian:12",
  ],
  async run(ctx, input) {
    const tag = str(input, "tag");
    if (!tag) {
      throw new ValidationError("-t/--tag is required", { hint: "usage: ovm " + this.usage });
    }
    const sizeBuffer = str(input, "size-buffer");
    const maxUnpacked = str(input, "max-unpacked");
    const { options, progress } = remoteOptions(ctx, input);
    const store = await ctx.store();
    const started = new Set<string>();
    const done = new Set<string>();
    let res;
    try {
      res = await convertImage(store, {
        source: input.args[0],
        tag,
        fs: (str(input, "fs") ?? "ext4") as ConvertFs,
        profile: (str(input, "profile") ?? "init") as ConvertProfile,
        sizeBuffer: sizeBuffer === undefined ? undefined : parseSize(sizeBuffer, "--size-buffer"),
        maxUnpacked: maxUnpacked === undefined
          ? undefined
          : parseSize(maxUnpacked, "--max-unpacked"),
        allowDevices: bool(input, "allow-devices"),
      }, {
        signal: ctx.signal,
        remote: options,
        onStep: (m) => ctx.out.info(m),
        warn: (m) => ctx.out.warn(m),
        onProgress: (p) => {
          if (!started.has(p.digest)) {
            started.add(p.digest);
            progress.event({ type: "plan", digest: p.digest, size: p.size });
            progress.event({ type: "blob-start", digest: p.digest, size: p.size, offset: 0 });
          }
          progress.event({ type: "blob-progress", digest: p.digest, size: p.size, bytes: p.bytes });
          if (p.bytes >= p.size && !done.has(p.digest)) {
            done.add(p.digest);
            progress.event({
              type: "blob-done",
              digest: p.digest,
              size: p.size,
              status: "applied",
            });
          }
        },
      });
    } finally {
      progress.finish();
    }
    let pushed: { reference: string; digest: string } | undefined;
    const push = str(input, "push");
    if (push) {
      const r = await pushFromStore(store, res.ref, push, options);
      pushed = { reference: r.reference, digest: r.digest };
    }
    ctx.out.result({
      ref: res.ref,
      digest: res.descriptor.digest,
      size: res.descriptor.size,
      image: res.image,
      profile: res.manifest.annotations?.["ovms.convert.profile"],
      disk: res.disk,
      bootstrap: res.bootstrap ?? null,
      seed: res.seed ?? null,
      kernel: res.kernel,
      initrd: res.initrd,
      unpack: res.unpack,
      timings: res.timings,
      pushed: pushed ?? null,
    });
    ctx.out.line(
      `${res.ref} ${res.descriptor.digest} (${res.disk.fs} disk ${formatBytes(res.disk.size)}, ${
        (res.timings.total / 1000).toFixed(1)
      } s)`,
    );
    if (pushed) ctx.out.line(`pushed ${pushed.reference} ${pushed.digest}`);
  },
};
