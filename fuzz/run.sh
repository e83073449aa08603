#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time; fails if any of them crashes.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs default to all of them (`cargo fuzz list`). Needs
# cargo-fuzz (installed from crates.io with `cargo install cargo-fuzz --locked` when missing)
# and a C++ compiler for libFuzzer (g++ or clang++). On a stable toolchain the nightly flags
# cargo-fuzz passes to rustc (-Zsanitizer=address, ...) are allowed with RUSTC_BOOTSTRAP=1.
#
# Each target starts from its checked-in seeds, fuzz/corpus/TARGET/ (never written to), and a
# working corpus, fuzz/target/corpus/TARGET/, that keeps what the fuzzer found between runs.
# A target with a dictionary, fuzz/dict/TARGET.dict, gets it. Logs go to
# fuzz/target/logs/TARGET.log, crashing inputs to fuzz/artifacts/TARGET/. See docs/fuzzing.md.
set -euo pipefail

seconds=${1:-60}
shift || true
case $seconds in
'' | *[!0-9]*)
    echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

die() {
    echo "fuzz/run.sh: $*" >&2
    exit 1
}

command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is missing; installing it from crates.io" >&2
    cargo install cargo-fuzz --locked ||
        die "cannot install cargo-fuzz: run 'cargo install cargo-fuzz' where crates.io is reachable"
fi
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    die "no C++ compiler for libFuzzer: install one (apt-get install g++)"
fi
# cargo-fuzz passes nightly-only flags to rustc; a stable compiler accepts them with
# RUSTC_BOOTSTRAP=1 (its standard library ships the sanitizer runtimes).
if ! rustc -V | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

if [ $# -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
else
    targets=("$@")
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found"

echo "== building ${#targets[@]} fuzz targets ($(rustc -V))" >&2
cargo fuzz build >&2

logs=fuzz/target/logs
mkdir -p "$logs"
failed=()
rows=()
for t in "${targets[@]}"; do
    [ -d "fuzz/corpus/$t" ] || die "no seed corpus fuzz/corpus/$t"
    work=fuzz/target/corpus/$t
    mkdir -p "$work" "fuzz/artifacts/$t"
    echo "== $t: ${seconds}s" >&2
    dict=()
    [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
    rc=0
    cargo fuzz run "$t" "$work" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${dict[@]}" \
        >"$logs/$t.log" 2>&1 || rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$logs/$t.log" | tail -n 1 || true)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -n 1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -n 1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done_line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done_line")
    corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$done_line")
    if [ "$rc" -eq 0 ]; then
        status=ok
    else
        status=CRASH
        failed+=("$t")
        echo "-- $t failed (exit $rc); the end of $logs/$t.log:" >&2
        tail -n 40 "$logs/$t.log" >&2
        ls -1 "fuzz/artifacts/$t" >&2 || true
    fi
    rows+=("$(printf '%-16s %-6s %10s %8s %6s %6s %6s' "$t" "$status" "${runs:--}" "${eps:--}" "${cov:--}" "${ft:--}" "${corp:--}")")
done

printf '%-16s %-6s %10s %8s %6s %6s %6s\n' target status runs exec/s cov ft corpus
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz/run.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/; reproduce with" \
        "'RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...')" >&2
    exit 1
fi
