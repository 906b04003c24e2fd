#!/usr/bin/env bash
# The ovm demo (README: `npx --yes deno@2.9.6 task demo`). Runs on the local
# store ($OVM_HOME, default ~/.local/share/ovm); no registry needed.
set -euo pipefail
cd "$(dirname "$0")/.."

ovm() { deno run --allow-all main.ts "$@"; }
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*" >&2; }
web=""
cleanup() {
  if [[ -n "$web" ]]; then ovm stop "$web" >/dev/null 2>&1 || true; ovm rm "$web" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

step "Guest kernel and initrd, versioned under \$OVM_HOME/system (fetched once)"
ovm system ensure
ovm system ls

step "Building the demo VM artifact into the local store"
echo "  a busybox ext4 root as the base qcow2 layer, a qcow2 diff layer on top," >&2
echo "  the kernel and initrd, an ivshmem device, and a bootstrap config" >&2
ref=$(deno run --allow-all examples/demo/build.ts)
ovm ls
ovm inspect "$ref"

step "Booting it with QEMU: the guest prints both layers and writes into ivshmem"
ovm run --memory 256M "$ref"

step "Running it detached, serving HTTP from the diff layer on 127.0.0.1:18080"
web=$(ovm run --detach --memory 256M -p 18080:80 "$ref" -- httpd -f -p 80 -h /srv)
echo "instance: $web" >&2
for _ in $(seq 1 120); do
  if page=$(curl -fsS --max-time 2 http://127.0.0.1:18080/ 2>/dev/null); then break; fi
  sleep 0.5
done
echo "curl http://127.0.0.1:18080/ →" >&2
echo "${page:-(no answer)}"
ovm ps
ovm stop "$web"
ovm rm "$web"
web=""

step "Snapshotting a running guest's RAM and restoring it in milliseconds"
counter=$(deno run --allow-all examples/demo/build.ts --no-devices --tag demo/counter:1.0)
web=$(ovm run --detach --memory 256M "$counter" -- \
  sh -c 'i=0; while true; do i=$((i+1)); echo "count $i"; sleep 0.5; done')
until ovm logs "$web" 2>/dev/null | grep -q "count 5"; do sleep 0.5; done
ovm snapshot "$web" -t demo/counter:warm --stop
ovm rm "$web"
web=$(OVM_TRACE=1 ovm run --detach demo/counter:warm)
sleep 2
echo "the restored guest goes on counting where the snapshot left it:" >&2
ovm logs "$web" | head -4
ovm stop "$web" >/dev/null
ovm rm "$web" >/dev/null
web=""

step "Exporting the artifact in the OVMS download layout"
out=$(mktemp -d /tmp/ovm-demo-export.XXXXXX)
rmdir "$out"
ovm export "$ref" "$out"
find "$out" -type f | sort
rm -rf "$out"

step "Done. Try: deno task ovm --help"
