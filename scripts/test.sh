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

# The stalled-peer tests run nodes in network namespaces (iproute2: ip, tc) and blackhole
# their links with nftables, which a fresh Debian 12 may not have: install what is missing,
# quietly (CI runs as root).
missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq "${missing[@]}" || { apt-get update -qq && apt-get install -y -qq "${missing[@]}"; }; } \
        >/dev/null 2>&1 || echo "test.sh: could not install ${missing[*]}; the network-namespace tests will fail" >&2
fi

cargo build --release --locked --bins
cargo test --release --locked "$@"
