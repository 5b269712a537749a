#!/usr/bin/env bash
# Everything a change must pass before it lands: formatting, clippy with warnings as
# errors (tests and benches included), generated code up to date, and the test suite
# (which includes the layering test, tests/layering.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets --features failpoints -- -D warnings"
cargo clippy --locked --all-targets --features failpoints -- -D warnings
echo "== scripts/gen-schemas.sh --check"
scripts/gen-schemas.sh --check
echo "== scripts/test.sh"
scripts/test.sh "$@"
