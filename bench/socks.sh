#!/usr/bin/env bash
# bench/socks.sh: the socks plugin against dante (danted, Debian's dante-server) and twistd's
# socks (SOCKS4 only) side by side: MB/s through one relay, relays per second for short
# request/response relays (connect, SOCKS handshake, 64 B answered, the backend's close) with
# 64 clients at a time, and memory per idle relayed pair with 5,000 pairs open: bench/relay.sh's
# loads with a SOCKS handshake first. Backends (`twistrs-bench sink` counting the bulk stream,
# `reply` answering and closing as an HTTP/1.0 server does, `floor` echoing for the idle
# pairs) run beside the load generator. Every proxy is set up for 127.0.0.1, no authentication.
# Run by hand, not in CI: see bench/README.md. Results go to bench/results/.
#
# Knobs (environment): BENCH_SERVERS="twistrs dante twistd", BENCH_TWISTRS_BINS="LABEL=PATH"
# (other twistrs builds run beside, as twistrs-LABEL), BENCH_CONNS=64, BENCH_SIZE=64,
# BENCH_SECS=5, BENCH_WARMUP=1, BENCH_IDLE_PAIRS=5000, BENCH_PIN=1 (servers on CPU 0, load
# generator and backends on CPU 1), BENCH_BUILD=1.
set -euo pipefail

SCRIPT=socks.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}dante twistd"}
CONNS=${BENCH_CONNS:-64}
SIZE=${BENCH_SIZE:-64}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
IDLE_PAIRS=${BENCH_IDLE_PAIRS:-5000}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0

start_run socks

now() { date +%s.%N; }

# --- build and environment -------------------------------------------------------------
bench="$root/target/release/twistrs-bench"
build_release -p twistrs -p twistrs-bench
need_twistrs socks
[[ -x $bench ]] || die "missing $bench"
if has dante; then need_tools "apt-get install dante-server" danted; fi
if has twistd; then
    python_env twisted Twisted "$TWISTED_VERSION"
    check_twisted
fi
set_pinning
raise_nofile
(($(ulimit -n) >= 2 * IDLE_PAIRS + 1000)) || die "descriptor limit $(ulimit -n) is too low for $IDLE_PAIRS pairs"

run_header ""
say "servers: $SERVERS; bulk: 1 relay; request/response: $CONNS clients, $SIZE B; idle: $IDLE_PAIRS pairs"
say "pinning: ${srv_pin[*]:-none} for proxies, ${cli_pin[*]:-none} for the load generator and backends"
say "dante: $(danted -v 2>&1 | head -n1 || echo 'not installed')"
wait_quiet

# --- backends ----------------------------------------------------------------------------
# Starts `twistrs-bench $1 [ARGS]` (floor, reply, sink) on CPU 1; sets BPORT. Not in a
# command substitution: the PID must reach this shell's pids, to be stopped at exit.
start_backend() {
    local out="$work/$1.out" i
    "${cli_pin[@]}" "$bench" "$@" </dev/null >"$out" 2>&1 &
    pids+=("$!")
    BPORT=
    for ((i = 0; i < 100; i++)); do
        BPORT=$(sed -nE 's/^listening ([0-9]+)$/\1/p' "$out")
        [[ -n $BPORT ]] && break
        sleep 0.05
    done
    [[ -n $BPORT ]] || die "backend $1 did not start: $(cat "$out")"
}
start_backend floor
ECHO_PORT=$BPORT
start_backend reply --size "$SIZE"
REPLY_PORT=$BPORT
start_backend sink
SINK_PORT=$BPORT
say "backends: floor (idle pairs) on $ECHO_PORT, reply (request/response) on $REPLY_PORT, sink (bulk) on $SINK_PORT"

# --- one proxy ---------------------------------------------------------------------------
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# True once something accepts on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts proxy $1 on a free port; sets SPID and SPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" cmd i
    SPORT=$(free_port)
    case $name in
    twistrs | twistrs-*)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        cmd=("$(twistrs_bin "$name")" -n --pidfile= socks -i 127.0.0.1 -p "$SPORT")
        ;;
    dante)
        cat >"$work/danted.conf" <<EOF
logoutput: $work/danted.log
internal: 127.0.0.1 port = $SPORT
external: 127.0.0.1
socksmethod: none
clientmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
    from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
    from: 127.0.0.0/8 to: 0.0.0.0/0
    command: connect bind udpassociate
}
EOF
        cmd=(danted -f "$work/danted.conf" -p "$work/danted.pid" -N 1)
        ;;
    twistd) cmd=("$venv/bin/twistd" -n --pidfile= socks -i 127.0.0.1 -p "$SPORT") ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, dante, twistd)" ;;
    esac
    "${srv_pin[@]}" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    for ((i = 0; i < 100; i++)); do
        listening "$SPORT" && break
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        sleep 0.1
    done
    listening "$SPORT" || { cat "$log"; die "$name did not listen on $SPORT within 10 s"; }
    say "[$name] pid $SPID listening on 127.0.0.1:$SPORT, PSS $(pss_tree "$SPID") KiB"
}

# Proportional set size of process $1 and all its descendants, KiB (dante forks workers;
# PSS shares each library page among the processes mapping it, so they are counted once).
pss_tree() {
    local p total=0 v
    for p in $(tree_pids "$1"); do
        v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
tree_pids() {
    local k
    echo "$1"
    for k in $(children_of "$1"); do tree_pids "$k"; done
}
# CPU ticks of process $1 and its descendants: the living ones, and those $1 has reaped
# (its cutime + cstime: dante's workers come and go).
tree_ticks() {
    local p total v
    total=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $14 + $15}' || echo 0)
    for p in $(tree_pids "$1"); do
        v=$(cpu_ticks "$p")
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# --- runs --------------------------------------------------------------------------------
# run_bulk NAME VERSION: one relay into the sink, MB/s (verified: the sink's count came back).
run_bulk() {
    local name=$1 v=$2 line c0 c1 t0 t1
    t0=$(now)
    c0=$(tree_ticks "$SPID")
    if ! line=$("${cli_pin[@]}" "$bench" socks-bulk --addr "127.0.0.1:$SPORT" --socks "$v" \
        --target "127.0.0.1:$SINK_PORT" --secs "$SECS" --warmup "$WARMUP" 2>&1); then
        say "[$name] bulk: failed: $line"
        status=1
        line="mb_per_sec=n/a"
    fi
    t1=$(now)
    c1=$(tree_ticks "$SPID")
    say "[$name] bulk (SOCKS$v): $line server_cpu=$(cores "$c0" "$c1" "$t0" "$t1")"
    R[$name.mbs]=$(kv mb_per_sec "$line")
    R[$name.verified]=$(kv verified "$line")
}

# run_rr NAME VERSION: relays per second, CONNS at a time.
run_rr() {
    local name=$1 v=$2 line c0 c1 t0 t1 m0 m1 cpu other
    t0=$(now)
    c0=$(tree_ticks "$SPID")
    m0=$(machine_ticks)
    if ! line=$("${cli_pin[@]}" "$bench" socks-rr --addr "127.0.0.1:$SPORT" --socks "$v" \
        --target "127.0.0.1:$REPLY_PORT" --conns "$CONNS" --size "$SIZE" --secs "$SECS" \
        --warmup "$WARMUP" 2>"$work/rr.err"); then
        say "[$name] rr: failed: $(cat "$work/rr.err")"
        status=1
        line="conns_per_sec=n/a errors=failed"
    fi
    t1=$(now)
    c1=$(tree_ticks "$SPID")
    m1=$(machine_ticks)
    cpu=$(cores "$c0" "$c1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$cpu" "$(kv client_cpu "$line")")
    say "[$name] request/response (SOCKS$v): $line server_cpu=$cpu other_cpu=$other"
    head -n 3 "$work/rr.err" | sed "s/^/[$name] rr: /"
    warn_other "[$name] request/response (SOCKS$v)" "$other"
    R[$name.rr$v]=$(kv conns_per_sec "$line")
    R[$name.p99_$v]=$(kv p99_ms "$line")
    R[$name.err$v]=$(kv errors "$line")
    [[ ${R[$name.err$v]} == 0 ]] || say "[$name] request/response (SOCKS$v): WARNING: errors"
}

# measure_idle NAME VERSION: PSS of the proxy before and with IDLE_PAIRS relayed pairs.
measure_idle() {
    local name=$1 v=$2 before after out="$work/idle.out" fifo="$work/idle.in" ipid hold i
    before=$(pss_tree "$SPID")
    rm -f "$fifo"
    mkfifo "$fifo"
    exec {hold}<>"$fifo"
    "${cli_pin[@]}" "$bench" socks-idle --addr "127.0.0.1:$SPORT" --socks "$v" \
        --target "127.0.0.1:$ECHO_PORT" --conns "$IDLE_PAIRS" --hold-secs 600 \
        <"$fifo" >"$out" 2>&1 {hold}>&- &
    ipid=$!
    pids+=("$ipid")
    for ((i = 0; i < 3000; i++)); do
        grep -q '^connected=' "$out" && break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^connected=' "$out"; then
        cat "$out"
        exec {hold}>&-
        stop_pid "$ipid"
        say "[$name] idle: pairs not established"
        R[$name.kib]=n/a
        status=1
        return
    fi
    sleep 2 # let lazy per-connection work settle
    after=$(pss_tree "$SPID")
    local procs
    procs=$(tree_pids "$SPID" | wc -l)
    exec {hold}>&-
    for ((i = 0; i < 300; i++)); do
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$ipid"
    say "[$name] idle (SOCKS$v): $(tr '\n' ' ' <"$out")"
    say "[$name] idle: PSS $before -> $after KiB over $procs process(es)"
    grep -q '^dropped=0' "$out" || { say "[$name] idle: WARNING: pairs dropped while held"; status=1; }
    R[$name.kib]=$(awk -v a="$before" -v b="$after" -v n="$IDLE_PAIRS" 'BEGIN { printf "%.2f", (b - a) / n }')
}

for name in $SERVERS; do
    say "== $name"
    start_server "$name"
    if [[ $name == twistd ]]; then versions=(4); else versions=(5 4); fi
    # Memory first, on the fresh server: twistd's relay has no backpressure, so after the
    # bulk run it holds (and later frees) tens of MiB of buffered stream.
    measure_idle "$name" "${versions[0]}"
    run_bulk "$name" "${versions[0]}"
    for v in "${versions[@]}"; do run_rr "$name" "$v"; done
    stop_pid "$SPID"
    tail -n 2 "$work/$name.server.log" | cut -c1-200 | sed "s/^/[$name] log: /"
done
say "loadavg at end: $(cat /proc/loadavg)"

# --- report ----------------------------------------------------------------------------
{
    say ""
    say "SOCKS benchmark, $stamp: bulk MB/s through one relay; relays/s with $CONNS clients"
    say "(connect, handshake, $SIZE B answered, the backend closes); PSS per idle relayed pair over $IDLE_PAIRS pairs."
    say "twistd's socks speaks SOCKS4 only: its rows are SOCKS4, the others SOCKS5 unless marked."
    say ""
    say "| server | bulk MB/s | all bytes counted | relays/s SOCKS5 | p99 ms | relays/s SOCKS4 | p99 ms | KiB per idle pair |"
    say "|---|---:|---|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        say "| $name | $(get "$name.mbs") | $(get "$name.verified") | $(get "$name.rr5") | $(get "$name.p99_5") | $(get "$name.rr4") | $(get "$name.p99_4") | $(get "$name.kib") |"
    done
    say ""
    say "(all bytes counted: the sink's count came back through the half-close; \"no\": the proxy"
    say "closed the relay at the client's FIN, so the count never arrived, as twistd does.)"
    if has twistrs; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for peer in dante twistd; do
            has "$peer" || continue
            if [[ $peer == dante ]]; then t=1 target="at or above dante"; else t=10 target="at least 10x twistd"; fi
            r=$(ratio "$(get twistrs.mbs)" "$(get "$peer.mbs")")
            say "| twistrs/$peer bulk MB/s | $r | $target | $(verdict "$r" ge "$t") |"
            for v in 5 4; do
                [[ $(get "$peer.rr$v") != n/a ]] || continue
                r=$(ratio "$(get "twistrs.rr$v")" "$(get "$peer.rr$v")")
                say "| twistrs/$peer relays/s SOCKS$v | $r | $target | $(verdict "$r" ge "$t") |"
            done
            r=$(ratio "$(get "$peer.kib")" "$(get twistrs.kib)")
            say "| ${peer}_KiB/twistrs_KiB per idle pair | $r | $target | $(verdict "$r" ge "$t") |"
        done
    fi
} | tee "$summary"

finish "some runs failed or reported errors"
