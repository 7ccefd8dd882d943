# Shared by the bench scripts: tool checks, a scratch directory whose processes are stopped
# on exit, an authoritative named for bench.example, a process's CPU ticks, and a median.
# Source it after `cd` to the repository root; it sets `work` and `pids`.

require_tools() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing $tool: run bash .ci/run first (it installs the packages)" >&2; exit 1; }
    done
}

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# start_named PORT ZONE_BODY: named, authoritative for bench.example with the given records.
start_named() {
    local port=$1
    {
        echo '$TTL 3600'
        echo '@ IN SOA ns.bench.example. admin.bench.example. 1 3600 600 86400 60'
        echo '@ IN NS ns.bench.example.'
        echo 'ns IN A 127.0.0.1'
        printf '%s\n' "$2"
    } > "$work/bench.zone"
    cat > "$work/named.conf" <<CONF
options { directory "$work"; listen-on port $port { 127.0.0.1; }; listen-on-v6 { none; };
  recursion no; notify no; pid-file "$work/named.pid"; session-keyfile "$work/s.key"; dnssec-validation no; };
controls { };
zone "bench.example" { type primary; file "$work/bench.zone"; };
CONF
    named -g -n 1 -c "$work/named.conf" >"$work/named.log" 2>&1 &
    pids+=($!)
}

# wait_for PORT [TCP]: until a server on PORT answers ns.bench.example.
wait_for() {
    for _ in $(seq 100); do
        dig ${2:++tcp} +short +time=1 +tries=1 @127.0.0.1 -p "$1" ns.bench.example A 2>/dev/null | grep -q 127.0.0.1 && return 0
        sleep 0.1
    done
    echo "server on port $1 did not answer" >&2
    exit 1
}

# unbound_conf PORT THREADS MSG_CACHE RRSET_CACHE UPSTREAM_PORT: writes $work/unbound.conf,
# Unbound as a node cache would run it: a forwarding cache for "." to the local named only,
# no validation, one socket per thread.
unbound_conf() {
    cat > "$work/unbound.conf" <<CONF
server:
  interface: 127.0.0.1@$1
  do-daemonize: no
  num-threads: $2
  so-reuseport: yes
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
  msg-cache-size: $3
  rrset-cache-size: $4
  so-rcvbuf: 4m
forward-zone:
  name: "."
  forward-addr: 127.0.0.1@$5
CONF
}

# start_named_hosts PORT NAMES: named serving h0..h(NAMES-1).bench.example, each one A
# record, and those names as a dnsperf query file in $work/queries; waits until it answers.
start_named_hosts() {
    start_named "$1" "$(awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "h%d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }')"
    awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "h%d.bench.example A\n", i }' > "$work/queries"
    wait_for "$1"
}

# cpu_ticks PID: user plus system CPU time of the process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# user_ticks PID: the user-space part alone: the server's own code, where the system part
# is mostly the kernel's per-packet work, the same for every server.
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }

# per_query TICKS QUERIES: CPU microseconds per query, from clock ticks spent on QUERIES.
per_query() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'; }

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
