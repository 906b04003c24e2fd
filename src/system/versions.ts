/**
 * @module
 * The default guest kernel and initrd versions, in one place. Bumping the
 * kernel means changing {@linkcode DEFAULT_KERNEL}; changing `initrd/ovms-init.sh`
 * in a way guests can observe means bumping {@linkcode OVMS_INIT_VERSION}, which
 * gives every initrd built from it a new version (old ones stay side by side).
 */

/** The architecture ovm manages system images for (OCI platform name). */
export const SYSTEM_ARCH = "amd64";

/** The version of the ovms-init contract (cmdline parameters, config disk, console lines). */
export const OVMS_INIT_VERSION = "3";

export interface DefaultKernel {
  /** `uname -r` of the kernel; the name of its directory under `system/kernel/`. */
  version: string;
  /** The Debian package that carries it. */
  debianPackage: string;
  /** The package version `apt-get download` fetched when the digest below was pinned. */
  debianVersion: string;
  /** sha256 of the `.deb`; apt already checks the signed index, this pins the exact bytes. */
  sha256: string;
}

export const DEFAULT_KERNEL: DefaultKernel = {
  version: "6.1.0-56-cloud-amd64",
  debianPackage: "linux-image-6.1.0-56-cloud-amd64",
  debianVersion: "6.1.192-2",
  sha256: "e7d02b943971edcb8790e256c02cfab3bca6c3d37c1bf25392a57c71300615ee",
};

/** Where the static busybox comes from when the caller does not name one. */
export const DEFAULT_BUSYBOX = "/bin/busybox";

/** The version of the initrd built by ovms-init {@linkcode OVMS_INIT_VERSION} for a kernel. */
export function initrdVersionFor(kernelVersion: string): string {
  return `init${OVMS_INIT_VERSION}-${kernelVersion}`;
}

/**
 * The kernel modules the guest needs, by module name. Each must be either a
 * module file in the kernel package or built in (`modules.builtin`); their
 * dependencies are added from the modules' own `depends=` field.
 */
export const REQUIRED_MODULES = [
  "virtio_pci",
  "virtio_blk",
  "virtio_net",
  "virtio_console",
  "ext4",
  "erofs",
  "overlay",
  "vsock",
  "vmw_vsock_virtio_transport",
] as const;

/** Loaded when present, tolerated when absent (they speed up or harden the guest). */
export const OPTIONAL_MODULES = ["crc32c_generic", "virtio_rng", "qemu_fw_cfg"] as const;
