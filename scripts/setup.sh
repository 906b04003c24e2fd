#!/usr/bin/env bash
# Installs what ovm's demo and tests need on a Debian/Ubuntu host: the Debian
# packages (when root and missing) and the npm dependencies (into node_modules).
# Idempotent and quick when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  qemu-system-x86 qemu-utils   # the VMM and qemu-img
  busybox-static               # the guest userland of the initrd and demo disks
  e2fsprogs erofs-utils        # root filesystems for disk layers
  lz4 cpio xz-utils            # RAM snapshots, initrd packing, kernel modules
  docker-registry              # a real OCI registry for the tests
  skopeo umoci                 # independent OCI clients for interop tests
                               # (cosign, oras, crane: scripts/tools.sh, fetched by the tests)
  podman buildah               # images built and pushed by them, converted and booted by ovm
  cloud-init                   # its schema validator, for convert's cloud-init profile
  apache2-utils openssl        # htpasswd and certificates for registry auth tests
  dosfstools mtools attr zstd  # convert: vfat cidata seed, xattrs, zstd layers
  iproute2 nftables            # bridge networking: bridges, TAPs, NAT and port DNAT
  curl iperf3                  # networking tests and the bridge-vs-user throughput bench
  python3                      # tests: tar fixtures and layer listings through Python's tarfile
  containerd runc              # the shim tests run a real containerd 1.6 (ctr); runc is the bench peer
)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]}" >&2
    echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# npm dependencies (zod, lz4-napi, ...) pinned by deno.lock.
deno install --quiet >/dev/null 2>&1 || deno install
