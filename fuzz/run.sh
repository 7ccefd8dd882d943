#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each, starting from the seed corpus in
# fuzz/corpus/TARGET (left untouched: new inputs go to a scratch directory). Needs
# cargo-fuzz; the stable toolchain is told to accept its nightly flags (RUSTC_BOOTSTRAP).
# A crash leaves its input in fuzz/artifacts/TARGET and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for t in client_query upstream_response config tcp_stream naming snapshot; do
    scratch=$(mktemp -d)
    log=$(mktemp)
    status=0
    cargo fuzz run -s none "$t" "$scratch" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
    rm -rf "$scratch"
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        echo "fuzz target $t failed (exit $status): the input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    echo "$t: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
    rm -f "$log"
done
