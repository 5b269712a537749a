#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets/, bodies in src/fuzzing/), one after the
# other, and prints the executions and exec/s of each.
#
#   scripts/fuzz.sh [SECONDS | -runs=N] [--update-corpus] [TARGET...]
#
#   SECONDS          run each target this long (default 60)
#   -runs=N          run each target for N inputs instead (the long runs: 10 million per
#                    decoder target, 1 million sequences per state-machine target)
#   --update-corpus  afterwards, minimise what the run found (cargo fuzz cmin) and replace
#                    the committed corpus fuzz/corpus/<target>/ with its smallest files,
#                    up to 64 KiB per target
#   TARGET...        default: every target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds with
# AddressSanitizer and debug assertions (the logic's debug_assert! invariants run too).
# Each target fuzzes a working corpus in fuzz/work/<target>/ (not committed), seeded
# from the committed corpus and the built-in seeds, so repeated runs build on each other. A crash stops the
# script non-zero; its input is in fuzz/artifacts/<target>/: add it to
# fuzz/regressions/<target>/ (the replay test runs those) once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

limit=(-max_total_time=60)
update=0
targets=()
for a in "$@"; do
    case $a in
        -runs=*) limit=("$a") ;;
        --update-corpus) update=1 ;;
        ''|*[!0-9]*) targets+=("$a") ;;
        *) limit=(-max_total_time="$a") ;;
    esac
done
all=(rpc_frames local_codec spill_record pull_queue push_queue object_table lease_queue)
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")

cargo +nightly fuzz --help >/dev/null 2>&1 || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 2; }
cargo +nightly fuzz build -a >&2
# The built-in seeds (src/fuzzing/seeds.rs) go into every working corpus too.
RAYLET_FUZZ_SEEDS_DIR=$PWD/fuzz/work cargo test --release --test fuzz_corpora -- --ignored write_seeds >&2

# The committed corpus of a target: the smallest files of a minimised corpus, up to 64 KiB
# (libFuzzer's merge already prefers small inputs), so the repository and the replay test
# stay small.
keep_smallest() {
    local from=$1 to=$2 total=0 size f
    rm -rf "$to" && mkdir -p "$to"
    while read -r size f; do
        (( total + size > 65536 )) && break
        cp "$f" "$to/" && total=$(( total + size ))
    done < <(find "$from" -type f -printf '%s %p\n' | sort -n)
}

summary=()
for t in "${targets[@]}"; do
    work=fuzz/work/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
    # rpc_frames carries frames up to 24 KiB (past the read-ahead's 16); the others need a
    # few KiB at most.
    maxlen=4096
    [[ $t == rpc_frames ]] && maxlen=32768
    log=$(mktemp)
    echo "== $t (${limit[*]})" >&2
    started=$(date +%s.%N)
    if ! cargo +nightly fuzz run -a "$t" "$work" -- "${limit[@]}" -max_len=$maxlen \
        -print_final_stats=1 -rss_limit_mb=2048 2>&1 | tee "$log" | grep -E '^(#[0-9]+.*(pulse|DONE)|==|.*panicked|SUMMARY)' >&2; then
        :
    fi
    if grep -qE 'panicked|ERROR: libFuzzer|SUMMARY: .*Sanitizer' "$log"; then
        echo "$t: CRASH, see $log and fuzz/artifacts/$t/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    # libFuzzer's own rate is whole runs per whole second (0 for a run under a second).
    rate=$(awk -v n="${runs:-0}" -v t0="$started" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.0f", n / (t1 - t0) }')
    summary+=("$(printf '%-14s %12s runs %8s exec/s' "$t" "${runs:-?}" "$rate")")
    rm -f "$log"
    if [[ $update == 1 ]]; then
        cargo +nightly fuzz cmin -a "$t" "$work" -- -max_len=$maxlen >/dev/null 2>&1
        keep_smallest "$work" "fuzz/corpus/$t"
        echo "$t: corpus now $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sb "fuzz/corpus/$t" | cut -f1) bytes" >&2
    fi
done
printf '%s\n' "${summary[@]}"
