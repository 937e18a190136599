#!/usr/bin/env bash
# bench/inetd.sh: the inetd benchmark, twistrs inetd vs Debian's openbsd-inetd vs twistd
# inetd (Twisted 26.10), each serving the same two nowait services on 127.0.0.1: sessions
# (new connections) per second with CONNS at a time, for /bin/true (connect, the program
# runs and exits, the server's close) and /bin/cat with a 1 KiB exchange, to the server's
# close (send 1 KiB, read it back, half-close, the close) and to the echo (the client
# closes once the 1 KiB is back: twistd closes its copy of a connection only when Python's
# garbage collector gets to it, so its sessions hardly ever end by themselves). A session
# is a fork and an exec in every server, so this measures how fast each starts programs for
# connections; the server's own CPU and its children's (reaped: cutime + cstime) are
# reported apart.
# Run by hand, not in CI: see bench/README.md ("inetd"). Results go to bench/results/.
#
# Needs openbsd-inetd (Debian: apt-get install -y openbsd-inetd; the package's own service
# must not be running: the script refuses then). Each server reads a file of its own on
# high ports; openbsd-inetd runs in the foreground (-i) with that file, and twistd binds all
# interfaces (it has no option for an address).
# Knobs (environment): BENCH_SERVERS="twistrs openbsd twistd", BENCH_TWISTRS_BINS=
# "LABEL=PATH" (other twistrs builds run beside, as twistrs-LABEL), BENCH_CONNS=32,
# BENCH_SECS=5, BENCH_WARMUP=1, BENCH_PIN=1 (servers and their programs on CPU 0, the
# load generator on CPU 1; 0 lets the scheduler place them), BENCH_BUILD=1 (0 runs the
# binaries already in target/release).
set -euo pipefail

SCRIPT=inetd.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}openbsd twistd"}
CONNS=${BENCH_CONNS:-32}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0
OPENBSD_INETD=/usr/sbin/inetd
# The programs of the two runs, as inetd.conf gives them (path, then argv).
PROG_TRUE="/bin/true true"
PROG_CAT="/bin/cat cat"

start_run inetd

# cutime + cstime of process $1: the CPU of the children it reaped, clock ticks.
child_ticks() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $14 + $15}' || true; }

# --- build and environment -------------------------------------------------------------
bench="$root/target/release/twistrs-bench"
build_release -p twistrs -p twistrs-bench
[[ -x $twistrs && -x $bench ]] || die "missing $twistrs or $bench"
need_twistrs inetd
if has openbsd; then
    [[ -x $OPENBSD_INETD ]] || die "$OPENBSD_INETD not found (apt-get install -y openbsd-inetd)"
    # The package's service (started by its init script, pidfile /run/inetd.pid) would
    # share the CPU and perhaps the ports: this run refuses rather than stop it.
    if [[ -s /run/inetd.pid ]] && kill -0 "$(cat /run/inetd.pid)" 2>/dev/null; then
        die "the openbsd-inetd service runs (PID $(cat /run/inetd.pid)): stop it first (service openbsd-inetd stop)"
    fi
fi
if has twistd; then
    python_env twisted Twisted "$TWISTED_VERSION"
    check_twisted
fi
set_pinning
raise_nofile

run_header ""
say "servers: $SERVERS; $CONNS sessions at a time, ${WARMUP}s warm-up + ${SECS}s per run"
say "pinning: ${srv_pin[*]:-none} for servers and their programs, ${cli_pin[*]:-none} for the load generator"
wait_quiet

# Two ports free just now (TCP on 127.0.0.1); sets P1 and P2.
free_ports() {
    local p
    p=$(python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
    read -r P1 P2 <<<"$p"
}

# Starts server $1 on a file of its own; sets SPID, P1 (/bin/true) and P2 (/bin/cat).
start_server() {
    local name=$1 log="$work/$1.server.log" conf="$work/$1.conf" cmd i up
    free_ports
    # openbsd-inetd and twistrs read OpenBSD's ADDR:service; twistd takes a port alone and
    # binds all interfaces. nowait.1000000: openbsd-inetd's default allows 256 a minute;
    # twistd ignores the suffix.
    local addr="127.0.0.1:"
    [[ $name == twistd ]] && addr=""
    {
        printf '%s%s\tstream\ttcp\tnowait.1000000\troot\t%s\n' "$addr" "$P1" "$PROG_TRUE"
        printf '%s%s\tstream\ttcp\tnowait.1000000\troot\t%s\n' "$addr" "$P2" "$PROG_CAT"
    } >"$conf"
    case $name in
    twistrs | twistrs-*)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        cmd=("$(twistrs_bin "$name")" -n --pidfile= inetd -f "$conf")
        ;;
    openbsd) cmd=("$OPENBSD_INETD" -i "$conf") ;;
    twistd) cmd=("$venv/bin/twistd" -n --pidfile= inetd -f "$conf") ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, openbsd, twistd)" ;;
    esac
    say "[$name] $(sed -E 's/\t/ /g' "$conf" | tr '\n' ';')"
    "${srv_pin[@]}" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    up=
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$P1") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$P2") 2>/dev/null; then
            up=1
            break
        fi
        sleep 0.1
    done
    [[ -n $up ]] || { cat "$log"; die "$name did not listen on $P1 and $P2 within 10 s"; }
    say "[$name] pid $SPID listening on 127.0.0.1:$P1 (true) and :$P2 (cat), RSS $(rss_kib "$SPID") KiB"
}

run_sessions() {
    local name=$1 run=$2 port=$3 send=$4 close=$5 t0 c0 k0 m0 t1 c1 k1 m1 line cpu kids other
    if ((WARMUP > 0)); then
        "${cli_pin[@]}" "$bench" sessions --addr "127.0.0.1:$port" --conns "$CONNS" \
            --send "$send" --close "$close" --secs "$WARMUP" --warmup 0 >/dev/null 2>&1 || true
    fi
    t0=$(now)
    c0=$(cpu_ticks "$SPID")
    k0=$(child_ticks "$SPID")
    m0=$(machine_ticks)
    if ! line=$("${cli_pin[@]}" "$bench" sessions --addr "127.0.0.1:$port" --conns "$CONNS" \
        --send "$send" --close "$close" --secs "$SECS" --warmup 0); then
        say "[$name] $run: the load generator failed"
        status=1
        line="sessions_per_sec=n/a p50_ms=n/a p99_ms=n/a errors=failed client_cpu=n/a"
    fi
    t1=$(now)
    c1=$(cpu_ticks "$SPID")
    k1=$(child_ticks "$SPID")
    m1=$(machine_ticks)
    cpu=$(cores "$c0" "$c1" "$t0" "$t1")
    kids=$(cores "$k0" "$k1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$cpu" "$kids" "$(kv client_cpu "$line")")
    say "[$name] $run: $line server_cpu=$cpu children_cpu=$kids other_cpu=$other"
    warn_other "[$name] $run" "$other"
    R[$name.$run.sps]=$(kv sessions_per_sec "$line")
    R[$name.$run.p50]=$(kv p50_ms "$line")
    R[$name.$run.p99]=$(kv p99_ms "$line")
    R[$name.$run.err]=$(kv errors "$line")
    R[$name.$run.scpu]=$cpu
    R[$name.$run.kcpu]=$kids
    R[$name.$run.ccpu]=$(kv client_cpu "$line")
    R[$name.$run.other]=$other
    # The server's own CPU per session (not its programs'), kernel included.
    R[$name.$run.us]=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v m="$(kv "done" "$line")" \
        'BEGIN { if (m !~ /^[0-9]+$/ || m + 0 <= 0) print "n/a"; else printf "%.1f", (b - a) / hz * 1e6 / m }')
    [[ ${R[$name.$run.err]} == 0 ]] || status=1
}

for name in $SERVERS; do
    say ""
    say "== $name"
    start_server "$name"
    run_sessions "$name" true "$P1" 0 server
    run_sessions "$name" cat "$P2" 1024 server
    run_sessions "$name" echo "$P2" 1024 client
    R[$name.rss]=$(awk -v k="$(rss_kib "$SPID")" 'BEGIN { printf "%.1f", k / 1024 }')
    stop_pid "$SPID"
done
say ""
say "loadavg at end: $(cat /proc/loadavg)"

# --- report ----------------------------------------------------------------------------
{
    say ""
    say "inetd benchmark, $stamp: twistrs-bench sessions, $CONNS at a time, ${WARMUP} s warm-up + ${SECS} s per run;"
    say "true: connect, /bin/true, the server's close; cat: 1 KiB sent and read back through /bin/cat,"
    say "half-close, the server's close; echo: the same until the 1 KiB is back, then the client closes."
    say ""
    say "| server | sessions/s true | p99 ms | sessions/s cat 1 KiB | p99 ms | sessions/s echo 1 KiB | p99 ms | RSS after MiB |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        say "| $name | $(get "$name.true.sps") | $(get "$name.true.p99") | $(get "$name.cat.sps") | $(get "$name.cat.p99") | $(get "$name.echo.sps") | $(get "$name.echo.p99") | $(get "$name.rss") |"
    done
    if has twistrs; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for run in true cat echo; do
            if has openbsd; then
                r=$(ratio "$(get "twistrs.$run.sps")" "$(get "openbsd.$run.sps")")
                say "| twistrs/openbsd-inetd $run | $r | at least 1x | $(verdict "$r" ge 1) |"
            fi
            if has twistd; then
                r=$(ratio "$(get "twistrs.$run.sps")" "$(get "twistd.$run.sps")")
                say "| twistrs/twistd $run | $r | at least 5x | $(verdict "$r" ge 5) |"
            fi
        done
    fi
    say ""
    say "| server | run | sessions/s | p50 ms | p99 ms | errors | server CPU | its programs' CPU | client CPU | other CPU | server CPU µs/session |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        for run in true cat echo; do
            say "| $name | $run | $(get "$name.$run.sps") | $(get "$name.$run.p50") | $(get "$name.$run.p99") | $(get "$name.$run.err") | $(get "$name.$run.scpu") | $(get "$name.$run.kcpu") | $(get "$name.$run.ccpu") | $(get "$name.$run.other") | $(get "$name.$run.us") |"
        done
    done
    say ""
    say "(CPU: cores busy over the measured run, 1.00 = one full core; programs' CPU: what the"
    say "server's reaped children used (cutime + cstime); other: used by none of these, i.e."
    say "interference; µs/session: the server process's own CPU, kernel included, per session.)"
} | tee "$summary"

finish "some runs had errors or failures"
