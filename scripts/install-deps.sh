#!/usr/bin/env bash
# Installs the system packages the tests need, only when missing (idempotent; Debian, as
# root, as CI runs): redis-server for the GCS storage tests against a real Redis
# (tests/gcs_storage_redis.rs).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing ${missing[*]}; run as root or install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# The package would start a system redis-server on port 6379 (the GCS's default port); the
# tests start their own. Deny service starts during the install unless a policy is in place.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
