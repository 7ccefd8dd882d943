#!/usr/bin/env bash
# A/B of nodedns's cache-hit CPU cost: the working tree's release build against another
# revision's, with the bare responder as the yardstick, all three running at once and
# loaded in interleaved rounds (so a noisy stretch of the machine falls on all three alike).
# For judging one change to the hot path; bench/hits.sh is the full comparison.
#
# Prints, per mode (fixed RATE q/s and saturation), each server's rounds of CPU microseconds
# per answered query (from /proc/PID/stat), the medians, and old/new against the responder;
# then the same for the user-space CPU alone (the servers' own code, without the kernel's
# per-packet work: a smaller figure that moves less with the machine's noise).
#
# Usage: bench/compare.sh REV   (defaults: NAMES=10000 SECONDS_PER_RUN=5 ROUNDS=7 RATE=60000)
# The other revision is built in a git worktree under target/compare (first run: minutes).
# Needs: named, dnsperf, taskset, dig, cc, git.
set -euo pipefail
cd "$(dirname "$0")/.."

REV=${1:?usage: bench/compare.sh REV}
NAMES=${NAMES:-10000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-7}
RATE=${RATE:-60000}

source bench/lib.sh
require_tools named dnsperf taskset dig cc git
cargo build --release --quiet
tree=target/compare/src
git worktree remove --force "$tree" 2>/dev/null || true
git worktree add --quiet --detach "$tree" "$REV"
(cd "$tree" && CARGO_TARGET_DIR=../target cargo build --release --quiet)
git worktree remove --force "$tree"
cc -O2 -pthread -o "$work/responder" bench/responder.c

P_NAMED=25353
declare -A PORT=([responder]=25370 [old]=25371 [new]=25372) METRICS=([old]=25373 [new]=25374)
declare -A BIN=([old]=target/compare/target/release/nodedns [new]=target/release/nodedns)
start_named_hosts $P_NAMED "$NAMES"

declare -A PID
taskset -c 1 "$work/responder" "${PORT[responder]}" 1 >/dev/null 2>&1 &
PID[responder]=$!; pids+=($!)
printf 'server:\n  udp_workers: 1\n  pin_udp_workers: false\n' > "$work/nodedns.yaml"
for side in old new; do
    taskset -c 1 "${BIN[$side]}" run -c "$work/nodedns.yaml" --listen 127.0.0.1:"${PORT[$side]}" \
        --upstream 127.0.0.1:$P_NAMED --metrics 127.0.0.1:"${METRICS[$side]}" >"$work/$side.log" 2>&1 &
    PID[$side]=$!; pids+=($!)
    wait_for "${PORT[$side]}"
    taskset -c 0 dnsperf -s 127.0.0.1 -p "${PORT[$side]}" -d "$work/queries" -n 1 -c 1 -q 100 >/dev/null
done
sleep 0.5

declare -A results
for round in $(seq "$ROUNDS"); do
    for server in responder old new; do
        for mode in fixed saturation; do
            rate=""; [ $mode = fixed ] && rate=$RATE
            before=$(cpu_ticks "${PID[$server]}") before_user=$(user_ticks "${PID[$server]}")
            taskset -c 0 dnsperf -s 127.0.0.1 -p "${PORT[$server]}" -d "$work/queries" -l "$SECONDS_PER_RUN" \
                -c 8 -q 500 ${rate:+-Q "$rate"} >"$work/perf.out" 2>&1
            after=$(cpu_ticks "${PID[$server]}") after_user=$(user_ticks "${PID[$server]}")
            done=$(awk '/Queries completed:/ {print $3}' "$work/perf.out")
            us=$(per_query $((after - before)) "$done") user=$(per_query $((after_user - before_user)) "$done")
            results[$server,$mode]+="$us "
            results[$server,$mode,user]+="$user "
            echo "  round $round $server $mode: $us us/query, $user in user space" >&2
        done
    done
done

med() { tr ' ' '\n' <<<"$1" | awk 'NF' | median; }
for part in "" ",user"; do
    echo
    what="CPU"; [ -n "$part" ] && what="user-space CPU"
    echo "$what us per cache hit, 1 worker on CPU 1, dnsperf on CPU 0, $ROUNDS interleaved rounds x ${SECONDS_PER_RUN}s; old = $REV"
    for mode in fixed saturation; do
        for server in responder old new; do
            printf '%-11s %-10s %-48s median %s\n' "$mode" "$server" "${results[$server,$mode$part]}" "$(med "${results[$server,$mode$part]}")"
        done
        r=$(med "${results[responder,$mode$part]}")
        awk -v o="$(med "${results[old,$mode$part]}")" -v n="$(med "${results[new,$mode$part]}")" -v r="$r" -v m="$mode" \
            'BEGIN {printf "%-11s old/responder %.2f, new/responder %.2f, new/old %.2f\n", m, o / r, n / r, n / o}'
    done
done
