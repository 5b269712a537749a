#!/usr/bin/env bash
# The test command (README, CI): builds the release binaries the integration tests start,
# then runs every test in release mode. Works on a fresh machine with only the Rust
# toolchain: no flatc or protoc is needed (generated code is committed; build.rs compiles
# the .proto schemas with protox).
#
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test cluster_lifecycle`.
set -euo pipefail
cd "$(dirname "$0")/.."

# glommio's io_uring rings need locked memory; the node raises its own soft limit, but
# lift the shell's too where allowed (root, or a generous hard limit).
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -H -l)" 2>/dev/null || true

scripts/install-deps.sh
cargo build --release --locked --bins
cargo test --release --locked "$@"
