#!/usr/bin/env bash
# Regenerates the committed FlatBuffers code of the local protocol:
#   schemas/local/worker.fbs -> src/wire/generated/worker_generated.rs
# with `flatc --rust`, then formats it with the project's rustfmt.toml.
# (The .proto schemas need no script: build.rs compiles them with protox at build time.)
#
#   scripts/gen-schemas.sh           regenerate in place
#   scripts/gen-schemas.sh --check   regenerate into a temp dir and fail if the committed
#                                    file differs (stale generated code)
#
# flatc comes from Debian's flatbuffers-compiler (installed with apt-get if missing). The
# generated code must match the `flatbuffers` crate pinned in Cargo.toml (=2.1.2), which
# flatc 2.0.x produces.
set -euo pipefail

cd "$(dirname "$0")/.."
SCHEMA=schemas/local/worker.fbs
TARGET=src/wire/generated/worker_generated.rs

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! command -v flatc >/dev/null 2>&1; then
  echo "flatc not found; installing flatbuffers-compiler with apt-get" >&2
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq flatbuffers-compiler >&2
fi

case "$(flatc --version)" in
  *" 2.0."*) ;;
  *) echo "warning: $(flatc --version); the committed code was made by flatc 2.0.x for flatbuffers =2.1.2" >&2 ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
flatc --rust -o "$tmp" "$SCHEMA"
rustfmt --edition 2021 --config-path rustfmt.toml "$tmp/worker_generated.rs"

if [ "$check" -eq 1 ]; then
  if ! diff -u "$TARGET" "$tmp/worker_generated.rs" >"$tmp/diff"; then
    echo "$TARGET is stale: run scripts/gen-schemas.sh and commit the result" >&2
    head -n 40 "$tmp/diff" >&2
    exit 1
  fi
  echo "generated code is current: $TARGET"
else
  cp "$tmp/worker_generated.rs" "$TARGET"
  echo "regenerated $TARGET"
fi
