#!/usr/bin/env bash
# Cache-hit benchmark: dnsperf at 100% cache hits against nodedns and Unbound in the same
# run. Each server is pinned to CPU 1 and dnsperf to CPU 0; BIND `named` is the upstream
# both warm their caches from. Prints queries/s, server CPU microseconds per answered query
# (from /proc/PID/stat), and nodedns/Unbound ratios, as medians over ROUNDS rounds, at
# saturation and at a fixed rate.
#
# Usage: bench/hits.sh            (defaults: NAMES=10000 SECONDS_PER_RUN=10 ROUNDS=3 RATE=50000)
# Needs: named, unbound, dnsperf, taskset (the Debian packages .ci/run installs).
set -euo pipefail
cd "$(dirname "$0")/.."

NAMES=${NAMES:-10000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-50000}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}

source bench/lib.sh
require_tools named unbound dnsperf taskset dig
cargo build --release --quiet
P_NAMED=25353 P_NODEDNS=25354 P_UNBOUND=25355 P_METRICS=25356

# Upstream zone and query file.
start_named $P_NAMED "$(for i in $(seq 0 $((NAMES - 1))); do echo "h$i IN A 10.$((i / 65536 % 256)).$((i / 256 % 256)).$((i % 256))"; done)"
for i in $(seq 0 $((NAMES - 1))); do echo "h$i.bench.example A"; done > "$work/queries"

# Unbound as a forwarding cache, like a node cache would run it: one thread, forwards "."
# to the local named only, no validation.
cat > "$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$P_UNBOUND
  do-daemonize: no
  num-threads: 1
  username: ""
  chroot: ""
  directory: "$work"
  pidfile: "$work/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  module-config: "iterator"
  msg-cache-size: 64m
  rrset-cache-size: 128m
  so-rcvbuf: 4m
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$P_NAMED
CONF
taskset -c "$SERVER_CPU" unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
pid_unbound=$!; pids+=($pid_unbound)

taskset -c "$SERVER_CPU" target/release/nodedns run --listen 127.0.0.1:$P_NODEDNS \
    --upstream 127.0.0.1:$P_NAMED --metrics 127.0.0.1:$P_METRICS >"$work/nodedns.log" 2>&1 &
pid_nodedns=$!; pids+=($pid_nodedns)

wait_for $P_NAMED; wait_for $P_UNBOUND; wait_for $P_NODEDNS

# Warm both caches with every name, then check that a second pass loses nothing.
for port in $P_UNBOUND $P_NODEDNS; do
    taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p $port -d "$work/queries" -n 1 -c 1 -q 100 >/dev/null
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME PID PORT [RATE] -> prints "qps us_per_query avg_latency_ms lost"
run() {
    local pid=$2 port=$3 rate=${4:-}
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$SECONDS_PER_RUN" \
          -c 8 -q 500 ${rate:+-Q $rate} 2>&1)
    after=$(cpu_ticks "$pid")
    local done qps lat lost
    done=$(awk '/Queries completed:/ {print $3}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
    lat=$(awk '/Average Latency/ {print $4 * 1000}' <<<"$out")
    local hz; hz=$(getconf CLK_TCK)
    awk -v t=$((after - before)) -v hz="$hz" -v n="$done" -v q="$qps" -v l="$lat" -v lost="$lost" \
        'BEGIN { printf "%.0f %.2f %.3f %s\n", q, t / hz * 1e6 / n, l, lost }'
}


declare -A results
for mode in saturation fixed; do
    rate=""; [ "$mode" = fixed ] && rate=$RATE
    for round in $(seq "$ROUNDS"); do
        for server in nodedns unbound; do
            if [ $server = nodedns ]; then r=$(run $server $pid_nodedns $P_NODEDNS $rate); else r=$(run $server $pid_unbound $P_UNBOUND $rate); fi
            results[$mode,$server]+="$r"$'\n'
            echo "  $mode round $round $server: qps=$(cut -d' ' -f1 <<<"$r") cpu_us/q=$(cut -d' ' -f2 <<<"$r") avg_ms=$(cut -d' ' -f3 <<<"$r") lost=$(cut -d' ' -f4 <<<"$r")" >&2
        done
    done
done

col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
echo
echo "cache hits, $NAMES names, dnsperf -c 8 on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU, medians of $ROUNDS x ${SECONDS_PER_RUN}s"
printf '%-22s %-9s %12s %14s %12s\n' mode server "queries/s" "CPU us/query" "avg ms"
for mode in saturation fixed; do
    label=$mode; [ "$mode" = fixed ] && label="fixed $RATE q/s"
    for server in nodedns unbound; do
        printf '%-22s %-9s %12s %14s %12s\n' "$label" $server "$(col $mode,$server 1)" "$(col $mode,$server 2)" "$(col $mode,$server 3)"
    done
    awk -v a="$(col $mode,nodedns 2)" -v b="$(col $mode,unbound 2)" -v qa="$(col $mode,nodedns 1)" -v qb="$(col $mode,unbound 1)" \
        -v m="$label" 'BEGIN { printf "%-22s ratio nodedns/unbound: CPU per query %.2f, queries/s %.2f\n", m, a / b, qa / qb }'
done

# Proof that the runs measured hits: every miss is from the warm-up pass.
metrics=$(exec 3<>/dev/tcp/127.0.0.1/$P_METRICS; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
hits=$(grep '^coredns_cache_hits_total' <<<"$metrics" | awk '{s += $2} END {printf "%d", s}')
misses=$(grep '^coredns_cache_misses_total' <<<"$metrics" | awk '{s += $2} END {printf "%d", s}')
echo "nodedns cache: $hits hits, $misses misses (the warm-up pass asks each of the $NAMES names once)"
