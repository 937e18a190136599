#!/usr/bin/env bash
# bench/echo.sh: the echo benchmark, twistrs vs Twisted 26.10 vs asyncio side by side:
# msgs/s and p99 latency at 64 B and 4 KiB, and server memory per idle connection.
# Run by hand, not in CI: see bench/README.md. Results go to bench/results/.
#
# Knobs (environment): BENCH_SERVERS="twistrs twisted asyncio", BENCH_CONNS=64,
# BENCH_SECS=5, BENCH_WARMUP=1, BENCH_IDLE_CONNS=10000, BENCH_PIN=1 (server on CPU 0,
# load generator on CPU 1; 0 lets the scheduler place both), BENCH_BUILD=1 (0 runs the
# binaries already in target/release, e.g. while the sources do not build).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

SERVERS=${BENCH_SERVERS:-"twistrs twisted asyncio"}
CONNS=${BENCH_CONNS:-64}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0
SIZES=(64 4096)

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$here/results"
mkdir -p "$results"
raw="$results/echo-$stamp.log"
summary="$results/echo-$stamp.md"
work=$(mktemp -d)
# Everything printed from here on is also the raw record of the run.
exec > >(tee -a "$raw") 2>&1

pids=()          # processes this script started and has not reaped yet
status=0         # 1 once any run reported errors or dropped connections

say() { printf '%s\n' "$*"; }
die() {
    say "echo.sh: $*" >&2
    exit 1
}

# SIGTERM, then SIGKILL after 10 s; only for PIDs this script started.
stop_pid() {
    local pid=$1 i
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "  pid $pid ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# key=value field of a twistrs-bench output line.
kv() { grep -oE "(^| )$1=[^ ]*" <<<"$2" | head -n1 | cut -d= -f2; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
# utime + stime in clock ticks (fields 14 and 15, counted after the "(comm)" field).
cpu_ticks() { sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
now() { date +%s.%N; }
# Busy clock ticks of the whole machine (all of /proc/stat's cpu line but idle and iowait).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
hz=$(getconf CLK_TCK)

# --- build and environment -------------------------------------------------------------
twistrs="$root/target/release/twistrs"
bench="$root/target/release/twistrs-bench"
if [[ $BUILD == 1 ]]; then
    say "== build"
    (cd "$root" && cargo build --release -p twistrs -p twistrs-bench)
else
    say "== build skipped (BENCH_BUILD=0): $(ls -l --time-style=+%FT%T "$twistrs" | awk '{print $6}') $twistrs"
fi
[[ -x $twistrs && -x $bench ]] || die "missing $twistrs or $bench"

say "== python environment"
venv="$here/.venv"
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import sys, twisted; sys.exit(twisted.__version__ != '$TWISTED_VERSION')" 2>/dev/null; then
    "$venv/bin/pip" install --quiet "Twisted==$TWISTED_VERSION"
fi
"$py" -c "import sys, twisted; from twisted.internet import reactor; \
print('python', sys.version.split()[0], '| Twisted', twisted.__version__, '|', type(reactor).__name__)" ||
    die "Twisted does not import from $venv"

srv_pin=()
cli_pin=()
if [[ $PIN == 1 ]] && command -v taskset >/dev/null && (($(nproc) >= 2)); then
    srv_pin=(taskset -c 0)
    cli_pin=(taskset -c 1)
fi

say "== run $stamp"
say "host: $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
say "twistrs: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
say "servers: $SERVERS; echo: $CONNS conns, ${SIZES[*]} B, ${WARMUP}s warm-up + ${SECS}s; idle: $IDLE_CONNS conns"
say "pinning: ${srv_pin[*]:-none} for servers, ${cli_pin[*]:-none} for the load generator"
say "loadavg at start: $(cat /proc/loadavg)"
# Anything else running (a build, a test suite) skews every number: wait up to a minute
# for the machine to be quiet (under 0.2 busy cores over one second).
for ((i = 0; i < 60; i++)); do
    b0=$(machine_ticks)
    sleep 1
    busy=$(awk -v a="$b0" -v b="$(machine_ticks)" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
    awk -v b="$busy" 'BEGIN { exit !(b < 0.2) }' && break
    ((i % 10 == 0)) && say "machine busy ($busy cores used by other processes); waiting for it to be idle"
done
say "machine busy before start: $busy cores"

# --- one server ------------------------------------------------------------------------
declare -A R   # R[name.key] = value

# Starts server $1 on a free port; sets SPID and SPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" cmd i
    case $name in
    twistrs) cmd=("$twistrs" -n echo --listen tcp:0:interface=127.0.0.1) ;;
    twisted) cmd=("$py" "$here/peers/twisted_echo.py" 0) ;;
    asyncio) cmd=("$py" "$here/peers/asyncio_echo.py" 0) ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, twisted, asyncio)" ;;
    esac
    "${srv_pin[@]}" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    SPORT=
    for ((i = 0; i < 100; i++)); do
        SPORT=$(sed -nE 's/.* starting on ([0-9]+)$/\1/p; s/^listening ([0-9]+)$/\1/p' "$log" | head -n1)
        [[ -n $SPORT ]] && break
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        sleep 0.1
    done
    [[ -n $SPORT ]] || { cat "$log"; die "$name did not report its port within 10 s"; }
    say "[$name] pid $SPID listening on 127.0.0.1:$SPORT, RSS $(rss_kib "$SPID") KiB"
}

run_echo() {
    local name=$1 size=$2 t0 c0 m0 t1 c1 m1 line cpu other
    t0=$(now)
    c0=$(cpu_ticks "$SPID")
    m0=$(machine_ticks)
    if ! line=$("${cli_pin[@]}" "$bench" echo --addr "127.0.0.1:$SPORT" --conns "$CONNS" \
        --size "$size" --secs "$SECS" --warmup "$WARMUP"); then
        say "[$name] echo ${size} B: the load generator failed"
        status=1
        line="msgs_per_sec=n/a p50_ms=n/a p99_ms=n/a errors=failed client_cpu=n/a"
    fi
    t1=$(now)
    c1=$(cpu_ticks "$SPID")
    m1=$(machine_ticks)
    cpu=$(awk -v a="$c0" -v b="$c1" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
        'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) }')
    # What neither the server nor the load generator used: interference from elsewhere.
    other=$(awk -v a="$m0" -v b="$m1" -v t0="$t0" -v t1="$t1" -v hz="$hz" -v s="$cpu" \
        -v c="$(kv client_cpu "$line")" 'BEGIN {
            o = (b - a) / hz / (t1 - t0) - s - c; printf "%.2f", (o < 0 ? 0 : o) }')
    say "[$name] echo ${size} B: $line server_cpu=$cpu other_cpu=$other"
    R[$name.other$size]=$other
    if awk -v o="$other" 'BEGIN { exit !(o > 0.15) }'; then
        say "[$name] echo ${size} B: WARNING: other processes used $other cores during this run"
    fi
    R[$name.msgs$size]=$(kv msgs_per_sec "$line")
    R[$name.p50_$size]=$(kv p50_ms "$line")
    R[$name.p99_$size]=$(kv p99_ms "$line")
    R[$name.err$size]=$(kv errors "$line")
    R[$name.ccpu$size]=$(kv client_cpu "$line")
    R[$name.scpu$size]=$cpu
    # Server CPU per message, kernel included: a cost that does not depend on how fast
    # the load generator is.
    R[$name.us$size]=$(awk -v c="$cpu" -v m="${R[$name.msgs$size]}" \
        'BEGIN { if (m !~ /^[0-9.]+$/ || m + 0 <= 0) print "n/a"; else printf "%.1f", c * 1e6 / m }')
    [[ ${R[$name.err$size]} == 0 ]] || status=1
}

# RSS before and after IDLE_CONNS idle connections, checked as accepted via /proc/PID/fd.
measure_idle() {
    local name=$1 fds0 before after out="$work/idle.out" fifo="$work/idle.in" ipid hold i
    fds0=$(fd_count "$SPID")
    before=$(rss_kib "$SPID")
    rm -f "$fifo"
    mkfifo "$fifo"
    # Read-write, so opening never blocks; closing it is the idle client's EOF (the client
    # itself must not inherit it).
    exec {hold}<>"$fifo"
    "${cli_pin[@]}" "$bench" idle --addr "127.0.0.1:$SPORT" --conns "$IDLE_CONNS" \
        --hold-secs 300 <"$fifo" >"$out" 2>&1 {hold}>&- &
    ipid=$!
    pids+=("$ipid")
    for ((i = 0; i < 1800; i++)); do
        grep -q '^connected=' "$out" && break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q '^connected=' "$out"; then
        cat "$out"
        exec {hold}>&-
        stop_pid "$ipid"
        say "[$name] idle: connections not established"
        R[$name.kib]=n/a
        status=1
        return
    fi
    # connect() completes before accept(); wait until the server holds every descriptor.
    for ((i = 0; i < 300; i++)); do
        (($(fd_count "$SPID") >= fds0 + IDLE_CONNS)) && break
        sleep 0.1
    done
    local fds1
    fds1=$(fd_count "$SPID")
    sleep 1 # let lazy per-connection work (first poll round, deferred frees) settle
    after=$(rss_kib "$SPID")
    exec {hold}>&-
    for ((i = 0; i < 300; i++)); do
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$ipid"
    say "[$name] idle: $(tr '\n' ' ' <"$out")"
    say "[$name] idle: server fds $fds0 -> $fds1, RSS $before -> $after KiB"
    ((fds1 >= fds0 + IDLE_CONNS)) || { say "[$name] idle: WARNING: server holds fewer descriptors than connections"; status=1; }
    grep -q '^dropped=0 ' "$out" || status=1
    R[$name.kib]=$(awk -v a="$before" -v b="$after" -v n="$IDLE_CONNS" 'BEGIN { printf "%.3f", (b - a) / n }')
    R[$name.rss0]=$before
    R[$name.rss1]=$after
}

for name in $SERVERS; do
    say "== $name"
    start_server "$name"
    for size in "${SIZES[@]}"; do
        run_echo "$name" "$size"
    done
    measure_idle "$name"
    stop_pid "$SPID"
    tail -n 3 "$work/$name.server.log" | sed "s/^/[$name] log: /"
done
say "loadavg at end: $(cat /proc/loadavg)"

# --- report ----------------------------------------------------------------------------
get() { printf '%s' "${R[$1]:-n/a}"; }
# a / b as "1.23x", or n/a when either is missing or b is not positive.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 <= 0) { print "n/a"; exit }
        printf "%.2fx", a / b }'
}
# Whether ratio $1 ("1.23x") is at least ($2 == ge) or above ($2 == gt) $3.
verdict() {
    awk -v r="${1%x}" -v op="$2" -v t="$3" 'BEGIN {
        if (r !~ /^[0-9.]+$/) { print "n/a"; exit }
        ok = (op == "ge") ? (r + 0 >= t) : (r + 0 > t)
        print ok ? "met" : "MISSED" }'
}

{
    say ""
    say "Echo benchmark, $stamp: $CONNS connections, one message in flight each,"
    say "${WARMUP} s warm-up + ${SECS} s per size; memory over $IDLE_CONNS idle connections."
    say ""
    say "| server | msg/s 64B | p99 ms 64B | msg/s 4KiB | p99 ms 4KiB | KiB/idle conn |"
    say "|---|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        say "| $name | $(get "$name.msgs64") | $(get "$name.p99_64") | $(get "$name.msgs4096") | $(get "$name.p99_4096") | $(get "$name.kib") |"
    done
    if [[ " $SERVERS " == *" twistrs "* ]]; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for peer in twisted asyncio; do
            [[ " $SERVERS " == *" $peer "* ]] || continue
            if [[ $peer == twisted ]]; then op=ge t=4 target="at least 4x"; else op=gt t=1 target="ahead (> 1x)"; fi
            for size in "${SIZES[@]}"; do
                label=$([[ $size == 64 ]] && echo 64B || echo 4KiB)
                r=$(ratio "$(get "twistrs.msgs$size")" "$(get "$peer.msgs$size")")
                say "| twistrs/$peer msg/s $label | $r | $target | $(verdict "$r" "$op" "$t") |"
            done
        done
        for peer in twisted asyncio; do
            [[ " $SERVERS " == *" $peer "* ]] || continue
            r=$(ratio "$(get "$peer.kib")" "$(get twistrs.kib)")
            if [[ $peer == twisted ]]; then
                say "| twisted_KiB/twistrs_KiB per idle conn | $r | at least 4x (a quarter of Twisted's memory) | $(verdict "$r" ge 4) |"
            else
                say "| asyncio_KiB/twistrs_KiB per idle conn | $r | (no target) | |"
            fi
        done
    fi
    say ""
    say "| server | size | p50 ms | p99 ms | errors | server CPU | load generator CPU | other CPU | server CPU µs/msg |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        for size in "${SIZES[@]}"; do
            say "| $name | $size | $(get "$name.p50_$size") | $(get "$name.p99_$size") | $(get "$name.err$size") | $(get "$name.scpu$size") | $(get "$name.ccpu$size") | $(get "$name.other$size") | $(get "$name.us$size") |"
        done
    done
    say ""
    say "(CPU: cores busy over warm-up and run, 1.00 = one full core; other: used by neither"
    say "side, i.e. interference; µs/msg: server CPU time, kernel included, per echoed message.)"
} | tee "$summary"

say ""
say "raw log: ${raw#"$root"/}"
say "summary: ${summary#"$root"/}"
if ((status != 0)); then
    say "echo.sh: some runs reported errors, failures or dropped connections (see above)"
fi
exit "$status"
