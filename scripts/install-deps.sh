#!/usr/bin/env bash
# Installs the system packages the tests use, only when missing (idempotent, quiet;
# Debian as root, as CI runs):
# - iproute2 (ip, tc) and nftables: nodes in network namespaces with shaped or
#   blackholed links (tests/stalled_peers.rs);
# - redis-server: the GCS storage tests against a real Redis (tests/gcs_storage_redis.rs).
# Elsewhere it says what is missing and goes on; the tests that need it then fail saying so.
set -euo pipefail

missing=()
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v tc >/dev/null 2>&1 || missing+=(iproute2)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps.sh: missing ${missing[*]} (run as root on Debian to install them)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The redis-server package would start a system Redis on port 6379 (also the GCS's default
# port); the tests start their own. Deny service starts during the install unless a policy
# is already in place.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
echo "install-deps.sh: installing ${missing[*]}" >&2
{ apt-get install -y -q --no-install-recommends "${missing[@]}" ||
    { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }; } >/dev/null ||
    echo "install-deps.sh: could not install ${missing[*]}; the tests that need them will fail" >&2
