#!/usr/bin/env bash
# The figures of issue 11 item 1 for one build of raylet: RSS growth of a node while 32
# connections each declare a 64 MiB hello and send 40 MiB of it, and `raylet status`
# latency during a flood of 2000 silent connections under nofile 1024:1024.
#
#   scripts/flood.sh [PATH_TO_RAYLET]    (default: this tree's release build)
#
# Runs the ignored test `flood_figures` of tests/peer_flood.rs; the CLI that times
# `raylet status` is always this tree's, so only the server differs between two builds.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
if [ $# -gt 0 ]; then export RAYLET_FLOOD_BIN="$(realpath "$1")"; fi
cargo test --release --test peer_flood flood_figures -- --ignored --nocapture
