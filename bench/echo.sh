#!/usr/bin/env bash
# bench/echo.sh: the echo benchmark, twistrs vs Twisted 26.10 vs asyncio side by side, and
# vs the floor (a minimal echo server on mio, `twistrs-bench floor`): msgs/s and p99 latency
# at 64 B and 4 KiB, the server's CPU time per message (user + system over the measured run,
# divided by its messages: what the server costs, whatever the load generator manages on a
# 2-core machine), and server memory per idle connection.
# Run by hand, not in CI: see bench/README.md. Results go to bench/results/.
#
# Knobs (environment): BENCH_SERVERS="twistrs twistrs_w2 floor twisted asyncio", BENCH_TWISTRS_BINS=
# "LABEL=PATH" (other twistrs builds run beside, as twistrs-LABEL), BENCH_CONNS=64,
# BENCH_SECS=5, BENCH_WARMUP=1, BENCH_IDLE_CONNS=10000, BENCH_PIN=1 (server on CPU 0,
# load generator on CPU 1; 0 lets the scheduler place both), BENCH_BUILD=1 (0 runs the
# binaries already in target/release, e.g. while the sources do not build).
# twistrs_w2 is twistrs --workers 2, not pinned (its workers share both CPUs with the load
# generator); its CPU is the master's and its workers'; no idle-memory run for it.
# BENCH_TWISTRS_ARGS="OPTIONS" adds global options to the twistrs servers (twistrs,
# twistrs-LABEL, twistrs_metrics); twistrs_metrics is twistrs with --metrics on a port of
# its own (BENCH_SERVERS="twistrs twistrs_metrics" measures what counting costs).
set -euo pipefail

SCRIPT=echo.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}twistrs_w2 floor twisted asyncio"}
CONNS=${BENCH_CONNS:-64}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
TWISTED_VERSION=26.10.0
SIZES=(64 4096)

start_run echo

fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# --- build and environment -------------------------------------------------------------
bench="$root/target/release/twistrs-bench"
build_release -p twistrs -p twistrs-bench
[[ -x $twistrs && -x $bench ]] || die "missing $twistrs or $bench"

python_env twisted Twisted "$TWISTED_VERSION"
check_twisted

set_pinning

run_header ""
say "servers: $SERVERS; echo: $CONNS conns, ${SIZES[*]} B, ${WARMUP}s warm-up + ${SECS}s; idle: $IDLE_CONNS conns"
say "pinning: ${srv_pin[*]:-none} for servers, ${cli_pin[*]:-none} for the load generator"
wait_quiet

# --- one server ------------------------------------------------------------------------
# Starts server $1 on a free port; sets SPID and SPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" cmd i
    case $name in
    twistrs | twistrs-* | twistrs_metrics)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        twistrs_args "$name"
        cmd=("$(twistrs_bin "$name")" -n --pidfile= "${TW_ARGS[@]}" echo --listen tcp:0:interface=127.0.0.1)
        ;;
    twistrs_w2)
        twistrs_args "$name"
        cmd=("$twistrs" -n --pidfile= --workers 2 "${TW_ARGS[@]}" echo --listen tcp:0:interface=127.0.0.1)
        ;;
    floor) cmd=("$bench" floor) ;;
    twisted) cmd=("$py" "$here/peers/twisted_echo.py" 0) ;;
    asyncio) cmd=("$py" "$here/peers/asyncio_echo.py" 0) ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, twistrs_metrics, twistrs_w2, floor, twisted, asyncio)" ;;
    esac
    local pin=("${srv_pin[@]}")
    [[ $name == *_w2 ]] && pin=()
    "${pin[@]}" "${cmd[@]}" </dev/null >"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    SPORT=
    for ((i = 0; i < 100; i++)); do
        # The echo listener's line, not the Metrics listener's (--metrics); as text or as
        # JSON (BENCH_TWISTRS_ARGS="--log-format json").
        SPORT=$(sed -nE '/Metrics starting on /d; s/.* starting on ([0-9]+)("}|)$/\1/p; s/^listening ([0-9]+)$/\1/p' "$log" | head -n1)
        [[ -n $SPORT ]] && break
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        sleep 0.1
    done
    [[ -n $SPORT ]] || { cat "$log"; die "$name did not report its port within 10 s"; }
    if [[ $name == *_w2 ]]; then
        for ((i = 0; i < 100; i++)); do
            grep -q ' workers serve\.$' "$log" && break
            sleep 0.1
        done
    fi
    say "[$name] pid $SPID listening on 127.0.0.1:$SPORT, RSS $(rss_kib "$SPID") KiB"
}

run_echo() {
    local name=$1 size=$2 t0 c0 u0 m0 t1 c1 u1 m1 line cpu other
    # The warm-up is a run of its own, so the server's CPU time is read over the measured
    # run alone.
    if ((WARMUP > 0)); then
        "${cli_pin[@]}" "$bench" echo --addr "127.0.0.1:$SPORT" --conns "$CONNS" \
            --size "$size" --secs "$WARMUP" --warmup 0 >/dev/null || true
    fi
    t0=$(now)
    c0=$(tree_ticks "$SPID")
    u0=$(tree_ticks "$SPID" user)
    m0=$(machine_ticks)
    if ! line=$("${cli_pin[@]}" "$bench" echo --addr "127.0.0.1:$SPORT" --conns "$CONNS" \
        --size "$size" --secs "$SECS" --warmup 0); then
        say "[$name] echo ${size} B: the load generator failed"
        status=1
        line="msgs_per_sec=n/a p50_ms=n/a p99_ms=n/a errors=failed client_cpu=n/a"
    fi
    t1=$(now)
    c1=$(tree_ticks "$SPID")
    u1=$(tree_ticks "$SPID" user)
    m1=$(machine_ticks)
    cpu=$(cores "$c0" "$c1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$cpu" "$(kv client_cpu "$line")")
    say "[$name] echo ${size} B: $line server_cpu=$cpu other_cpu=$other"
    R[$name.other$size]=$other
    warn_other "[$name] echo ${size} B" "$other"
    R[$name.msgs$size]=$(kv msgs_per_sec "$line")
    R[$name.p50_$size]=$(kv p50_ms "$line")
    R[$name.p99_$size]=$(kv p99_ms "$line")
    R[$name.err$size]=$(kv errors "$line")
    R[$name.ccpu$size]=$(kv client_cpu "$line")
    R[$name.scpu$size]=$cpu
    # Server CPU per message, kernel included (user + system ticks over the run, divided by
    # the messages of the run): a cost that does not depend on how fast the load generator is.
    R[$name.us$size]=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v m="$(kv msgs "$line")" \
        'BEGIN { if (m !~ /^[0-9]+$/ || m + 0 <= 0) print "n/a"; else printf "%.2f", (b - a) / hz * 1e6 / m }')
    R[$name.uus$size]=$(awk -v a="$u0" -v b="$u1" -v hz="$hz" -v m="$(kv msgs "$line")" \
        'BEGIN { if (m !~ /^[0-9]+$/ || m + 0 <= 0) print "n/a"; else printf "%.2f", (b - a) / hz * 1e6 / m }')
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
    if [[ $name == *_w2 ]]; then R[$name.kib]=n/a; else measure_idle "$name"; fi
    show_metrics "$work/$name.server.log" 'factory="Echo"' "$name"
    stop_pid "$SPID"
    tail -n 3 "$work/$name.server.log" | sed "s/^/[$name] log: /"
done
say "loadavg at end: $(cat /proc/loadavg)"

# --- report ----------------------------------------------------------------------------
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
    if has twistrs; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for peer in twisted asyncio; do
            has "$peer" || continue
            if [[ $peer == twisted ]]; then op=ge t=4 target="at least 4x"; else op=gt t=1 target="ahead (> 1x)"; fi
            for size in "${SIZES[@]}"; do
                label=$([[ $size == 64 ]] && echo 64B || echo 4KiB)
                r=$(ratio "$(get "twistrs.msgs$size")" "$(get "$peer.msgs$size")")
                say "| twistrs/$peer msg/s $label | $r | $target | $(verdict "$r" "$op" "$t") |"
            done
        done
        for peer in twisted asyncio; do
            has "$peer" || continue
            r=$(ratio "$(get "$peer.kib")" "$(get twistrs.kib)")
            if [[ $peer == twisted ]]; then
                say "| twisted_KiB/twistrs_KiB per idle conn | $r | at least 4x (a quarter of Twisted's memory) | $(verdict "$r" ge 4) |"
            else
                say "| asyncio_KiB/twistrs_KiB per idle conn | $r | (no target) | |"
            fi
        done
        if has twistrs_w2; then
            for size in "${SIZES[@]}"; do
                label=$([[ $size == 64 ]] && echo 64B || echo 4KiB)
                r=$(ratio "$(get "twistrs_w2.msgs$size")" "$(get "twistrs.msgs$size")")
                say "| twistrs_w2/twistrs msg/s $label (2 workers over 1) | $r | above 1x | $(verdict "$r" gt 1) |"
            done
        fi
        if has twistrs_metrics; then
            for size in "${SIZES[@]}"; do
                label=$([[ $size == 64 ]] && echo 64B || echo 4KiB)
                r=$(ratio "$(get "twistrs_metrics.msgs$size")" "$(get "twistrs.msgs$size")")
                say "| twistrs_metrics/twistrs msg/s $label (--metrics on over off) | $r | at least 0.97x (counting costs nothing measurable) | $(verdict "$r" ge 0.97) |"
            done
        fi
    fi
    say ""
    if has twistrs; then
        say ""
        say "| server CPU per message | 64 B | 4 KiB | of which user space, 64 B | 4 KiB | target |"
        say "|---|---:|---:|---:|---:|---|"
        for name in $SERVERS; do
            say "| $name µs/msg | $(get "$name.us64") | $(get "$name.us4096") | $(get "$name.uus64") | $(get "$name.uus4096") | |"
        done
        if has floor; then
            r64=$(ratio "$(get twistrs.us64)" "$(get floor.us64)")
            r4k=$(ratio "$(get twistrs.us4096)" "$(get floor.us4096)")
            u64=$(ratio "$(get twistrs.uus64)" "$(get floor.uus64)")
            u4k=$(ratio "$(get twistrs.uus4096)" "$(get floor.uus4096)")
            say "| twistrs/floor | $r64 $(verdict "$r64" le 1.15) | $r4k $(verdict "$r4k" le 1.15) | $u64 | $u4k | at most 1.15x |"
        fi
        if has twisted; then
            r64=$(ratio "$(get twistrs.us64)" "$(get twisted.us64)")
            r4k=$(ratio "$(get twistrs.us4096)" "$(get twisted.us4096)")
            u64=$(ratio "$(get twistrs.uus64)" "$(get twisted.uus64)")
            u4k=$(ratio "$(get twistrs.uus4096)" "$(get twisted.uus4096)")
            say "| twistrs/twisted | $r64 $(verdict "$r64" le 0.25) | $r4k $(verdict "$r4k" le 0.25) | $u64 | $u4k | at most 0.25x |"
        fi
        if has twistrs_metrics; then
            r64=$(ratio "$(get twistrs_metrics.us64)" "$(get twistrs.us64)")
            r4k=$(ratio "$(get twistrs_metrics.us4096)" "$(get twistrs.us4096)")
            u64=$(ratio "$(get twistrs_metrics.uus64)" "$(get twistrs.uus64)")
            u4k=$(ratio "$(get twistrs_metrics.uus4096)" "$(get twistrs.uus4096)")
            say "| twistrs_metrics/twistrs | $r64 $(verdict "$r64" le 1.03) | $r4k $(verdict "$r4k" le 1.03) | $u64 | $u4k | at most 1.03x |"
        fi
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

finish "some runs reported errors, failures or dropped connections"
