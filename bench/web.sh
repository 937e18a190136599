#!/usr/bin/env bash
# bench/web.sh: the static-file web benchmark, twistrs web vs twistd web (Twisted 26.10)
# vs nginx (one worker, access log off), all serving the same two files on 127.0.0.1:
# req/s and p99 at 1 KiB with 64 and 1000 keep-alive connections, req/s and MiB/s at
# 1 MiB, time from process start to the first 200, and idle RSS.
# Run by hand, not in CI: see bench/README.md ("Web"). Results go to bench/results/.
#
# Needs wrk and nginx (Debian: apt-get install -y nginx-light wrk) and curl.
# Knobs (environment): BENCH_SERVERS="twistrs twistd nginx twistrs_w2 nginx_w2",
# BENCH_TWISTRS_BINS="LABEL=PATH"
# (other twistrs builds run beside, as twistrs-LABEL), BENCH_CONNS=64,
# BENCH_MANY_CONNS=1000, BENCH_SECS=5, BENCH_WARMUP=1, BENCH_STARTS=5 (start-up runs,
# median reported), BENCH_WRK_THREADS=1, BENCH_PIN=1 (servers on CPU 0, wrk and the
# start-up poller on CPU 1; 0 lets the scheduler place them), BENCH_BUILD=1 (0 runs the
# twistrs binary already in target/release), BENCH_BACKLOG= (empty: each server's own
# listen backlog, 511 for twistrs and nginx, 50 for twistd; a number gives every server it).
# Two of the servers run on every core: twistrs_w2 (twistrs --workers 2) and nginx_w2
# (worker_processes 2), not pinned (their workers share both CPUs with wrk): compare them
# with each other (BENCH_SERVERS="twistrs nginx twistrs_w2 nginx_w2" runs those four).
# BENCH_TWISTRS_ARGS="OPTIONS" adds global options to the twistrs servers (twistrs,
# twistrs-LABEL, twistrs_metrics, twistrs_w2); twistrs_metrics is twistrs with --metrics on
# a port of its own (BENCH_SERVERS="twistrs twistrs_metrics" measures what counting costs).
# Each server gets a port chosen here; the Metrics listener's is never taken for it.
set -euo pipefail

SCRIPT=web.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}twistd nginx twistrs_w2 nginx_w2"}
CONNS=${BENCH_CONNS:-64}
MANY_CONNS=${BENCH_MANY_CONNS:-1000}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
STARTS=${BENCH_STARTS:-5}
THREADS=${BENCH_WRK_THREADS:-1}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
BACKLOG=${BENCH_BACKLOG:-}
TWISTED_VERSION=26.10.0

start_run web


# --- build and environment -------------------------------------------------------------
build_release -p twistrs
need_twistrs web

# A check this script's servers once failed (see server_cmd): /dev/null must be the device.
need_dev_null
need_tools "Debian: apt-get install -y nginx-light wrk curl util-linux" wrk nginx curl taskset

python_env twisted Twisted "$TWISTED_VERSION"
[[ -x $venv/bin/twistd ]] || die "no twistd in $venv"
check_twisted

# wrk with 1000 connections needs more than 1024 descriptors; servers inherit this too.
raise_nofile
(($(ulimit -n) >= MANY_CONNS + 100)) || die "ulimit -n is $(ulimit -n), too low for $MANY_CONNS connections"

set_pinning
srv_cpu=()
cli_cpu=()
if ((${#srv_pin[@]} > 0)); then
    srv_cpu=(--server-cpu 0)
    cli_cpu=(--client-cpu 1)
fi

# The files: random, so nothing compresses or dedups them.
www="$work/www"
mkdir -p "$www"
head -c 1024 /dev/urandom >"$www/1k.bin"
head -c 1048576 /dev/urandom >"$www/1m.bin"

run_header ", $twistrs"
say "twistd: $("$venv/bin/twistd" --version 2>&1 | head -n1)"
say "nginx: $(nginx -v 2>&1) ($(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' nginx-light nginx-core nginx 2>/dev/null |
    awk '$1 == "ii" { printf "%s%s %s", (n++ ? ", " : ""), $2, $3 }' || true))"
say "wrk: $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2, $3}')"
say "servers: $SERVERS; wrk -t$THREADS: ${WARMUP}s warm-up + ${SECS}s per run; $CONNS and $MANY_CONNS connections; $STARTS start-up runs"
backlog_note=${BACKLOG:-"the servers' defaults"}
say "listen backlog: $backlog_note; somaxconn $(cat /proc/sys/net/core/somaxconn), tcp_max_syn_backlog $(cat /proc/sys/net/ipv4/tcp_max_syn_backlog); ulimit -n $(ulimit -n)"
say "pinning: ${srv_pin[*]:-none} for servers, ${cli_pin[*]:-none} for wrk and the start-up poller"
say "files: $www/1k.bin (1024 B), $www/1m.bin (1048576 B), random"
wait_quiet

# --- servers ---------------------------------------------------------------------------
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nginx config for port $1 in its own directory, $2 worker processes; prints the directory.
nginx_dir() {
    local port=$1 workers=${2:-1} d="$work/nginx-$1"
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<EOF
user root;
worker_processes $workers;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { application/octet-stream bin; }
    default_type application/octet-stream;
    client_body_temp_path $d/client_body;
    server { listen 127.0.0.1:$port${BACKLOG:+ backlog=$BACKLOG}; root $www; }
}
EOF
    printf '%s' "$d"
}

# The command line of server $1 on port $2, into the array CMD.
server_cmd() {
    local name=$1 port=$2 listen="tcp:$2:interface=127.0.0.1${BACKLOG:+:backlog=$BACKLOG}" d
    case $name in
    # The access log (web's --logfile) is a symlink to /dev/null in the run's own folder,
    # never /dev/null itself: twistd's is a twisted.python.logfile.LogFile, which rotates
    # at 1 MB by renaming the file and creating a new one, so twistd run as root with
    # --logfile /dev/null replaces the machine's /dev/null with a regular file. Renaming
    # the symlink is harmless; after its first MB (about 9,000 requests) twistd logs into
    # regular files in $work. twistrs does not rotate: all its lines go to /dev/null.
    twistrs | twistrs-* | twistrs_metrics | twistrs_w2 | twistd)
        rm -f "$work/$name-access.log"
        ln -s /dev/null "$work/$name-access.log"
        ;;
    esac
    case $name in
    twistrs | twistrs-* | twistrs_metrics)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        twistrs_args "$name"
        CMD=("$(twistrs_bin "$name")" -n --pidfile= "${TW_ARGS[@]}" web --path "$www" --listen "$listen" --logfile "$work/$name-access.log")
        ;;
    twistrs_w2)
        twistrs_args "$name"
        CMD=("$twistrs" -n --pidfile= --workers 2 "${TW_ARGS[@]}" web --path "$www" --listen "$listen" --logfile "$work/$name-access.log")
        ;;
    nginx_w2)
        d=$(nginx_dir "$port" 2)
        CMD=(nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf")
        ;;
    twistd) CMD=("$venv/bin/twistd" -n --pidfile= web --path "$www" --listen "$listen" --logfile "$work/twistd-access.log") ;;
    nginx)
        d=$(nginx_dir "$port")
        CMD=(nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf")
        ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, twistrs_metrics, twistrs_w2, twistd, nginx, nginx_w2)" ;;
    esac
}

# Starts server $1 on a free port and waits until it accepts connections (no request
# sent); sets SPID and SPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" i
    SPORT=$(free_port)
    server_cmd "$name" "$SPORT"
    say "[$name] ${CMD[*]}"
    local pin=("${srv_pin[@]}")
    [[ $name == *_w2 ]] && pin=()
    "${pin[@]}" "${CMD[@]}" </dev/null >"$log" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    for ((i = 0; i < 200; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SPORT") 2>/dev/null && return 0
        kill -0 "$SPID" 2>/dev/null || { cat "$log"; die "$name exited before listening"; }
        sleep 0.05
    done
    cat "$log"
    die "$name did not listen on $SPORT within 10 s"
}

# GET $2 from the running server once with curl: 200, the right length, the same bytes.
check_get() {
    local name=$1 path=$2 out code
    rm -f "$work/got"
    out=$(curl -sS --max-time 10 -o "$work/got" -w '%{http_code} %{size_download}' \
        "http://127.0.0.1:$SPORT$path" 2>&1) || out="curl failed: $out"
    code=${out%% *}
    if [[ $code == 200 ]] && cmp -s "$work/got" "$www$path"; then
        say "[$name] GET $path: $out (body identical)"
    else
        say "[$name] GET $path: $out: WRONG (expected 200 and the $(stat -c %s "$www$path") bytes of the file)"
        status=1
    fi
}

# A wrk duration like 1.23ms / 456.00us / 1.20s / 2.00m in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "n/a"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        if (f < 0) print "n/a"; else printf "%.3f", n * f }'
}
# A wrk size like 123.41MB / 12.00KB / 1.20GB / 512B in MiB (wrk's units are powers of 1024).
to_mib() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "n/a"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "B") ? 1 / 1048576 : (u == "KB") ? 1 / 1024 : (u == "MB") ? 1 : (u == "GB") ? 1024 : (u == "TB") ? 1048576 : -1
        if (f < 0) print "n/a"; else printf "%.2f", n * f }'
}

# One wrk run, after a warm-up: $1 name, $2 key for R, $3 connections, $4 path.
run_wrk() {
    local name=$1 key=$2 conns=$3 path=$4 url out t0 c0 m0 w0 t1 c1 m1 w1 lo0 lo1
    url="http://127.0.0.1:$SPORT$path"
    if ((WARMUP > 0)); then
        out=$("${cli_pin[@]}" wrk -t"$THREADS" -c"$conns" -d"${WARMUP}s" "$url" 2>&1) || true
        R[$name.$key.warm]=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
    fi
    lo0=$(tcpext ListenOverflows)
    t0=$(now); c0=$(tree_ticks "$SPID"); m0=$(machine_ticks); w0=$(reaped_ticks)
    if ! out=$("${cli_pin[@]}" wrk -t"$THREADS" -c"$conns" -d"${SECS}s" --latency "$url" 2>&1); then
        say "[$name] $key: wrk failed"
        status=1
    fi
    t1=$(now); c1=$(tree_ticks "$SPID"); m1=$(machine_ticks); w1=$(reaped_ticks)
    lo1=$(tcpext ListenOverflows)
    say "[$name] $key: wrk -t$THREADS -c$conns -d${SECS}s --latency $url"
    # shellcheck disable=SC2001 # a prefix on every line of wrk's report
    sed "s/^/[$name] $key:   /" <<<"$out"
    local rps p50 p99 reqs read non2xx sock scpu wcpu other bpr
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    reqs=$(awk '/ requests in / {print $1}' <<<"$out")
    read=$(awk '/ requests in / {print $5}' <<<"$out")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")
    sock=$(awk '/Socket errors:/ { s = 0; for (i = 3; i <= NF; i += 2) s += $(i + 1) + 0; print s }' <<<"$out")
    R[$name.$key.sockdetail]=$(grep -E 'Socket errors' <<<"$out" | sed 's/^ *//' || true)
    scpu=$(cores "$c0" "$c1" "$t0" "$t1")
    wcpu=$(cores "$w0" "$w1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$scpu" "$wcpu")
    # Bytes per response (headers included): a truncated or wrong body shows here.
    bpr=$(awk -v r="$reqs" -v m="$(to_mib "$read")" 'BEGIN {
        if (r !~ /^[0-9]+$/ || r + 0 == 0 || m !~ /^[0-9.]+$/) print "n/a"; else printf "%.0f", m * 1048576 / r }')
    R[$name.$key.rps]=${rps:-n/a}
    R[$name.$key.p50]=$p50
    R[$name.$key.p99]=$p99
    R[$name.$key.mibs]=$(to_mib "$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")")
    R[$name.$key.non2xx]=${non2xx:-0}
    R[$name.$key.sock]=${sock:-0}
    R[$name.$key.bpr]=$bpr
    R[$name.$key.lo]=$((lo1 - lo0))
    R[$name.$key.scpu]=$scpu
    R[$name.$key.wcpu]=$wcpu
    R[$name.$key.other]=$other
    R[$name.$key.us]=$(awk -v c="$scpu" -v r="${rps:-0}" 'BEGIN { if (r + 0 <= 0) print "n/a"; else printf "%.1f", c * 1e6 / r }')
    say "[$name] $key: req/s=${rps:-n/a} p50_ms=$p50 p99_ms=$p99 non2xx=${non2xx:-0} socket_errors=${sock:-0} bytes/resp=$bpr listen_overflows=${R[$name.$key.lo]} server_cpu=$scpu wrk_cpu=$wcpu other_cpu=$other"
    if [[ -n ${R[$name.$key.warm]:-} ]]; then
        say "[$name] $key: warm-up: ${R[$name.$key.warm]}"
    fi
    if [[ -z $rps || ${non2xx:-0} != 0 || ${sock:-0} != 0 ]]; then
        say "[$name] $key: ERRORS (see wrk output above)"
        status=1
    fi
    warn_other "[$name] $key" "$other"
}

# Start-up: STARTS fresh starts, each timed by first200.py until GET /1k.bin gives 200.
measure_startup() {
    local name=$1 i port line ms=() fails=0
    for ((i = 1; i <= STARTS; i++)); do
        port=$(free_port)
        server_cmd "$name" "$port"
        if line=$("$py" "$here/peers/first200.py" --port "$port" --path /1k.bin --expect "$www/1k.bin" \
            "${srv_cpu[@]}" "${cli_cpu[@]}" --timeout 20 --log "$work/$name.start.log" -- "${CMD[@]}"); then
            ms+=("$(grep -oE 'first200_ms=[0-9.]+' <<<"$line" | cut -d= -f2)")
        else
            fails=$((fails + 1))
            status=1
        fi
        say "[$name] start-up $i: $line"
    done
    R[$name.start]=$(printf '%s\n' "${ms[@]}" | { grep -E '^[0-9.]+$' || true; } | median)
    R[$name.starts]="${ms[*]:-}"
    ((fails == 0)) || say "[$name] start-up: $fails of $STARTS runs failed"
}

for name in $SERVERS; do
    say "== $name"
    start_server "$name"
    say "[$name] pid $SPID (children: $(children_of "$SPID" | tr '\n' ' ')) listening on 127.0.0.1:$SPORT, RSS $(tree_rss_kib "$SPID") KiB before any request"
    check_get "$name" /1k.bin
    sleep 0.5
    rss=$(tree_rss_kib "$SPID")
    R[$name.rss]=$(awk -v k="$rss" 'BEGIN { printf "%.2f", k / 1024 }')
    say "[$name] idle RSS after one request: $rss KiB (process $SPID alone: $(rss_kib "$SPID") KiB)"
    check_get "$name" /1m.bin
    run_wrk "$name" k64 "$CONNS" /1k.bin
    run_wrk "$name" k1000 "$MANY_CONNS" /1k.bin
    run_wrk "$name" m64 "$CONNS" /1m.bin
    say "[$name] RSS after the wrk runs: $(tree_rss_kib "$SPID") KiB"
    show_metrics "$work/$name.server.log" '^twistrs_web_requests_total.* [1-9][0-9]*$' "$name"
    kill -0 "$SPID" 2>/dev/null || { say "[$name] the server died during the runs"; status=1; }
    stop_pid "$SPID"
    tail -n 3 "$work/$name.server.log" | sed "s/^/[$name] log: /"
    if [[ $name == nginx ]]; then
        cat "$work"/nginx-*/error.log 2>/dev/null | tail -n 5 | sed "s/^/[$name] error.log: /" || true
    fi
    measure_startup "$name"
    if [[ $name == twistd ]]; then
        say "[$name] access log: $(find "$work" -maxdepth 1 -name 'twistd-access.log*' -printf '%f (%y) %s B, ' | sed 's/, $//')"
    fi
done
say "loadavg at end: $(cat /proc/loadavg)"
check_dev_null

# --- report ----------------------------------------------------------------------------
rows=("k64:req/s 1 KiB x$CONNS" "k1000:req/s 1 KiB x$MANY_CONNS" "m64:req/s 1 MiB x$CONNS")

{
    say ""
    say "Web benchmark, $stamp: wrk -t$THREADS, ${WARMUP} s warm-up + ${SECS} s per run, keep-alive;"
    say "start-up: median of $STARTS; RSS after start and one request (nginx: master + worker)."
    say ""
    say "| server | req/s 1 KiB x$CONNS | p99 ms | req/s 1 KiB x$MANY_CONNS | req/s 1 MiB x$CONNS | MiB/s | ms to first 200 | idle RSS MiB |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        say "| $name | $(get "$name.k64.rps") | $(get "$name.k64.p99") | $(get "$name.k1000.rps") | $(get "$name.m64.rps") | $(get "$name.m64.mibs") | $(get "$name.start") | $(get "$name.rss") |"
    done
    if has twistrs; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for peer in nginx twistd; do
            has "$peer" || continue
            for row in "${rows[@]}"; do
                key=${row%%:*}
                r=$(ratio "$(get "twistrs.$key.rps")" "$(get "$peer.$key.rps")")
                if [[ $peer == nginx ]]; then
                    say "| twistrs/nginx ${row#*:} | $r | at least 1x (nginx, one worker) | $(verdict "$r" ge 1) |"
                else
                    say "| twistrs/twistd ${row#*:} | $r | (no target) | |"
                fi
            done
        done
        if has twistrs_metrics; then
            for row in "${rows[@]}"; do
                key=${row%%:*}
                r=$(ratio "$(get "twistrs_metrics.$key.rps")" "$(get "twistrs.$key.rps")")
                say "| twistrs_metrics/twistrs ${row#*:} (--metrics on over off) | $r | at least 0.97x (counting costs nothing measurable) | $(verdict "$r" ge 0.97) |"
            done
        fi
        if has twistrs_w2; then
            for row in "${rows[@]}"; do
                key=${row%%:*}
                if has nginx_w2; then
                    r=$(ratio "$(get "twistrs_w2.$key.rps")" "$(get "nginx_w2.$key.rps")")
                    say "| twistrs_w2/nginx_w2 ${row#*:} (2 workers each) | $r | at least 1x | $(verdict "$r" ge 1) |"
                fi
                r=$(ratio "$(get "twistrs_w2.$key.rps")" "$(get "twistrs.$key.rps")")
                say "| twistrs_w2/twistrs ${row#*:} | $r | (no target: twistrs is pinned to one core) | |"
            done
        fi
        for peer in nginx twistd; do
            has "$peer" || continue
            r=$(ratio "$(get "$peer.start")" "$(get twistrs.start)")
            say "| ${peer}_ms/twistrs_ms to first 200 | $r | twistrs under 10 ms (it took $(get twistrs.start) ms) | $(verdict "$(get twistrs.start)" lt 10) |"
        done
        for peer in nginx twistd; do
            has "$peer" || continue
            r=$(ratio "$(get "$peer.rss")" "$(get twistrs.rss)")
            say "| ${peer}_RSS/twistrs_RSS idle | $r | twistrs under 4 MiB (it used $(get twistrs.rss) MiB) | $(verdict "$(get twistrs.rss)" lt 4) |"
        done
    fi
    say ""
    say "| server | run | req/s | p50 ms | p99 ms | MiB/s | non-2xx | socket errors | listen overflows | bytes/resp | server CPU | wrk CPU | other CPU | server CPU µs/req |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        for row in "${rows[@]}"; do
            key=${row%%:*}
            say "| $name | ${row#*:} | $(get "$name.$key.rps") | $(get "$name.$key.p50") | $(get "$name.$key.p99") | $(get "$name.$key.mibs") | $(get "$name.$key.non2xx") | $(get "$name.$key.sock") | $(get "$name.$key.lo") | $(get "$name.$key.bpr") | $(get "$name.$key.scpu") | $(get "$name.$key.wcpu") | $(get "$name.$key.other") | $(get "$name.$key.us") |"
        done
    done
    say ""
    say "(CPU: cores busy over the measured run, 1.00 = one full core; other: used by neither"
    say "the server nor wrk, i.e. interference; µs/req: server CPU time, kernel included, per"
    say "request; bytes/resp: bytes wrk read per response, headers included, from wrk's total"
    say "rounded to 3 significant digits, so only about right for 1 MiB; listen overflows:"
    say "connections the kernel dropped during the run because the server's accept queue was"
    say "full, TcpExt ListenOverflows.)"
    say ""
    for name in $SERVERS; do
        say "- $name: ms to first 200 in each start: $(get "$name.starts")"
    done
} | tee "$summary"

finish "some runs had errors, wrong responses or failures"
