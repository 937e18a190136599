#!/usr/bin/env bash
# bench/dns.sh: authoritative DNS over UDP, twistrs dns vs NSD (one server process) vs
# twistd dns (Twisted 26.10), all serving the same zone of BENCH_NAMES names on
# 127.0.0.1: queries/s with dnsperf for A questions over every name in random order,
# answers lost, mean latency, server CPU, and the ratios.
# Run by hand, not in CI: see bench/README.md ("DNS"). Results go to bench/results/.
#
# Needs dnsperf and nsd (Debian: apt-get install -y dnsperf nsd) and taskset.
# Knobs (environment): BENCH_SERVERS="twistrs nsd twistd", BENCH_TWISTRS_BINS="LABEL=PATH"
# (other twistrs builds run beside, as twistrs-LABEL), BENCH_NAMES=10000, BENCH_SECS=10,
# BENCH_WARMUP=2, BENCH_CLIENTS=4 (dnsperf's sockets), BENCH_OUTSTANDING=100 (queries in
# flight), BENCH_PIN=1 (servers on CPU 0, dnsperf on CPU 1), BENCH_BUILD=1.
set -euo pipefail

SCRIPT=dns.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}nsd twistd"}
NAMES=${BENCH_NAMES:-10000}
SECS=${BENCH_SECS:-10}
WARMUP=${BENCH_WARMUP:-2}
CLIENTS=${BENCH_CLIENTS:-4}
OUTSTANDING=${BENCH_OUTSTANDING:-100}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0
ZONE=bench.test

start_run dns

# A process and all its descendants (NSD: the process started becomes xfrd, its child the
# main process, whose child serves).
tree_of() {
    local p
    printf '%s\n' "$1"
    for p in $(children_of "$1"); do tree_of "$p"; done
}
# utime + stime of a process and its descendants, clock ticks.
tree_ticks() {
    local p t=0 v
    for p in $(tree_of "$1"); do
        v=$(cpu_ticks "$p")
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}

# --- build and environment -------------------------------------------------------------
build_release -p twistrs
need_twistrs dns
need_tools "Debian: apt-get install -y dnsperf nsd util-linux" dnsperf nsd taskset
if has twistd; then
    python_env twisted Twisted "$TWISTED_VERSION"
    [[ -x $venv/bin/twistd ]] || die "no twistd in $venv"
    check_twisted
fi
set_pinning

# --- the zone and the questions ----------------------------------------------------------
zonefile="$work/$ZONE"
queries="$work/queries"
{
    printf '$ORIGIN %s.\n$TTL 3600\n' "$ZONE"
    printf '@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n'
    awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++)
        printf "h%05d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
} >"$zonefile"
awk -v n="$NAMES" -v z="$ZONE" 'BEGIN { for (i = 0; i < n; i++) printf "h%05d.%s A\n", i, z }' |
    shuf --random-source=<(yes) >"$queries"

# A port free for both UDP and TCP on 127.0.0.1 (for NSD, which takes no port 0).
free_udp_port() {
    python3 -c '
import socket
for _ in range(100):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", 0))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", u.getsockname()[1]))
    except OSError:
        continue
    print(u.getsockname()[1])
    break'
}

# Starts server $1 pinned to the server CPU; sets SPID and SPORT (its UDP port).
start_server() {
    local name=$1 log="$work/$1.log" i
    SPORT=""
    case $name in
    twistrs*)
        "${srv_pin[@]}" "$(twistrs_bin "$name")" -n --pidfile= dns -p 0 -i 127.0.0.1 \
            --bindzone "$zonefile" >"$log" 2>&1 &
        ;;
    nsd)
        SPORT=$(free_udp_port)
        mkdir -p "$work/nsd"
        cat >"$work/nsd/nsd.conf" <<EOF
server:
    ip-address: 127.0.0.1
    port: $SPORT
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "$work"
    database: ""
    zonelistfile: "$work/nsd/zone.list"
    xfrdfile: "$work/nsd/xfrd.state"
    pidfile: "$work/nsd/nsd.pid"
    logfile: "$log"
    verbosity: 0
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: $ZONE
    zonefile: $ZONE
EOF
        "${srv_pin[@]}" nsd -d -c "$work/nsd/nsd.conf" >>"$log" 2>&1 &
        ;;
    twistd)
        (cd "$work" && exec "${srv_pin[@]}" "$venv/bin/twistd" -n --pidfile= --logfile="$log.twistd" \
            dns -p 0 -i 127.0.0.1 --bindzone "$zonefile") >"$log" 2>&1 &
        ;;
    esac
    SPID=$!
    pids+=("$SPID")
    for ((i = 0; i < 300; i++)); do
        # twistrs: the port of its UDP+TCP pair (-p 0 may have tried others first);
        # twistd: its UDP port (its TCP port is another one with -p 0).
        if [[ -z $SPORT && $name == twistrs* ]]; then
            SPORT=$(grep -ohE 'DNSServerFactory starting on [0-9]+' "$log" 2>/dev/null | head -n1 | awk '{print $4}' || true)
        elif [[ -z $SPORT ]]; then
            SPORT=$(grep -ohE 'DNSDatagramProtocol starting on [0-9]+' "$log.twistd" 2>/dev/null | head -n1 | awk '{print $4}' || true)
        fi
        # Ready once it answers a question of the zone.
        if [[ -n $SPORT ]] && dnsperf -s 127.0.0.1 -p "$SPORT" -d <(echo "h00000.$ZONE A") -n 1 -t 1 2>/dev/null |
            grep -q 'Queries completed: *1 '; then
            return 0
        fi
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log" "$log.twistd" 2>/dev/null || true
    die "$name did not answer within 30 s"
}

# dnsperf for $1 seconds against the port; its report.
perf() {
    "${cli_pin[@]}" dnsperf -s 127.0.0.1 -p "$SPORT" -d "$queries" -l "$1" -c "$CLIENTS" \
        -q "$OUTSTANDING" -T 1 2>&1
}

run_header
say "dnsperf: $(dnsperf -h 2>&1 | grep -m1 Version) | $(nsd -v 2>&1 | head -n1)"
say "zone: $NAMES names; $SECS s per server after $WARMUP s of warm-up; $CLIENTS clients, $OUTSTANDING outstanding"
wait_quiet

for s in $SERVERS; do
    say ""
    say "== $s"
    start_server "$s"
    perf "$WARMUP" >/dev/null || true
    t0=$(date +%s.%N)
    c0=$(tree_ticks "$SPID")
    m0=$(machine_ticks)
    out=$(perf "$SECS") || true
    t1=$(date +%s.%N)
    c1=$(tree_ticks "$SPID")
    m1=$(machine_ticks)
    say "$out" | grep -E 'Queries (sent|completed|lost)|Response codes|Average Latency|Queries per second'
    qps=$(grep -oE 'Queries per second: *[0-9.]+' <<<"$out" | awk '{printf "%d", $4}')
    lost=$(grep -oE 'Queries lost: *[0-9]+' <<<"$out" | awk '{print $3}')
    lat=$(grep -oE 'Average Latency \(s\): *[0-9.]+' <<<"$out" | awk '{printf "%.3f", $4 * 1000}')
    codes=$(grep -oE 'Response codes: *.*' <<<"$out" | cut -d: -f2 | sed 's/^ *//')
    srv=$(cores "$c0" "$c1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$srv" 1)
    # Server CPU per answer, microseconds: what the server spends, whoever is the bottleneck.
    us=$(awk -v c="$srv" -v q="${qps:-0}" 'BEGIN { if (q > 0) printf "%.2f", c * 1e6 / q; else print "n/a" }')
    say "$s: ${qps:-n/a} queries/s, lost ${lost:-n/a}, mean latency ${lat:-n/a} ms, server ${srv} cores (${us} us per answer), answers: ${codes:-n/a}"
    warn_other "$s" "$other"
    if ! [[ $codes =~ ^NOERROR\ [0-9]+\ \(100\.00%\)$ ]]; then
        say "$SCRIPT: ERROR: $s answered something other than NOERROR"
        status=1
    fi
    R[$s.qps]=${qps:-n/a}
    R[$s.lost]=${lost:-n/a}
    R[$s.lat]=${lat:-n/a}
    R[$s.cpu]=$srv
    R[$s.us]=$us
    stop_pid "$SPID"
done

# --- report ----------------------------------------------------------------------------
{
    say ""
    say "## DNS, $stamp ($NAMES names, UDP, dnsperf $CLIENTS clients x $OUTSTANDING outstanding, $SECS s)"
    say ""
    say "| server | queries/s | lost | mean latency ms | server cores | server us per answer |"
    say "|---|---|---|---|---|---|"
    for s in $SERVERS; do
        say "| $s | $(get "$s.qps") | $(get "$s.lost") | $(get "$s.lat") | $(get "$s.cpu") | $(get "$s.us") |"
    done
    say ""
    r_nsd=$(ratio "$(get twistrs.qps)" "$(get nsd.qps)")
    r_twistd=$(ratio "$(get twistrs.qps)" "$(get twistd.qps)")
    say "twistrs / NSD: $r_nsd (target: at least 1.00x, $(verdict "$r_nsd" ge 1.0))"
    say "twistrs / twistd: $r_twistd (target: at least 20x, $(verdict "$r_twistd" ge 20))"
    say "server CPU per answer, twistrs / NSD: $(ratio "$(get twistrs.us)" "$(get nsd.us)") (below 1.00x: twistrs spends less)"
} | tee "$summary"

finish "a run failed or answered wrongly"
