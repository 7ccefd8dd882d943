#!/usr/bin/env bash
# Upstream TCP connection explosion, measured: kube-dns's dnsmasq serves TCP with one process per
# connection and at most 20 of them. This runs dnsperf over TCP with 80 client connections
# through nodedns (a pool of POOL connections to dnsmasq) and, for comparison, 20 and 40
# connections straight at dnsmasq. dnsmasq has its cache off and forwards to a local named,
# so every query is a miss all the way down. Prints queries/s, lost queries, and the most
# connections dnsmasq held (sampled with ss), medians over ROUNDS rounds.
#
# Where things run: as in a cluster, the node (dnsperf standing in for its pods, and
# nodedns) and kube-dns's server (dnsmasq and named) each have CPUs of their own, NODE_CPUS
# and SERVER_CPUS, so dnsmasq has the same CPU in every run and the comparison is of what
# it can serve. SHARED=1 runs everything on all CPUs instead: then the extra hop competes
# with dnsmasq for the same two cores, which a cluster never makes it do.
#
# Usage: bench/tcp-pool.sh  (defaults: POOL=4 QUERIES=30000 ROUNDS=3 NODE_CPUS=0 SERVER_CPUS=1)
set -euo pipefail
cd "$(dirname "$0")/.."

POOL=${POOL:-4}
# Pool settings, nodedns's defaults unless given.
MAX_QUERIES=${MAX_QUERIES:-0}
INFLIGHT=${INFLIGHT:-64}
QUERIES=${QUERIES:-30000}
ROUNDS=${ROUNDS:-3}
NODE_CPUS=${NODE_CPUS:-0}
SERVER_CPUS=${SERVER_CPUS:-1}
SHARED=${SHARED:-0}
source bench/lib.sh
require_tools named dnsmasq dnsperf ss dig taskset
cargo build --release --quiet
P_NAMED=25453 P_DNSMASQ=25454 P_NODEDNS=25455 P_METRICS=25456
start_named $P_NAMED '*.load IN A 10.9.9.9'
dnsmasq -k --conf-file=/dev/null --bind-interfaces --listen-address=127.0.0.1 --port=$P_DNSMASQ --cache-size=0 \
    --no-resolv --no-hosts --pid-file= --user=root --server=127.0.0.1#$P_NAMED >"$work/dnsmasq.log" 2>&1 & pids+=($!)
printf 'upstream:\n  pool:\n    max_connections: %s\n    max_queries_per_connection: %s\n    max_inflight_per_connection: %s\n' \
    "$POOL" "$MAX_QUERIES" "$INFLIGHT" > "$work/nodedns.yaml"
target/release/nodedns run --config "$work/nodedns.yaml" --listen 127.0.0.1:$P_NODEDNS --metrics 127.0.0.1:$P_METRICS \
    --upstream tcp://127.0.0.1:$P_DNSMASQ >"$work/nodedns.log" 2>&1 & pids+=($!)
wait_for $P_NODEDNS tcp
# pids: named, dnsmasq, nodedns. dnsmasq's per-connection children inherit its CPUs.
if [ "$SHARED" = 1 ]; then
    NODE_CPUS=$(taskset -pc $$ | awk '{print $NF}')
    topology="all on CPUs $NODE_CPUS"
else
    for p in "${pids[0]}" "${pids[1]}"; do taskset -apc "$SERVER_CPUS" "$p" >/dev/null; done
    taskset -apc "$NODE_CPUS" "${pids[2]}" >/dev/null
    topology="dnsperf and nodedns on CPU $NODE_CPUS, dnsmasq and named on CPU $SERVER_CPUS"
fi

# run LABEL PORT CONNECTIONS -> "qps lost max_connections"
run() {
    local label=$1 port=$2 conns=$3 round=$4
    for i in $(seq "$QUERIES"); do echo "$label-$round-$i.load.bench.example A"; done > "$work/q"
    : > "$work/samples"
    # ss does not read sockets atomically: a connection closing mid-read can be counted on
    # top of its replacement. Two readings, the smaller kept, filter that out.
    count() { ss -Htn state established "( sport = :$P_DNSMASQ )" | wc -l; }
    ( while :; do a=$(count); b=$(count); echo $((a < b ? a : b)) >> "$work/samples"; sleep 0.02; done ) & local sampler=$!
    local idle0; idle0=$(awk '/^cpu / {print $5+$6, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
    local out; out=$(taskset -c "$NODE_CPUS" dnsperf -m tcp -s 127.0.0.1 -p "$port" -d "$work/q" -c "$conns" -n 1 -l 60 2>&1)
    kill $sampler; wait $sampler 2>/dev/null || true
    local busy; busy=$(awk -v before="$idle0" '/^cpu / {split(before, b, " "); idle = $5+$6 - b[1]; all = $2+$3+$4+$5+$6+$7+$8 - b[2]; printf "%.0f", 100 * (all - idle) / all}' /proc/stat)
    local qps lost most
    qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    most=$(sort -n "$work/samples" | tail -1)
    echo "$qps $lost $most $busy"
    sleep 3   # let connections close before the next run
}

declare -A r
for round in $(seq "$ROUNDS"); do
    r[nodedns]+="$(run nd $P_NODEDNS 80 "$round")"$'\n'
    r[direct20]+="$(run d20 $P_DNSMASQ 20 "$round")"$'\n'
    r[direct40]+="$(run d40 $P_DNSMASQ 40 "$round")"$'\n'
    echo "round $round done" >&2
done
col() { printf '%s' "${r[$1]}" | awk -v c="$2" 'NF {print $c}' | median; }
echo
echo "TCP to dnsmasq (cache off, forwarding to named), $QUERIES distinct names per run, medians of $ROUNDS; $topology"
printf '%-40s %10s %8s %22s %10s\n' path "queries/s" lost "dnsmasq connections" "CPU busy%"
printf '%-40s %10s %8s %22s %10s\n' "80 clients -> nodedns (pool $POOL) -> dnsmasq" "$(col nodedns 1)" "$(col nodedns 2)" "$(col nodedns 3)" "$(col nodedns 4)"
printf '%-40s %10s %8s %22s %10s\n' "20 clients -> dnsmasq" "$(col direct20 1)" "$(col direct20 2)" "$(col direct20 3)" "$(col direct20 4)"
printf '%-40s %10s %8s %22s %10s\n' "40 clients -> dnsmasq" "$(col direct40 1)" "$(col direct40 2)" "$(col direct40 3)" "$(col direct40 4)"
