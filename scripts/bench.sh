#!/usr/bin/env bash
# Builds release and runs one raylet-bench suite, recording host and commit.
#
#   scripts/bench.sh <suite> [raylet-bench options...]     e.g. scripts/bench.sh rpc --json
#
# The report goes to stdout untouched (with --json: only the JSON object); the host and
# commit record goes to stderr. Set BENCH_OUT=<dir> to also save stdout and the record
# there as <suite>-<commit>-<utc time>.{out,host}.
# Compare only numbers from the same machine and run: each suite measures its raw
# baselines in the same run and reports the ratio to them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 ]]; then
    echo "usage: $0 <suite> [raylet-bench options...]" >&2
    exit 2
fi
suite=$1
shift

# glommio needs locked memory for its io_uring rings; the raylet raises the soft limit
# itself, this only helps when the hard limit allows more.
ulimit -l unlimited 2>/dev/null || true

cargo build --release --bins >&2

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $commit != unknown ]] && ! git diff --quiet HEAD 2>/dev/null; then
    commit="$commit+dirty"
fi
export RAYLET_BENCH_COMMIT=$commit

governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "n/a (no cpufreq: VM or fixed clock)")
record=$(
    echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit:    $commit"
    echo "host:      $(hostname) $(uname -srm)"
    echo "cpus:      $(nproc) online; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "governor:  $governor"
    echo "memlock:   $(ulimit -l)"
    echo "command:   raylet-bench $suite $*"
)
echo "$record" >&2

bin=./target/release/raylet-bench
if [[ -n ${BENCH_OUT:-} ]]; then
    mkdir -p "$BENCH_OUT"
    stem="$BENCH_OUT/$suite-$commit-$(date -u +%Y%m%dT%H%M%SZ)"
    echo "$record" >"$stem.host"
    "$bin" "$suite" "$@" | tee "$stem.out"
else
    exec "$bin" "$suite" "$@"
fi
