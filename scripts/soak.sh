#!/usr/bin/env bash
# A soak you can run (not in CI): a head and a joiner from the release binary, in a
# private temp dir, on free ports, under mixed traffic (put, get across nodes, free,
# leases, tasks, placement groups, status and memory through the CLI) for MINUTES, with
# one line per interval of every raylet's RSS and open fds, then per node first, last,
# max, the slope after warm-up and a flat/growing verdict.
#
#   scripts/soak.sh MINUTES [raylet-bench soak options...]   e.g. scripts/soak.sh 30
#
# Options go to `raylet-bench soak` (source: bench/soak.rs), e.g. `--sample-s 10`,
# `--shards 1`, `--keep-temp`. Ctrl-C ends the run early: both nodes (and their workers)
# are stopped and the summary is still printed. Exit status non-zero if an operation
# failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -lt 1 || ! $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: $0 MINUTES [raylet-bench soak options...]" >&2
    exit 2
fi
minutes=$1
shift

# glommio needs locked memory for its io_uring rings.
ulimit -l unlimited 2>/dev/null || true
cargo build --release --bins >&2
echo "soak: commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown), host $(hostname) $(uname -r), $(nproc) cpus" >&2
# exec: Ctrl-C and SIGTERM reach raylet-bench itself, which stops what it started.
exec target/release/raylet-bench soak --minutes "$minutes" "$@"
