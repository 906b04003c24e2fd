/**
 * @module
 * `deno task compile`: builds the single `dist/ovm` binary.
 *
 * `deno compile` needs Deno's runtime binary (denort). It downloads it from
 * dl.deno.land unless `DENORT_BIN` names a local copy; on a host without
 * internet access, fetch `denort-x86_64-unknown-linux-gnu.zip` for the same
 * Deno version elsewhere, unzip it, and point `DENORT_BIN` at it.
 */

/** The permissions the binary is granted — each for a reason. */
export const PERMISSIONS = [
  "--allow-read", // the store, instance dirs, /proc (metrics), /sys (KVM detection), kernel files
  "--allow-write", // the store, instance dirs, /dev/shm (ivshmem, RAM snapshots)
  "--allow-run", // qemu-system-x86_64, qemu-img, apt-get/dpkg-deb, mkfs.*, and user-configured VMM binaries
  "--allow-net", // registries, and the runtime API on a UNIX socket
  "--allow-env", // OVM_HOME, XDG_*, HOME, OVM_SOCKET, DOCKER_CONFIG
  "--allow-ffi", // ffi/: mlock, memfd_create, mmap from libc
  "--allow-sys", // free memory checks before preloading snapshots, hostname
];

/** Files read at run time next to the sources (the init that goes into every initrd). */
export const INCLUDES = ["initrd/"];

export function compileArgs(output = "dist/ovm"): string[] {
  return [
    "compile",
    ...PERMISSIONS,
    ...INCLUDES.flatMap((p) => ["--include", p]),
    "--output",
    output,
    "main.ts",
  ];
}

if (import.meta.main) {
  const output = Deno.args[0] ?? "dist/ovm";
  const root = new URL("../", import.meta.url).pathname;
  const res = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(output),
    cwd: root,
    stdout: "inherit",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(res.stderr);
  await Deno.stderr.write(res.stderr);
  if (!res.success) {
    if (
      /dl\.deno\.land|dns error|error sending request/.test(stderr) && !Deno.env.get("DENORT_BIN")
    ) {
      console.error(
        "\ndeno compile could not download its runtime (denort). Set DENORT_BIN to a local\n" +
          `denort ${Deno.version.deno} binary (denort-x86_64-unknown-linux-gnu.zip from dl.deno.land) and retry.`,
      );
    }
    Deno.exit(res.code || 1);
  }
  console.log(`built ${output}`);
}
