#!/usr/bin/env bash
# Fuzzes every decoder that reads bytes from outside the node: runs each
# cargo-fuzz target in fuzz/ in turn, then prints a table of target,
# executions, crashes and time. See docs/RELIABILITY.md, "Fuzzing".
#
#   scripts/fuzz.sh                 # 60 seconds per target
#   scripts/fuzz.sh 600             # 600 seconds per target
#   scripts/fuzz.sh -runs=10000000  # ten million inputs per target
#   scripts/fuzz.sh 30 http_body    # only these targets
#
# Environment:
#   FUZZ_SANITIZER  address (ASan, slower) or none (default): the decoders
#                   are safe Rust, so what is looked for is panics, and
#                   debug assertions and overflow checks are on either way.
#   FUZZ_MAX_LEN    largest input libFuzzer makes (default 8192 bytes).
#
# Each target starts from its seeds in fuzz/corpus/TARGET/ (real encodings,
# committed) and keeps what it finds in fuzz/work/TARGET/ (not committed).
# A crash stops that target; its input is in fuzz/artifacts/TARGET/. Replay
# it with `cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...`, fix the
# decoder, and commit the input under fuzz/regressions/TARGET/, where the
# byte-soup tests (node/tests/byte_soup.rs) replay it on every test run.
set -euo pipefail

cd "$(dirname "$0")/.."

LIMIT="${1:-60}"
shift || true
case "$LIMIT" in
    -runs=*) LIMIT_FLAG="$LIMIT" ;;
    ''|*[!0-9]*)
        echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET | -runs=N] [TARGET...]" >&2
        exit 2
        ;;
    *) LIMIT_FLAG="-max_total_time=$LIMIT" ;;
esac
SANITIZER="${FUZZ_SANITIZER:-none}"
MAX_LEN="${FUZZ_MAX_LEN:-8192}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "scripts/fuzz.sh needs cargo-fuzz: install it with \`cargo install cargo-fuzz\`" >&2
    exit 2
fi
if ! command -v c++ >/dev/null 2>&1; then
    echo "scripts/fuzz.sh needs a C++ compiler to build libFuzzer (apt-get install g++)" >&2
    exit 2
fi

# cargo-fuzz passes -Z flags (sanitizers, coverage); a stable toolchain
# takes them only with this.
export RUSTC_BOOTSTRAP=1

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi

echo "building ${#TARGETS[@]} fuzz targets (sanitizer: $SANITIZER) ..." >&2
cargo fuzz build -s "$SANITIZER" >&2

LOGS="fuzz/work/logs"
mkdir -p "$LOGS"
ROWS=()
STATUS=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | wc -l)
    echo "fuzzing $t ($LIMIT_FLAG) ..." >&2
    start=$(date +%s)
    set +e
    cargo fuzz run -s "$SANITIZER" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        "$LIMIT_FLAG" -max_len="$MAX_LEN" -timeout=10 -print_final_stats=1 \
        >"$LOGS/$t.log" 2>&1
    rc=$?
    set -e
    secs=$(( $(date +%s) - start ))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOGS/$t.log" | tail -1)
    crashes=$(( $(ls "fuzz/artifacts/$t" | wc -l) - before ))
    if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        echo "$t: cargo fuzz exited $rc without a crash input; see $LOGS/$t.log" >&2
        crashes="?"
    fi
    [ "$rc" -ne 0 ] && STATUS=1
    ROWS+=("$(printf '%-16s %14s %8s %8ss' "$t" "${execs:-?}" "$crashes" "$secs")")
done

printf '%-16s %14s %8s %9s\n' target executions crashes time
for r in "${ROWS[@]}"; do echo "$r"; done
exit "$STATUS"
