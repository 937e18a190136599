#!/usr/bin/env bash
# bench/relay.sh: the relay benchmark, side by side in one run: twistrs portforward vs
# socat (TCP-LISTEN:...,fork,reuseaddr TCP:...) vs twistd portforward (Twisted 26.10), all
# relaying 127.0.0.1 to backends on 127.0.0.1: bulk MB/s through one relay (into a sink
# that counts what arrives), connections/s for short request/response relays (CONNS clients,
# each looping connect, SIZE bytes, the echo back, close), and memory per idle relayed pair
# (IDLE_PAIRS client connections held open, each with its own connection to the backend).
# The cycle's backend closes first, as an HTTP/1.0 server does: were the clients to close
# first, tens of thousands of their ports would sit in TIME_WAIT for a minute, and binding
# port 0 would fail on the whole machine meanwhile.
# The socks rows put twistrs socks (SOCKS5, and SOCKS4 as twistrs-socks4) beside dante
# (danted, Debian's dante-server: 127.0.0.1, no authentication) and twistd's socks (SOCKS4
# only), with the same loads, each connection first asking for the backend with a CONNECT.
# Before the relays, the same bulk and cycle loads run straight to the backends, with no relay
# between (the "direct" row): with the pinning below, the client CPU does the same work per
# byte and per connection either way, so no relay can beat that row here; it is the ceiling
# that tells whether a target is reachable on this machine at all.
# Run by hand, not in CI: see bench/README.md ("Relays"). Results go to bench/results/.
#
# Needs socat, taskset and danted (Debian: apt-get install -y socat util-linux dante-server).
# Knobs (environment): BENCH_RELAYS="twistrs socat twistd twistrs-socks twistrs-socks4 dante
# twistd-socks" (the socks rows: the last four), BENCH_TWISTRS_BINS="LABEL=PATH"
# (other twistrs builds run beside, as twistrs-LABEL), BENCH_CONNS=64, BENCH_SIZE=64,
# BENCH_SECS=5, BENCH_WARMUP=1, BENCH_IDLE_PAIRS=5000, BENCH_DIRECT=1 (0 leaves out the direct
# row), BENCH_BACKLOG=511 (every relay's
# listen backlog: socat's own default is 5, twistd's 50), BENCH_PIN=1 (relays on CPU 0,
# clients and backends on CPU 1), BENCH_BUILD=1 (0 runs the binaries in target/release).
#
# To add a relay (the socks rows): give it a KIND and a PEERS line below, a case in
# relay_cmd, and, if its clients must speak first (a SOCKS request), a case in
# client_args; the rows, the report and the ratios follow from those.
set -euo pipefail

SCRIPT=relay.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
RELAYS=${BENCH_RELAYS:-"twistrs ${other_twistrs}socat twistd twistrs-socks twistrs-socks4 dante twistd-socks"}
CONNS=${BENCH_CONNS:-64}
SIZE=${BENCH_SIZE:-64}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
IDLE_PAIRS=${BENCH_IDLE_PAIRS:-5000}
DIRECT=${BENCH_DIRECT:-1}
BACKLOG=${BENCH_BACKLOG:-511}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0
bench="$root/target/release/twistrs-bench"

# What each relay is: twistrs relays are compared with the peers of their kind.
declare -A KIND=([socat]=portforward [twistd]=portforward [twistrs-socks]=socks
    [twistrs-socks4]=socks [dante]=socks [twistd-socks]=socks)
for n in twistrs $other_twistrs; do KIND[$n]=portforward; done
# The peers of each kind, and the targets against them: "peer:ratio" (at least that many
# times the peer's rate; for memory, at most 1/ratio of the peer's KiB per pair).
declare -A PEERS=([portforward]="socat:1 twistd:10" [socks]="dante:1 twistd-socks:10")

start_run relay

# Pss of a process and its children (socat forks one per connection), KiB: shared pages
# are split between the processes that share them, so forks are not counted many times.
tree_pss_kib() {
    local p t=0 v
    for p in "$1" $(children_of "$1"); do
        v=$(awk '/^Pss:/ {print $2; exit}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}
# utime + stime of a process and its children (living and reaped), clock ticks.
tree_ticks() {
    local p t=0 v
    # No relay (the direct row): nothing to count.
    [[ -n $1 ]] || { printf 0; return; }
    for p in "$1" $(children_of "$1"); do
        v=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}' || true)
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}
# Of those, user space only (utime + cutime): the relay's own work, the rest is the kernel's.
tree_user_ticks() {
    local p t=0 v
    # No relay (the direct row): nothing to count.
    [[ -n $1 ]] || { printf 0; return; }
    for p in "$1" $(children_of "$1"); do
        v=$(sed -E 's/^.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $14}' || true)
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}
# Processes in the tree of $1.
tree_count() { printf '%s' $((1 + $(children_of "$1" | wc -w))); }

# --- build and environment -------------------------------------------------------------
build_release -p twistrs -p twistrs-bench
need_twistrs portforward
need_twistrs socks
[[ -x $bench ]] || die "missing $bench"
need_tools "Debian: apt-get install -y socat util-linux" socat taskset
if [[ " $RELAYS " == *" dante "* ]]; then need_tools "Debian: apt-get install -y dante-server" danted; fi
python_env twisted Twisted "$TWISTED_VERSION"
[[ -x $venv/bin/twistd ]] || die "no twistd in $venv"
check_twisted
raise_nofile
(($(ulimit -n) >= 2 * IDLE_PAIRS + 200)) || die "ulimit -n is $(ulimit -n), too low for $IDLE_PAIRS pairs"
set_pinning

run_header ", $twistrs"
for name in $RELAYS; do
    case $name in twistrs-*) say "$name: ${TW_BIN[$name]:-?}" ;; esac
done
say "socat: $(socat -V 2>/dev/null | awk '/socat version/ {print $3; exit}'); twistd: $("$venv/bin/twistd" --version 2>&1 | head -n1); dante: $(danted -v 2>&1 | head -n1 || echo none)"
say "relays: $RELAYS; backends: twistrs-bench sink (bulk), reply (cycle) and floor (idle)"
say "runs: bulk ${WARMUP}s warm-up + ${SECS}s; cycle $CONNS clients x $SIZE B, ${WARMUP}s + ${SECS}s; $IDLE_PAIRS idle pairs"
say "listen backlog $BACKLOG for every relay; ulimit -n $(ulimit -n)"
say "pinning: ${srv_pin[*]:-none} for relays, ${cli_pin[*]:-none} for clients and backends"
wait_quiet

# --- backends and relays ---------------------------------------------------------------
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts backend $1 (sink, reply or floor) with arguments $2... on the client CPU; sets
# BPID and BPORT.
start_backend() {
    local log="$work/backend-$1.log" i
    : >"$log"
    "${cli_pin[@]}" "$bench" "$@" </dev/null >>"$log" 2>&1 &
    BPID=$!
    pids+=("$BPID")
    BPORT=
    for ((i = 0; i < 100; i++)); do
        BPORT=$(sed -nE 's/^listening ([0-9]+)$/\1/p' "$log")
        [[ -n $BPORT ]] && return 0
        sleep 0.05
    done
    cat "$log"
    die "backend $1 did not listen"
}

# The command line of relay $1 listening on port $2 and forwarding to port $3, into CMD.
relay_cmd() {
    local name=$1 port=$2 dest=$3
    case $name in
    # SOCKS proxies: the destination comes from each client's request (client_args).
    twistrs-socks | twistrs-socks4)
        CMD=("$twistrs" -n --pidfile= socks --listen "tcp:$port:interface=127.0.0.1:backlog=$BACKLOG")
        ;;
    dante)
        cat >"$work/danted.conf" <<EOF
logoutput: $work/danted.log
internal: 127.0.0.1 port = $port
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
        CMD=(danted -f "$work/danted.conf" -p "$work/danted.pid" -N 1)
        ;;
    # twistd's -p is a port number (its backlog stays Twisted's 50).
    twistd-socks) CMD=("$venv/bin/twistd" -n --pidfile= socks -i 127.0.0.1 -p "$port") ;;
    twistrs | twistrs-*)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        CMD=("$(twistrs_bin "$name")" -n --pidfile= portforward -p "tcp:$port:interface=127.0.0.1:backlog=$BACKLOG" -h 127.0.0.1 -d "$dest")
        ;;
    socat) CMD=(socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,backlog=$BACKLOG" "TCP:127.0.0.1:$dest") ;;
    twistd) CMD=("$venv/bin/twistd" -n --pidfile= portforward -p "tcp:$port:interface=127.0.0.1:backlog=$BACKLOG" -h 127.0.0.1 -d "$dest") ;;
    *) die "unknown relay $name (BENCH_RELAYS takes twistrs, twistrs-LABEL, socat, twistd, twistrs-socks, twistrs-socks4, dante, twistd-socks)" ;;
    esac
}

# Extra arguments a client of relay $1 needs: for a SOCKS proxy, the version to speak and
# the backend to ask for (none for port forwarders).
client_args() {
    case $1 in
    twistrs-socks | dante) CARGS=(--socks 5 --target "127.0.0.1:$BPORT") ;;
    twistrs-socks4 | twistd-socks) CARGS=(--socks 4 --target "127.0.0.1:$BPORT") ;;
    *) CARGS=() ;;
    esac
}

# Starts relay $1 to backend port $2 on a free port, waits until it accepts; sets SPID and
# SPORT.
start_relay() {
    local name=$1 log="$work/$1.relay.log" i
    SPORT=$(free_port)
    relay_cmd "$name" "$SPORT" "$2"
    say "[$name] ${CMD[*]}"
    "${srv_pin[@]}" "${CMD[@]}" </dev/null >>"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    for ((i = 0; i < 200; i++)); do
        # A probe connection through the relay (it makes one relay, which ends at once).
        (exec 3<>"/dev/tcp/127.0.0.1/$SPORT") 2>/dev/null && return 0
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        sleep 0.05
    done
    cat "$log"
    die "$name did not listen on $SPORT within 10 s"
}

# CPU accounting around one measured run; sets scpu (the relay's cores, its forks
# included), ucpu (of which in user space), ccpu (the client's), bcpu (the backend's) and
# other.
run_cpu_start() { t0=$(now); c0=$(tree_ticks "$SPID"); u0=$(tree_user_ticks "$SPID"); m0=$(machine_ticks); w0=$(reaped_ticks); b0=$(cpu_ticks "$BPID"); }
run_cpu_end() {
    t1=$(now); c1=$(tree_ticks "$SPID"); u1=$(tree_user_ticks "$SPID"); m1=$(machine_ticks); w1=$(reaped_ticks); b1=$(cpu_ticks "$BPID")
    scpu=$(cores "$c0" "$c1" "$t0" "$t1")
    ucpu=$(cores "$u0" "$u1" "$t0" "$t1")
    ccpu=$(cores "$w0" "$w1" "$t0" "$t1")
    bcpu=$(cores "$b0" "$b1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$scpu" "$ccpu" "$bcpu")
}

# Bulk: one connection through relay $1 into the sink.
run_bulk() {
    local name=$1 out line
    client_args "$name"
    run_cpu_start
    out=$("${cli_pin[@]}" "$bench" bulk --addr "127.0.0.1:$SPORT" --secs "$SECS" --warmup "$WARMUP" "${CARGS[@]}" 2>&1) ||
        { say "[$name] bulk: twistrs-bench bulk failed: $out"; status=1; }
    run_cpu_end
    line=$(grep -m1 '^mb_per_sec=' <<<"$out" || true)
    R[$name.bulk]=$(kv mb_per_sec "$line")
    R[$name.bulk.verified]=$(kv verified "$line")
    R[$name.bulk.cpu]="$scpu ($ucpu user)/$ccpu/$bcpu/$other"
    say "[$name] bulk: $line relay_cpu=$scpu relay_user_cpu=$ucpu client_cpu=$ccpu backend_cpu=$bcpu other_cpu=$other"
    [[ ${R[$name.bulk.verified]:-} == MISMATCH || -z $line ]] && status=1
    warn_other "[$name] bulk" "$other"
}

# Cycles: CONNS clients through relay $1 to the reply backend (which closes first, so no
# client port is left in TIME_WAIT).
run_cycle() {
    local name=$1 out line lo0 lo1
    client_args "$name"
    lo0=$(tcpext ListenOverflows)
    run_cpu_start
    out=$("${cli_pin[@]}" "$bench" cycle --addr "127.0.0.1:$SPORT" --conns "$CONNS" --size "$SIZE" \
        --secs "$SECS" --warmup "$WARMUP" "${CARGS[@]}" 2>&1) ||
        { say "[$name] cycle: twistrs-bench cycle failed: $out"; status=1; }
    run_cpu_end
    lo1=$(tcpext ListenOverflows)
    line=$(grep -m1 '^conns_per_sec=' <<<"$out" || true)
    grep -v '^conns_per_sec=' <<<"$out" | head -n 5 | sed "s/^/[$name] cycle:   /" || true
    R[$name.cycle]=$(kv conns_per_sec "$line")
    R[$name.cycle.p99]=$(kv p99_ms "$line")
    R[$name.cycle.errors]=$(kv errors "$line")
    R[$name.cycle.cpu]="$scpu ($ucpu user)/$ccpu/$bcpu/$other"
    R[$name.cycle.us]=$(awk -v c="$scpu" -v r="${R[$name.cycle]:-0}" 'BEGIN { if (r + 0 <= 0) print "n/a"; else printf "%.1f", c * 1e6 / r }')
    say "[$name] cycle: $line listen_overflows=$((lo1 - lo0)) relay_cpu=$scpu relay_user_cpu=$ucpu client_cpu=$ccpu backend_cpu=$bcpu other_cpu=$other"
    [[ ${R[$name.cycle.errors]:-1} != 0 ]] && status=1
    warn_other "[$name] cycle" "$other"
}

# Memory per idle pair: IDLE_PAIRS client connections through relay $1 (fresh) to the echo
# backend, held; the relay's Pss (with its forks) once it holds them, less before, per pair.
run_idle() {
    local name=$1 before after out="$work/idle.out" fifo="$work/idle.in" ipid hold i t0 secs procs
    client_args "$name"
    sleep 0.5
    before=$(tree_pss_kib "$SPID")
    # The last relay's output goes first: the client truncates it only once started, and
    # until then the wait below would find the last relay's "connected=" (a row or two
    # of a run were lost so, "not established" after 0 turns).
    rm -f "$fifo" "$out"
    mkfifo "$fifo"
    exec {hold}<>"$fifo"
    t0=$(now)
    "${cli_pin[@]}" "$bench" idle --addr "127.0.0.1:$SPORT" --conns "$IDLE_PAIRS" --hold-secs 300 \
        --connect-timeout-secs 290 "${CARGS[@]}" <"$fifo" >"$out" 2>&1 {hold}>&- &
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
        # How the client ended, if it did: a status above 128 is a signal from elsewhere
        # (one short run lost a socat row so, with nothing printed, once in three).
        local st=running
        kill -0 "$ipid" 2>/dev/null || { wait "$ipid" && st=0 || st=$?; }
        stop_pid "$ipid"
        say "[$name] idle: pairs not established (the idle client: $st, after $i turns, $(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }') s)"
        status=1
        return
    fi
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    sleep 2
    after=$(tree_pss_kib "$SPID")
    procs=$(tree_count "$SPID")
    exec {hold}>&-
    for ((i = 0; i < 300; i++)); do
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$ipid"
    say "[$name] idle: $(tr '\n' ' ' <"$out")(${secs} s to connect); relay Pss $before -> $after KiB in $procs process(es)"
    grep -q '^dropped=0 ' "$out" || status=1
    R[$name.idle]=$(awk -v a="$before" -v b="$after" -v n="$IDLE_PAIRS" 'BEGIN { printf "%.2f", (b - a) / n }')
}

# The ceiling: the bulk and cycle loads straight to the backends (no relay, so no relay CPU).
if [[ $DIRECT == 1 ]]; then
    say "== direct (no relay)"
    SPID=
    start_backend sink
    SPORT=$BPORT
    run_bulk direct
    stop_pid "$BPID"
    start_backend reply --size "$SIZE"
    SPORT=$BPORT
    run_cycle direct
    stop_pid "$BPID"
    R[direct.cycle.us]=n/a
fi

for name in $RELAYS; do
    say "== $name"
    start_backend sink
    start_relay "$name" "$BPORT"
    run_bulk "$name"
    stop_pid "$SPID"
    stop_pid "$BPID"
    start_backend reply --size "$SIZE"
    start_relay "$name" "$BPORT"
    run_cycle "$name"
    kill -0 "$SPID" 2>/dev/null || { say "[$name] the relay died during the runs"; status=1; }
    stop_pid "$SPID"
    stop_pid "$BPID"
    # Idle memory on a fresh relay, so the heap left by the runs above does not hide it.
    start_backend floor
    start_relay "$name" "$BPORT"
    run_idle "$name"
    stop_pid "$SPID"
    stop_pid "$BPID"
    tail -n 2 "$work/$name.relay.log" | sed "s/^/[$name] log: /"
done
say "loadavg at end: $(cat /proc/loadavg)"

# --- report ----------------------------------------------------------------------------
twistrs_relays=$(for n in $RELAYS; do [[ $n == twistrs || $n == twistrs-* ]] && printf '%s ' "$n"; done || true)
{
    say ""
    say "Relay benchmark, $stamp: bulk: one connection, ${WARMUP} s warm-up + ${SECS} s, into a sink;"
    say "cycle: $CONNS clients, a new connection per $SIZE-byte request, its echo and the server's close, ${WARMUP} s + ${SECS} s;"
    say "idle: $IDLE_PAIRS pairs held, Pss of the relay (with its forked children) per pair."
    say ""
    say "| relay | kind | bulk MB/s | half-close carried | conns/s x$CONNS | p99 ms | errors | relay CPU µs per conn | KiB per idle pair |"
    say "|---|---|---:|---|---:|---:|---:|---:|---:|"
    if [[ $DIRECT == 1 ]]; then
        say "| direct (no relay) | ceiling | $(get direct.bulk) | $(get direct.bulk.verified) | $(get direct.cycle) | $(get direct.cycle.p99) | $(get direct.cycle.errors) | n/a | n/a |"
    fi
    for name in $RELAYS; do
        say "| $name | ${KIND[$name]:-?} | $(get "$name.bulk") | $(get "$name.bulk.verified") | $(get "$name.cycle") | $(get "$name.cycle.p99") | $(get "$name.cycle.errors") | $(get "$name.cycle.us") | $(get "$name.idle") |"
    done
    say ""
    say "| ratio | value | target | |"
    say "|---|---:|---|---|"
    for tw in $twistrs_relays; do
        for pt in ${PEERS[${KIND[$tw]}]}; do
            peer=${pt%%:*} want=${pt#*:}
            has_relay=" $RELAYS "
            [[ $has_relay == *" $peer "* ]] || continue
            r=$(ratio "$(get "$tw.bulk")" "$(get "$peer.bulk")")
            say "| $tw/$peer bulk MB/s | $r | at least ${want}x | $(verdict "$r" ge "$want") |"
            r=$(ratio "$(get "$tw.cycle")" "$(get "$peer.cycle")")
            say "| $tw/$peer conns/s | $r | at least ${want}x | $(verdict "$r" ge "$want") |"
            r=$(ratio "$(get "$peer.idle")" "$(get "$tw.idle")")
            say "| ${peer}_KiB/${tw}_KiB per idle pair | $r | at least ${want}x | $(verdict "$r" ge "$want") |"
        done
    done
    # What the ceiling allows: a relay's rate over a peer's can be at most direct's over it.
    if [[ $DIRECT == 1 ]]; then
        for peer in $RELAYS; do
            [[ $peer == twistrs || $peer == twistrs-* ]] && continue
            for k in bulk cycle; do
                r=$(ratio "$(get "direct.$k")" "$(get "$peer.$k")")
                say "| ceiling: direct/$peer $( [[ $k == bulk ]] && echo 'bulk MB/s' || echo 'conns/s') | $r | (the most any relay can reach here) | |"
            done
        done
    fi
    say ""
    say "(CPU: relay (of which user space)/client/backend/other cores over the run, 1.00 = one core;"
    say "other: used by none of them, i.e. interference)"
    for name in $([[ $DIRECT == 1 ]] && echo direct) $RELAYS; do
        say "- $name: bulk $(get "$name.bulk.cpu"), cycle $(get "$name.cycle.cpu")"
    done
} | tee "$summary"

finish "some runs had errors or failures"
