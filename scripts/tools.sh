#!/usr/bin/env bash
# Fetches the interop tools the tests run against ovm — cosign, oras and crane —
# as pinned .debs from Debian's unstable suite and unpacks them into
# "$OVM_TEST_CACHE/tools" (default /tmp/ovm-test-cache/tools). They are static
# Go programs needing only libc6 >= 2.34, so they run on Debian 12.
#
# The host is never changed: apt runs with a temporary sources list, a private
# lists directory and a private cache (no sources.list.d, no dpkg status), so
# the unstable suite is never added to the host's sources and nothing is
# installed or upgraded. The mirror is the one the host's own apt sources use
# (no host name is written here). apt checks the Release signature against the
# Debian archive keyring; the .deb's SHA-256 is then checked against the pin.
#
# Usage: scripts/tools.sh [--print-dir]   (idempotent; quick when present)
set -euo pipefail

# name version sha256 (of the .deb, as in unstable's Packages index)
PINS=(
  "cosign 3.1.1-2 d8622ebffce1d69197288fc030ff06a4c247af5507107f85c5a878870b686b23"
  "oras 1.3.3-1 474f8451e880a64d7daed412baa52febd1c7d988ed778eadac00bdcbdad53af4"
  "crane 0.20.7+ds1-5 2d4bdb12724eda42214bb8957aecc472e561317938da3c95402a9ee30c73fa3b"
)
SUITE=unstable
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

CACHE="${OVM_TEST_CACHE:-/tmp/ovm-test-cache}"
TOOLS="$CACHE/tools"
BIN="$TOOLS/bin"

have_all() {
  local pin name version
  for pin in "${PINS[@]}"; do
    read -r name version _ <<<"$pin"
    [[ -x "$BIN/$name" && "$(cat "$TOOLS/$name.version" 2>/dev/null)" == "$version" ]] || return 1
  done
}

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$BIN"
  exit 0
fi
if have_all; then
  exit 0
fi

for cmd in apt-get dpkg-deb sha256sum flock; do
  command -v "$cmd" >/dev/null || {
    echo "tools: '$cmd' not found; this script needs a Debian host (apt and dpkg)" >&2
    exit 1
  }
done
[[ -r "$KEYRING" ]] || {
  echo "tools: $KEYRING missing; install debian-archive-keyring" >&2
  exit 1
}

# The Debian mirror of the host's own apt sources: the first URI of a source
# that carries Debian's main suites (not -security), in one-line or deb822 form.
mirror_from_host_sources() {
  local f line uris suites
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    while read -r line; do
      # deb [opts] URI SUITE COMPONENTS...
      [[ "$line" =~ ^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+) ]] ||
        continue
      local uri="${BASH_REMATCH[2]}" suite="${BASH_REMATCH[3]}"
      [[ "$suite" == *-security* || "$uri" != */debian ]] && continue
      echo "$uri"
      return 0
    done <"$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    # Paragraphs separated by blank lines; take URIs of one with a non-security suite.
    uris="" suites=""
    while IFS= read -r line || [[ -n "$line" ]]; do
      if [[ -z "${line//[[:space:]]/}" ]]; then
        if [[ -n "$uris" && -n "$suites" && "$suites" != *-security* ]]; then
          for u in $uris; do [[ "$u" == */debian ]] && { echo "$u"; return 0; }; done
        fi
        uris="" suites=""
        continue
      fi
      case "$line" in
      URIs:*) uris="${line#URIs:}" ;;
      Suites:*) suites="${line#Suites:}" ;;
      esac
    done <"$f"
    if [[ -n "$uris" && -n "$suites" && "$suites" != *-security* ]]; then
      for u in $uris; do [[ "$u" == */debian ]] && { echo "$u"; return 0; }; done
    fi
  done
  return 1
}

MIRROR="${OVM_TOOLS_MIRROR:-$(mirror_from_host_sources || true)}"
if [[ -z "$MIRROR" ]]; then
  echo "tools: no Debian mirror found in /etc/apt/sources.list{,.d}; set OVM_TOOLS_MIRROR=URL" >&2
  exit 1
fi

mkdir -p "$TOOLS" "$BIN"
# Test files run in parallel and may all ask at once: one fetches, the others wait for it.
exec 9>"$TOOLS/.lock"
flock 9
if have_all; then
  exit 0
fi
WORK="$(mktemp -d "$TOOLS/.fetch.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" >"$WORK/sources.list"
APT_OPTS=(
  -o "Dir::Etc::SourceList=$WORK/sources.list"
  -o "Dir::Etc::SourceParts=-"
  -o "Dir::State::Lists=$WORK/lists"
  -o "Dir::Cache=$WORK/cache"
  -o "Dir::State::Status=/dev/null"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)

echo "tools: fetching the $SUITE index from $MIRROR (private lists, host sources untouched)" >&2
apt-get "${APT_OPTS[@]}" -qq update

cd "$WORK/debs"
for pin in "${PINS[@]}"; do
  read -r name version sha <<<"$pin"
  if ! apt-get "${APT_OPTS[@]}" -qq download "$name=$version" >/dev/null; then
    now="$(apt-cache "${APT_OPTS[@]}" policy "$name" 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    echo "tools: $name $version is no longer in $SUITE (now: ${now:-none}); update the pin in scripts/tools.sh" >&2
    exit 1
  fi
  deb="$(ls "${name}_"*.deb)"
  got="$(sha256sum "$deb" | cut -d' ' -f1)"
  if [[ "$got" != "$sha" ]]; then
    echo "tools: $deb has sha256 $got, pinned $sha; refusing it" >&2
    exit 1
  fi
  rm -rf "$WORK/x" && mkdir "$WORK/x"
  dpkg-deb -x "$deb" "$WORK/x"
  install -m 0755 "$WORK/x/usr/bin/$name" "$BIN/$name.tmp"
  mv -f "$BIN/$name.tmp" "$BIN/$name"
  echo "$version" >"$TOOLS/$name.version"
  echo "tools: $name $version -> $BIN/$name" >&2
done
