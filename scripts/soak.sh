#!/usr/bin/env bash
# The suite on its own, again and again: clones the committed HEAD into a temp
# directory with nothing beside it (no sibling folders), runs the README's test
# command there RUNS times back to back, optionally once more with a CPU-heavy
# process pinned to one core, and prints one line per run (wall time, result,
# failed test names). Each run's full log is kept under $OUT.
#
# Usage: scripts/soak.sh [--runs N] [--load] [--out DIR]
#   --runs N   back-to-back runs (default 3)
#   --load     add one run with a busy loop pinned to CPU 1 (taskset)
#   --out DIR  where logs go (default /tmp/ovm-soak.<time>)
set -uo pipefail
cd "$(dirname "$0")/.."

runs=3 load=0 out="/tmp/ovm-soak.$(date +%Y%m%d-%H%M%S)"
while (($#)); do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --load) load=1; shift ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown option \"$1\" (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$runs" =~ ^[0-9]+$ ]] || { echo "soak: --runs wants a number, got \"$runs\"" >&2; exit 2; }

mkdir -p "$out"
work=$(mktemp -d /tmp/ovm-soak-clone.XXXXXX)
burner=""
cleanup() {
  [[ -n "$burner" ]] && kill "$burner" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

git clone --quiet "$PWD" "$work/ovm"
echo "soak: $(git rev-parse --short HEAD) cloned into $work/ovm (nothing beside it); logs in $out"

bad=0
one() {
  local name="$1" log="$out/$1.log" t0 t1 rc summary failed
  t0=$(date +%s)
  (cd "$work/ovm" && bash .ci/run) >"$log" 2>&1
  rc=$?
  t1=$(date +%s)
  summary=$(grep -E '^tests: ' "$log" | tail -1)
  failed=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E ' \.\.\. FAILED' | sed -E 's/ \.\.\. FAILED.*//' | sort -u |
    paste -sd';' -)
  printf 'soak: %-6s exit %d in %4d s  %s  load %s%s\n' "$name" "$rc" $((t1 - t0)) "${summary:-no summary}" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "${failed:+  failed: $failed}"
  ((rc == 0)) || bad=1
}

for ((i = 1; i <= runs; i++)); do one "run$i"; done
if ((load)); then
  taskset -c 1 bash -c 'while :; do :; done' &
  burner=$!
  one "loaded"
  kill "$burner" 2>/dev/null
  burner=""
fi
exit "$bad"
