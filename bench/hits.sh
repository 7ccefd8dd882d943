#!/usr/bin/env bash
# Cache-hit benchmark: dnsperf at 100% cache hits against nodedns, Unbound, dnsdist (packet
# cache) and a bare C responder (bench/responder.c: recvmmsg/sendmmsg, flips QR, no cache:
# the kernel's floor) in the same run, with 1 and 2 worker threads each, at a fixed rate and
# at saturation. BIND `named` is the upstream the caches warm from.
#
# Prints, per server and mode: queries/s, server CPU microseconds per answered query (from
# /proc/PID/stat; the median and the range of the rounds), the user-space part of it (the
# server's own code; the rest is mostly the kernel's per-packet work), latency (p50/p99 from dnsperf's
# per-query report at the fixed rate, the average at saturation), and the ratios against the
# responder and against Unbound; medians of ROUNDS rounds. All servers run at once (pinned
# alike); each round loads them one after the other.
#
# With 1 worker every server is pinned to CPU 1 and dnsperf to CPU 0. With 2 workers the
# servers get CPUs 0-1 and share CPU 0 with dnsperf (this machine has two cores): CPU per
# query stays comparable, queries/s is bounded by the sharing.
#
# Usage: bench/hits.sh   (defaults: NAMES=10000 SECONDS_PER_RUN=6 ROUNDS=7 RATE=60000 WORKERS="1 2")
# Needs: named, unbound, dnsdist, dnsperf, taskset, cc (the Debian packages .ci/run installs).
set -euo pipefail
cd "$(dirname "$0")/.."

NAMES=${NAMES:-10000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-6}
ROUNDS=${ROUNDS:-7}
RATE=${RATE:-60000}
WORKERS=${WORKERS:-"1 2"}
SERVERS="responder nodedns unbound dnsdist"

source bench/lib.sh
require_tools named unbound dnsdist dnsperf taskset dig cc
cargo build --release --quiet
cc -O2 -pthread -o "$work/responder" bench/responder.c
P_NAMED=25353 P_METRICS=25356
declare -A PORT=([responder]=25360 [nodedns]=25361 [unbound]=25362 [dnsdist]=25363)

start_named_hosts $P_NAMED "$NAMES"

# start SERVER WORKERS CPUS: starts it pinned to CPUS; its PID is left in $started.
start() {
    local server=$1 workers=$2 cpus=$3 port=${PORT[$1]}
    case $server in
    responder)
        taskset -c "$cpus" "$work/responder" "$port" "$workers" >/dev/null 2>&1 &
        ;;
    nodedns)
        printf 'server:\n  udp_workers: %s\n  pin_udp_workers: false\n' "$workers" > "$work/nodedns.yaml"
        taskset -c "$cpus" target/release/nodedns run -c "$work/nodedns.yaml" --listen 127.0.0.1:"$port" \
            --upstream 127.0.0.1:$P_NAMED --metrics 127.0.0.1:$P_METRICS >"$work/nodedns.log" 2>&1 &
        ;;
    unbound)
        unbound_conf "$port" "$workers" 64m 128m $P_NAMED
        taskset -c "$cpus" unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
        ;;
    dnsdist)
        {
            # No security-status query (a TXT lookup through the system resolver, off loopback).
            echo "setSecurityPollSuffix('')"
            echo "setLocal('127.0.0.1:$port', {reusePort=true})"
            for _ in $(seq 2 "$workers"); do echo "addLocal('127.0.0.1:$port', {reusePort=true})"; done
            echo "newServer({address='127.0.0.1:$P_NAMED', checkName='ns.bench.example.'})"
            echo "pc = newPacketCache(100000, {maxTTL=86400})"
            echo "getPool(''):setCache(pc)"
            echo "setACL({'127.0.0.0/8'})"
        } > "$work/dnsdist.conf"
        taskset -c "$cpus" dnsdist --supervised --disable-syslog -C "$work/dnsdist.conf" >"$work/dnsdist.log" 2>&1 &
        ;;
    esac
    started=$!
    pids+=("$started")
}

# measure PID PORT [RATE] -> "qps us_per_query latency_a latency_b user_us_per_query": at a
# fixed rate the latencies are p50 and p99 (us), at saturation the average twice.
measure() {
    local pid=$1 port=$2 rate=${3:-} before after before_user after_user
    before=$(cpu_ticks "$pid") before_user=$(user_ticks "$pid")
    # To a file, not a shell variable: bash collecting the per-query report would compete
    # for the CPUs being measured.
    taskset -c "$CLIENT_CPUS" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$SECONDS_PER_RUN" \
        -c 8 -q 500 ${rate:+-Q "$rate" -v} >"$work/perf.out" 2>&1
    after=$(cpu_ticks "$pid") after_user=$(user_ticks "$pid")
    local done qps lat
    done=$(awk '/Queries completed:/ {print $3}' "$work/perf.out")
    qps=$(awk '/Queries per second:/ {print $4}' "$work/perf.out")
    if [ -n "$rate" ]; then
        lat=$(awk '/^> / {print $NF * 1e6}' "$work/perf.out" | sort -n | awk '{a[NR]=$1} END {printf "%.0f %.0f", a[int(NR*0.5)+1], a[int(NR*0.99)+1]}')
    else
        lat=$(awk '/Average Latency/ {printf "%.0f %.0f", $4 * 1e6, $4 * 1e6}' "$work/perf.out")
    fi
    printf '%.0f %s %s %s\n' "$qps" "$(per_query $((after - before)) "$done")" "$lat" "$(per_query $((after_user - before_user)) "$done")"
}

declare -A results
for workers in $WORKERS; do
    if [ "$workers" = 1 ]; then SERVER_CPUS=1 CLIENT_CPUS=0; else SERVER_CPUS=0-1 CLIENT_CPUS=0; fi
    declare -A PID=()
    for server in $SERVERS; do
        start "$server" "$workers" "$SERVER_CPUS"
        PID[$server]=$started
        # The responder answers without records, which wait_for does not count as an answer.
        if [ "$server" = responder ]; then sleep 0.5; else wait_for "${PORT[$server]}"; fi
        # Warm the cache with every name (the responder has none).
        taskset -c "$CLIENT_CPUS" dnsperf -s 127.0.0.1 -p "${PORT[$server]}" -d "$work/queries" -n 1 -c 1 -q 100 >/dev/null
    done
    # Rounds interleave the servers (all running, only the measured one loaded), so a noisy
    # stretch of this shared machine falls on every server alike rather than on one.
    for round in $(seq "$ROUNDS"); do
        for server in $SERVERS; do
            for mode in fixed saturation; do
                rate=""; [ $mode = fixed ] && rate=$RATE
                r=$(measure "${PID[$server]}" "${PORT[$server]}" $rate)
                results[$workers,$mode,$server]+="$r"$'\n'
                echo "  workers=$workers $server $mode round $round: $r" >&2
            done
        done
    done
    metrics=$(exec 3<>/dev/tcp/127.0.0.1/$P_METRICS; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
    misses=$(grep '^coredns_cache_misses_total' <<<"$metrics" | awk '{s += $2} END {printf "%d", s}')
    echo "  nodedns cache misses: $misses (the warm-up pass asks each of the $NAMES names once)" >&2
    for server in $SERVERS; do kill "${PID[$server]}"; wait "${PID[$server]}" 2>/dev/null || true; done
done

# rounds KEY FIELD: that field of every round, one per line.
rounds() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}'; }
col() { rounds "$1" "$2" | median; }
# The lowest and highest round: on this shared machine one server's rounds spread by more
# than most differences between servers, so the medians are printed with their range.
range() { rounds "$1" "$2" | sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'; }
echo
echo "cache hits, $NAMES names, dnsperf -c 8 -q 500, medians of $ROUNDS x ${SECONDS_PER_RUN}s"
printf '%-8s %-20s %-10s %10s %13s %12s %8s %9s %9s %12s %12s\n' workers mode server "queries/s" "CPU us/query" "CPU range" "user us" "p50 us" "p99 us" "CPU/resp." "CPU/unbound"
for workers in $WORKERS; do
    for mode in fixed saturation; do
        label="fixed $RATE q/s"; [ $mode = saturation ] && label="saturation (avg)"
        base=$(col "$workers,$mode,responder" 2); ub=$(col "$workers,$mode,unbound" 2)
        for server in $SERVERS; do
            cpu=$(col "$workers,$mode,$server" 2)
            printf '%-8s %-20s %-10s %10s %13s %12s %8s %9s %9s %12s %12s\n' "$workers" "$label" "$server" \
                "$(col "$workers,$mode,$server" 1)" "$cpu" "$(range "$workers,$mode,$server" 2)" "$(col "$workers,$mode,$server" 5)" \
                "$(col "$workers,$mode,$server" 3)" "$(col "$workers,$mode,$server" 4)" \
                "$(awk -v a="$cpu" -v b="$base" 'BEGIN {printf "%.2f", a / b}')" "$(awk -v a="$cpu" -v b="$ub" 'BEGIN {printf "%.2f", a / b}')"
        done
    done
done
