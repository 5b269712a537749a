#!/usr/bin/env bash
# Installs the system packages the tests use when they are missing (idempotent, quiet):
# iproute2 (ip, tc) and nftables for the network-namespace tests. Needs root and apt
# (CI runs as root on Debian 12); elsewhere it only says what is missing.
set -euo pipefail

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; } >/dev/null 2>&1 ||
        echo "install-deps.sh: could not install ${missing[*]}; the tests that need them will fail" >&2
else
    echo "install-deps.sh: missing ${missing[*]} (run as root with apt to install them)" >&2
fi
