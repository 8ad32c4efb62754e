#!/usr/bin/env bash
# Coverage-guided fuzzing of the gateway's parsers (cargo-fuzz, libFuzzer).
#
#   scripts/fuzz.sh                  # every target, 60 s each
#   scripts/fuzz.sh canonical_path   # one target (several may be named)
#   FUZZ_SECONDS=600 scripts/fuzz.sh head_check
#
# Needs rustup with a nightly toolchain; installs cargo-fuzz when missing.
# The seeds in fuzz/seeds/<target>/ are copied into the working corpus
# fuzz/target/corpus/<target>/, which grows across runs; crashing inputs
# land in fuzz/artifacts/<target>/. Exits non-zero when a target fails.
# Extra libFuzzer flags: FUZZ_ARGS="-max_len=4096" scripts/fuzz.sh
set -euo pipefail

cd "$(dirname "$0")/../fuzz"

ALL_TARGETS=(canonical_path head_check bearer_jwt config_reader)
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=("${ALL_TARGETS[@]}")
fi
for t in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$t.rs" ]; then
        echo "unknown fuzz target '$t' (known: ${ALL_TARGETS[*]})" >&2
        exit 2
    fi
done

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "installing the $TOOLCHAIN toolchain" >&2
    rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

echo "building: ${targets[*]}" >&2
for t in "${targets[@]}"; do
    cargo "+$TOOLCHAIN" fuzz build "$t"
done

failed=()
for t in "${targets[@]}"; do
    corpus="$PWD/target/corpus/$t"
    mkdir -p "$corpus" "artifacts/$t"
    cp -n seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    log="$PWD/target/fuzz-$t.log"
    echo "== $t: ${SECONDS_EACH}s, corpus $corpus" >&2
    status=0
    # config_reader writes a scratch keys file into the temp directory.
    export TMPDIR="$PWD/target/tmp"
    mkdir -p "$TMPDIR"
    # stdin from /dev/null: nothing a target reads may block on a terminal.
    # shellcheck disable=SC2086
    cargo "+$TOOLCHAIN" fuzz run "$t" "$corpus" -- \
        -max_total_time="$SECONDS_EACH" -print_final_stats=1 ${FUZZ_ARGS:-} \
        </dev/null >"$log" 2>&1 || status=$?
    rm -rf "$TMPDIR"
    # The last "#N ..." status line: executions, coverage, corpus, exec/s.
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
    echo "$t: ${last:-no status line}"
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" \
        | sed "s/^/$t: /" || true
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        echo "$t: FAILED (exit $status); log $log" >&2
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" \
            | head -n 12 >&2 || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "failing targets: ${failed[*]}" >&2
    exit 1
fi
echo "all targets ran ${SECONDS_EACH}s without a failure"
