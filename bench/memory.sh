#!/usr/bin/env bash
# Memory per cached entry, whole processes: nodedns and Unbound each filled over DNS with
# NAMES distinct single-A answers from the same `named`; prints the growth of each
# process's resident memory divided by the entries the fill added, for every size in SIZES.
# Each server first answers WARM other names, so what a process spends once on starting to
# serve (thread stacks, allocator heaps, buffers: a few MiB for either server) is not
# divided among the entries; the same for both servers.
#
# Usage: bench/memory.sh   (default SIZES="100000 1000000")
# Needs: named, unbound, dnsperf (the Debian packages .ci/run installs).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"100000 1000000"}
WARM=${WARM:-5000}
source bench/lib.sh
require_tools named unbound dnsperf dig
cargo build --release --quiet
P_NAMED=25453 P_NODEDNS=25454 P_UNBOUND=25455 P_METRICS=25456
largest=$(tr ' ' '\n' <<<"$SIZES" | sort -n | tail -1)

start_named $P_NAMED "$(awk -v n="$((largest + WARM))" 'BEGIN { for (i = 0; i < n; i++) printf "h%d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }')"
for _ in $(seq 600); do dig +short +time=1 +tries=1 @127.0.0.1 -p $P_NAMED ns.bench.example A 2>/dev/null | grep -q 127.0.0.1 && break; sleep 0.2; done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# fill PORT COUNT [FIRST]: asks for h(FIRST)..h(FIRST+COUNT-1) once each.
fill() {
    awk -v n="$2" -v first="${3:-0}" 'BEGIN { for (i = first; i < first + n; i++) printf "h%d.bench.example A\n", i }' > "$work/queries"
    dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -n 1 -c 4 -q 200 -t 5 | awk '/Queries (completed|lost)/ {printf "%s %s  ", $2, $3} END {print ""}' >&2
}

# Entries in nodedns's positive cache.
cached() {
    exec 3<>/dev/tcp/127.0.0.1/$P_METRICS
    printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
    awk '/^coredns_cache_entries.*type="success"/ {print $2}' <&3
    exec 3>&-
}

# report SERVER ENTRIES: the growth from $before to $after (KiB) per entry added.
report() {
    awk -v s="$1" -v n="$2" -v a="$after" -v b="$before" 'BEGIN { printf "%-9s %10d %18.1f %18.0f\n", s, n, (a - b) / 1024, (a - b) * 1024 / n }'
}

printf '%-9s %10s %18s %18s\n' server "entries added" "RSS growth MiB" "bytes per entry"
for size in $SIZES; do
    # nodedns with room for an eighth more than the names, as an operator would size it
    # (an entry weighs at least max_bytes / max_entries: 512 bytes here).
    cat > "$work/nodedns.yaml" <<CONF
cache:
  positive: {max_entries: $((size * 9 / 8)), max_bytes: $((size * 9 / 8 * 512)), min_ttl: 0s, max_ttl: 1h}
CONF
    target/release/nodedns run -c "$work/nodedns.yaml" --listen 127.0.0.1:$P_NODEDNS --upstream 127.0.0.1:$P_NAMED \
        --metrics 127.0.0.1:$P_METRICS >"$work/nodedns.log" 2>&1 &
    pid=$!; pids+=($pid)
    wait_for $P_NODEDNS
    fill $P_NODEDNS "$WARM" "$largest"
    before=$(rss_kib $pid); cached_before=$(cached); fill $P_NODEDNS "$size"; after=$(rss_kib $pid)
    report nodedns $(($(cached) - cached_before))
    kill $pid; wait $pid 2>/dev/null || true

    unbound_conf $P_UNBOUND 1 1g 2g $P_NAMED
    unbound -d -c "$work/unbound.conf" >"$work/unbound.log" 2>&1 &
    pid=$!; pids+=($pid)
    wait_for $P_UNBOUND
    fill $P_UNBOUND "$WARM" "$largest"
    before=$(rss_kib $pid); fill $P_UNBOUND "$size"; after=$(rss_kib $pid)
    # The names of the fill, each cached once (unbound's cache has room for all of them).
    report unbound "$size"
    kill $pid; wait $pid 2>/dev/null || true
done
