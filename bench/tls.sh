#!/usr/bin/env bash
# bench/tls.sh: the TLS benchmark, twistrs web vs twistd web (Twisted 26.10, its ssl:
# endpoint) vs nginx (one worker, TLS 1.3, access log off), all serving the same two files
# on 127.0.0.1 over TLS with the same ECDSA P-256 certificate: full handshakes/s (a new
# connection and a full handshake per request), resumed handshakes/s (the same, each with a
# session ticket an earlier connection was given), 1 KiB req/s over 64 keep-alive TLS
# connections, 1 MiB responses in MB/s, and memory per idle TLS connection (10,000
# connections idle after their handshake).
# Run by hand, not in CI: see bench/README.md ("TLS"). Results go to bench/results/.
#
# Needs wrk built with OpenSSL, nginx, curl and openssl (Debian: apt-get install -y
# nginx-light wrk curl openssl).
# Knobs (environment): BENCH_SERVERS="twistrs twistd nginx", BENCH_TWISTRS_BINS="LABEL=PATH"
# (other twistrs builds run beside, as twistrs-LABEL: e.g. one built with another crypto
# provider; twistrs_w2 and nginx_w2 are two workers each, not pinned, compared with each
# other), BENCH_CONNS=64 (wrk's keep-alive connections), BENCH_HS_CONNS=32 (handshakes
# in flight), BENCH_SECS=5, BENCH_WARMUP=1, BENCH_IDLE_CONNS=10000, BENCH_WRK_THREADS=1,
# BENCH_PIN=1 (servers on CPU 0, clients on CPU 1), BENCH_BUILD=1 (0 runs the binaries
# already in target/release), BENCH_BACKLOG= (empty: each server's own listen backlog).
set -euo pipefail

SCRIPT=tls.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}twistd nginx"}
CONNS=${BENCH_CONNS:-64}
HS_CONNS=${BENCH_HS_CONNS:-32}
SECS=${BENCH_SECS:-5}
WARMUP=${BENCH_WARMUP:-1}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
THREADS=${BENCH_WRK_THREADS:-1}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
BACKLOG=${BENCH_BACKLOG:-}
TWISTED_VERSION=26.10.0
bench="$root/target/release/twistrs-bench"

start_run tls


# --- build and environment -------------------------------------------------------------
build_release -p twistrs -p twistrs-bench
need_twistrs web
[[ -x $bench ]] || die "missing $bench"

need_dev_null
need_tools "Debian: apt-get install -y nginx-light wrk curl openssl util-linux" wrk nginx curl openssl taskset
# wrk speaks TLS only when built with OpenSSL (Debian's is).
[[ $(ldd "$(command -v wrk)" 2>/dev/null) == *libssl* ]] || die "wrk is not linked with OpenSSL: it cannot speak https"

python_env twisted Twisted "$TWISTED_VERSION"
[[ -x $venv/bin/twistd ]] || die "no twistd in $venv"
# twistd's ssl: endpoint needs pyOpenSSL and service_identity (Twisted's tls extra).
if ! "$py" -c 'import OpenSSL, service_identity' 2>/dev/null; then
    "$venv/bin/pip" install --quiet "Twisted[tls]==$TWISTED_VERSION"
fi
check_twisted
tls_versions=$("$py" -c 'import OpenSSL, service_identity; from OpenSSL import SSL
print("pyOpenSSL", OpenSSL.__version__, "| service_identity", service_identity.__version__, "|", SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode())') ||
    die "pyOpenSSL or service_identity does not import from $venv"

raise_nofile
(($(ulimit -n) >= IDLE_CONNS + 200)) || die "ulimit -n is $(ulimit -n), too low for $IDLE_CONNS connections"

set_pinning

# The certificate every server gets: ECDSA P-256, self-signed, made fresh for the run.
key="$work/key.pem"
cert="$work/cert.pem"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$key" -out "$cert" \
    -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>"$work/openssl.err" ||
    { cat "$work/openssl.err"; die "openssl could not make the certificate"; }

# The files: random, so nothing compresses or dedups them.
www="$work/www"
mkdir -p "$www"
head -c 1024 /dev/urandom >"$www/1k.bin"
head -c 1048576 /dev/urandom >"$www/1m.bin"

run_header ", $twistrs"
for name in $SERVERS; do
    case $name in twistrs-*) say "$name: ${TW_BIN[$name]:-?}" ;; esac
done
say "twistd: $("$venv/bin/twistd" --version 2>&1 | head -n1); $tls_versions"
say "nginx: $(nginx -v 2>&1) ($(dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\n' nginx-light nginx-core nginx 2>/dev/null |
    awk '$1 == "ii" { printf "%s%s %s", (n++ ? ", " : ""), $2, $3 }' || true)), $(openssl version)"
say "wrk: $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2, $3}') ($(ldd "$(command -v wrk)" | awk '/libssl/ {print $1}'))"
say "certificate: ECDSA P-256, $(openssl x509 -in "$cert" -noout -subject -ext subjectAltName 2>/dev/null | tr '\n' ' ')"
say "servers: $SERVERS"
say "runs: handshakes ($HS_CONNS in flight, twistrs-bench handshake), wrk -t$THREADS -c$CONNS 1 KiB and 1 MiB; ${WARMUP}s warm-up + ${SECS}s each; $IDLE_CONNS idle TLS connections"
say "listen backlog: ${BACKLOG:-"the servers' defaults"}; ulimit -n $(ulimit -n)"
say "pinning: ${srv_pin[*]:-none} for servers, ${cli_pin[*]:-none} for the clients"
wait_quiet

# --- servers ---------------------------------------------------------------------------
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nginx config for port $1 in its own directory, with $2 worker processes (default 1);
# prints the directory.
nginx_dir() {
    local port=$1 workers=${2:-1} d="$work/nginx-$1"
    mkdir -p "$d"
    # worker_connections twice the idle connections: with fewer than 1/16 of its connection
    # slots free, nginx closes idle connections to make room ("worker_connections are not
    # enough, reusing connections", a warning not in the default error log), which dropped
    # 160 of 10,000 idle connections with 10,500 slots.
    cat >"$d/nginx.conf" <<EOF
user root;
worker_processes $workers;
worker_rlimit_nofile $((2 * IDLE_CONNS + 1000));
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log;
events { worker_connections $((2 * IDLE_CONNS + 1000)); }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    types { application/octet-stream bin; }
    default_type application/octet-stream;
    client_body_temp_path $d/client_body;
    server {
        listen 127.0.0.1:$port ssl${BACKLOG:+ backlog=$BACKLOG};
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.3;
        root $www;
    }
}
EOF
    printf '%s' "$d"
}

# The command line of server $1 on port $2, into the array CMD.
server_cmd() {
    local name=$1 port=$2 listen d
    listen="ssl:$2:privateKey=$key:certKey=$cert:interface=127.0.0.1${BACKLOG:+:backlog=$BACKLOG}"
    case $name in
    # The access log is a symlink to /dev/null, never /dev/null itself: see web.sh.
    twistrs | twistrs-* | twistrs_w2 | twistd)
        rm -f "$work/$name-access.log"
        ln -s /dev/null "$work/$name-access.log"
        ;;
    esac
    case $name in
    twistrs | twistrs-*)
        [[ -n $(twistrs_bin "$name") ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        CMD=("$(twistrs_bin "$name")" -n --pidfile= web --path "$www" --listen "$listen" --logfile "$work/$name-access.log")
        ;;
    twistrs_w2) CMD=("$twistrs" -n --pidfile= --workers 2 web --path "$www" --listen "$listen" --logfile "$work/$name-access.log") ;;
    twistd) CMD=("$venv/bin/twistd" -n --pidfile= web --path "$www" --listen "$listen" --logfile "$work/twistd-access.log") ;;
    nginx | nginx_w2)
        d=$(nginx_dir "$port" "$([[ $name == nginx_w2 ]] && echo 2 || echo 1)")
        CMD=(nginx -p "$d/" -e "$d/error.log" -c "$d/nginx.conf")
        ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, twistrs-LABEL, twistrs_w2, twistd, nginx, nginx_w2)" ;;
    esac
}

# Starts server $1 on a free port and waits until it accepts TCP connections (no TLS
# handshake made); sets SPID and SPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" i
    SPORT=$(free_port)
    server_cmd "$name" "$SPORT"
    say "[$name] ${CMD[*]}"
    # Two workers are not pinned: they share both CPUs with the client, as in web.sh.
    local pin=("${srv_pin[@]}")
    [[ $name == *_w2 ]] && pin=()
    "${pin[@]}" "${CMD[@]}" </dev/null >>"$log" 2>&1 &
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

# GET $2 over TLS once with curl, checking the certificate: 200 and the same bytes.
check_get() {
    local name=$1 path=$2 out code
    rm -f "$work/got"
    out=$(curl -sS --max-time 10 --cacert "$cert" --resolve "localhost:$SPORT:127.0.0.1" -o "$work/got" \
        -w '%{http_code} %{size_download}' "https://localhost:$SPORT$path" 2>&1) || out="curl failed: $out"
    code=${out%% *}
    if [[ $code == 200 ]] && cmp -s "$work/got" "$www$path"; then
        say "[$name] GET $path: $out (body identical)"
    else
        say "[$name] GET $path: $out: WRONG (expected 200 and the $(stat -c %s "$www$path") bytes of the file)"
        status=1
    fi
}

# What openssl s_client negotiates by default: protocol, cipher suite, key exchange.
check_tls() {
    local name=$1 out
    out=$(openssl s_client -connect "127.0.0.1:$SPORT" -servername localhost -CAfile "$cert" </dev/null 2>&1 || true)
    R[$name.tls]="$(grep -m1 -oE 'TLSv1\.[0-9], Cipher is [A-Z0-9_]+' <<<"$out" || echo '?'), $(grep -m1 -oE 'Server Temp Key: [^,]+' <<<"$out" || echo '?'), $(grep -m1 -oE 'Verify return code: [0-9]+ \([a-z]+\)' <<<"$out" || echo '?')"
    say "[$name] openssl s_client: ${R[$name.tls]}"
}

# A wrk duration like 1.23ms / 456.00us / 1.20s in ms.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "n/a"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
        if (f < 0) print "n/a"; else printf "%.3f", n * f }'
}
# A wrk size like 123.41MB / 12.00KB / 1.20GB / 512B in MB (10^6 bytes; wrk's units are
# powers of 1024).
to_mb() {
    awk -v v="$1" 'BEGIN {
        if (v == "") { print "n/a"; exit }
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f = (u == "B") ? 1 : (u == "KB") ? 1024 : (u == "MB") ? 1048576 : (u == "GB") ? 1073741824 : (u == "TB") ? 1099511627776 : -1
        if (f < 0) print "n/a"; else printf "%.1f", n * f / 1e6 }'
}

# CPU accounting around one measured run: call run_cpu_start before and run_cpu_end
# after; sets scpu, ccpu (the client: the reaped children of this shell) and other.
run_cpu_start() { t0=$(now); c0=$(tree_ticks "$SPID"); m0=$(machine_ticks); w0=$(reaped_ticks); }
run_cpu_end() {
    t1=$(now); c1=$(tree_ticks "$SPID"); m1=$(machine_ticks); w1=$(reaped_ticks)
    scpu=$(cores "$c0" "$c1" "$t0" "$t1")
    ccpu=$(cores "$w0" "$w1" "$t0" "$t1")
    other=$(other_cores "$m0" "$m1" "$t0" "$t1" "$scpu" "$ccpu")
}
# Server CPU time per operation in µs: $1 cores, $2 operations per second.
per_op_us() { awk -v c="$1" -v r="$2" 'BEGIN { if (r !~ /^[0-9.]+$/ || r + 0 <= 0) print "n/a"; else printf "%.1f", c * 1e6 / r }'; }

# Handshakes: twistrs-bench handshake, a new connection per GET /1k.bin; $2 is hs (full
# handshakes, no resumption) or rs (each resumes with a ticket an earlier one was given: a
# returning client).
run_handshakes() {
    local name=$1 key=$2 out lo0 lo1 rate errs resume=0
    [[ $key == rs ]] && resume=1
    lo0=$(tcpext ListenOverflows)
    run_cpu_start
    if ! out=$("${cli_pin[@]}" "$bench" handshake --addr "127.0.0.1:$SPORT" --cert "$cert" --path /1k.bin \
        --conns "$HS_CONNS" --secs "$SECS" --warmup "$WARMUP" --resume "$resume" 2>&1); then
        say "[$name] $key: twistrs-bench handshake failed"
        status=1
    fi
    run_cpu_end
    lo1=$(tcpext ListenOverflows)
    say "[$name] $key: twistrs-bench handshake --conns $HS_CONNS --secs $SECS --warmup $WARMUP --path /1k.bin --resume $resume"
    # shellcheck disable=SC2001 # a prefix on every line
    sed "s/^/[$name] $key:   /" <<<"$out"
    local line
    line=$(grep -m1 '^handshakes_per_sec=' <<<"$out" || true)
    rate=$(kv handshakes_per_sec "$line")
    errs=$(kv errors "$line")
    R[$name.$key.rps]=${rate:-n/a}
    R[$name.$key.p99]=$(kv p99_ms "$line")
    R[$name.$key.full]=$(kv full "$line")
    R[$name.$key.resumed]=$(kv resumed "$line")
    R[$name.$key.errors]=${errs:-n/a}
    R[$name.$key.lo]=$((lo1 - lo0))
    R[$name.$key.scpu]=$scpu
    R[$name.$key.wcpu]=$ccpu
    R[$name.$key.other]=$other
    R[$name.$key.us]=$(per_op_us "$scpu" "${rate:-0}")
    say "[$name] $key: handshakes/s=${rate:-n/a} errors=${errs:-n/a} full=${R[$name.$key.full]} resumed=${R[$name.$key.resumed]} listen_overflows=${R[$name.$key.lo]} server_cpu=$scpu client_cpu=$ccpu other_cpu=$other"
    if [[ -z $rate || ${errs:-1} != 0 ]] || { [[ $key == hs ]] && [[ ${R[$name.$key.resumed]:-1} != 0 ]]; }; then
        say "[$name] $key: ERRORS (see above)"
        status=1
    fi
    # A server that never resumes (twistd) makes every one full: said, not an error.
    if [[ $key == rs && ${R[$name.$key.full]:-0} != 0 ]]; then
        say "[$name] rs: ${R[$name.$key.full]} of the handshakes were full: this server did not resume them"
    fi
    warn_other "[$name] $key" "$other"
}

# One wrk run over keep-alive TLS connections, after a warm-up: $1 name, $2 key, $3 path.
run_wrk() {
    local name=$1 key=$2 path=$3 url out lo0 lo1
    url="https://127.0.0.1:$SPORT$path"
    if ((WARMUP > 0)); then
        out=$("${cli_pin[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" 2>&1) || true
        R[$name.$key.warm]=$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)
    fi
    lo0=$(tcpext ListenOverflows)
    run_cpu_start
    if ! out=$("${cli_pin[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "$url" 2>&1); then
        say "[$name] $key: wrk failed"
        status=1
    fi
    run_cpu_end
    lo1=$(tcpext ListenOverflows)
    say "[$name] $key: wrk -t$THREADS -c$CONNS -d${SECS}s --latency $url"
    # shellcheck disable=SC2001 # a prefix on every line of wrk's report
    sed "s/^/[$name] $key:   /" <<<"$out"
    local rps p99 non2xx sock
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' <<<"$out")
    sock=$(awk '/Socket errors:/ { s = 0; for (i = 3; i <= NF; i += 2) s += $(i + 1) + 0; print s }' <<<"$out")
    R[$name.$key.rps]=${rps:-n/a}
    R[$name.$key.p99]=$p99
    R[$name.$key.mbs]=$(to_mb "$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")")
    R[$name.$key.errors]=$((${non2xx:-0} + ${sock:-0}))
    R[$name.$key.lo]=$((lo1 - lo0))
    R[$name.$key.scpu]=$scpu
    R[$name.$key.wcpu]=$ccpu
    R[$name.$key.other]=$other
    R[$name.$key.us]=$(per_op_us "$scpu" "${rps:-0}")
    say "[$name] $key: req/s=${rps:-n/a} MB/s=${R[$name.$key.mbs]} p99_ms=$p99 non2xx=${non2xx:-0} socket_errors=${sock:-0} listen_overflows=${R[$name.$key.lo]} server_cpu=$scpu wrk_cpu=$ccpu other_cpu=$other"
    if [[ -n ${R[$name.$key.warm]:-} ]]; then
        say "[$name] $key: warm-up: ${R[$name.$key.warm]}"
    fi
    if [[ -z $rps || ${non2xx:-0} != 0 || ${sock:-0} != 0 ]]; then
        say "[$name] $key: ERRORS (see wrk output above)"
        status=1
    fi
    warn_other "[$name] $key" "$other"
}

# Memory per idle TLS connection, on the running server (fresh, one GET served):
# IDLE_CONNS connections each complete a full handshake and then send nothing; RSS of the
# server (nginx: master + worker) once it holds them all, less RSS before, per connection.
measure_idle() {
    local name=$1 fds0 before after out="$work/idle.out" fifo="$work/idle.in" ipid hold i t0 secs
    fds0=$(tree_fds "$SPID")
    before=$(tree_rss_kib "$SPID")
    rm -f "$fifo"
    mkfifo "$fifo"
    # Read-write, so opening never blocks; closing it is the idle client's EOF (the client
    # itself must not inherit it).
    exec {hold}<>"$fifo"
    t0=$(now)
    "${cli_pin[@]}" "$bench" idle --addr "127.0.0.1:$SPORT" --conns "$IDLE_CONNS" --tls-cert "$cert" \
        --hold-secs 300 --connect-timeout-secs 290 <"$fifo" >"$out" 2>&1 {hold}>&- &
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
        say "[$name] idle: connections not established"
        R[$name.kib]=n/a
        status=1
        return
    fi
    secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    for ((i = 0; i < 300; i++)); do
        (($(tree_fds "$SPID") >= fds0 + IDLE_CONNS)) && break
        sleep 0.1
    done
    local fds1
    fds1=$(tree_fds "$SPID")
    sleep 1 # let the last handshakes' final steps and deferred frees settle
    after=$(tree_rss_kib "$SPID")
    exec {hold}>&-
    for ((i = 0; i < 300; i++)); do
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$ipid"
    say "[$name] idle: $(tr '\n' ' ' <"$out")(${secs} s to connect)"
    say "[$name] idle: server fds $fds0 -> $fds1, RSS $before -> $after KiB"
    ((fds1 >= fds0 + IDLE_CONNS)) || { say "[$name] idle: WARNING: server holds fewer descriptors than connections"; status=1; }
    grep -q '^dropped=0 ' "$out" || status=1
    R[$name.kib]=$(awk -v a="$before" -v b="$after" -v n="$IDLE_CONNS" 'BEGIN { printf "%.2f", (b - a) / n }')
}

for name in $SERVERS; do
    say "== $name"
    start_server "$name"
    say "[$name] pid $SPID (children: $(children_of "$SPID" | tr '\n' ' ')) listening on 127.0.0.1:$SPORT, RSS $(tree_rss_kib "$SPID") KiB before any request"
    check_get "$name" /1k.bin
    check_tls "$name"
    sleep 0.5
    rss=$(tree_rss_kib "$SPID")
    R[$name.rss]=$(awk -v k="$rss" 'BEGIN { printf "%.2f", k / 1024 }')
    say "[$name] RSS after two TLS connections: $rss KiB"
    check_get "$name" /1m.bin
    run_handshakes "$name" hs
    run_handshakes "$name" rs
    run_wrk "$name" k64 /1k.bin
    run_wrk "$name" m64 /1m.bin
    say "[$name] RSS after the runs: $(tree_rss_kib "$SPID") KiB"
    kill -0 "$SPID" 2>/dev/null || { say "[$name] the server died during the runs"; status=1; }
    stop_pid "$SPID"
    # Idle memory on a fresh server, so that what the runs above left in its heap does not
    # hide the cost of a connection.
    start_server "$name"
    check_get "$name" /1k.bin
    sleep 0.5
    measure_idle "$name"
    kill -0 "$SPID" 2>/dev/null || { say "[$name] the server died during the idle run"; status=1; }
    stop_pid "$SPID"
    tail -n 3 "$work/$name.server.log" | sed "s/^/[$name] log: /"
    if [[ $name == nginx* ]]; then
        cat "$work"/nginx-*/error.log 2>/dev/null | tail -n 5 | sed "s/^/[$name] error.log: /" || true
    fi
done
say "loadavg at end: $(cat /proc/loadavg)"
check_dev_null

# --- report ----------------------------------------------------------------------------
rows=("hs:full handshakes/s" "rs:resumed handshakes/s" "k64:req/s 1 KiB x$CONNS" "m64:MB/s 1 MiB x$CONNS")
# The figure of row key $1 for server $2 (MB/s for the 1 MiB run, the rate otherwise).
fig() { if [[ $1 == m64 ]]; then get "$2.m64.mbs"; else get "$2.$1.rps"; fi; }
twistrs_servers=$(for n in $SERVERS; do [[ $n == twistrs || $n == twistrs-* ]] && printf '%s ' "$n"; done || true)

{
    say ""
    say "TLS benchmark, $stamp: ${WARMUP} s warm-up + ${SECS} s per run; handshakes: $HS_CONNS in flight,"
    say "a new connection and a full TLS 1.3 handshake per GET /1k.bin (resumed: the same, each with a ticket an"
    say "earlier connection was given); wrk: $CONNS keep-alive TLS connections;"
    say "memory: $IDLE_CONNS connections idle after their handshake, on a fresh server (nginx: master + worker)."
    say ""
    say "| server | full handshakes/s | resumed handshakes/s (full among them) | req/s 1 KiB x$CONNS | p99 ms | MB/s 1 MiB x$CONNS | KiB per idle TLS conn | RSS MiB after 2 requests |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        say "| $name | $(get "$name.hs.rps") | $(get "$name.rs.rps") ($(get "$name.rs.full")) | $(get "$name.k64.rps") | $(get "$name.k64.p99") | $(get "$name.m64.mbs") | $(get "$name.kib") | $(get "$name.rss") |"
    done
    if [[ -n $twistrs_servers ]]; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for tw in $twistrs_servers; do
            for peer in nginx twistd; do
                has "$peer" || continue
                for row in "${rows[@]}"; do
                    key=${row%%:*}
                    r=$(ratio "$(fig "$key" "$tw")" "$(fig "$key" "$peer")")
                    if [[ $peer == nginx ]]; then
                        say "| $tw/nginx ${row#*:} | $r | at least 1x (nginx, one worker) | $(verdict "$r" ge 1) |"
                    else
                        say "| $tw/twistd ${row#*:} | $r | (no target) | |"
                    fi
                done
                r=$(ratio "$(get "$tw.kib")" "$(get "$peer.kib")")
                if [[ $peer == nginx ]]; then
                    say "| ${tw}_KiB/nginx_KiB per idle TLS conn | $r | at most 0.5x (half of nginx's) | $(verdict "$r" le 0.5) |"
                else
                    say "| ${tw}_KiB/twistd_KiB per idle TLS conn | $r | (no target) | |"
                fi
            done
        done
        # Builds side by side (another crypto provider, an older commit): against the first.
        first=${twistrs_servers%% *}
        for tw in $twistrs_servers; do
            [[ $tw == "$first" ]] && continue
            for row in "${rows[@]}"; do
                key=${row%%:*}
                say "| $tw/$first ${row#*:} | $(ratio "$(fig "$key" "$tw")" "$(fig "$key" "$first")") | (builds compared) | |"
            done
            say "| ${tw}_KiB/${first}_KiB per idle TLS conn | $(ratio "$(get "$tw.kib")" "$(get "$first.kib")") | (builds compared) | |"
            say "| ${tw}_RSS/${first}_RSS after 2 requests | $(ratio "$(get "$tw.rss")" "$(get "$first.rss")") | (builds compared) | |"
        done
    fi
    if has twistrs_w2 && has nginx_w2; then
        say ""
        say "| ratio (two workers each, not pinned) | value | target | |"
        say "|---|---:|---|---|"
        for row in "${rows[@]}"; do
            key=${row%%:*}
            r=$(ratio "$(fig "$key" twistrs_w2)" "$(fig "$key" nginx_w2)")
            say "| twistrs_w2/nginx_w2 ${row#*:} | $r | at least 1x | $(verdict "$r" ge 1) |"
        done
    fi
    say ""
    say "| server | run | rate | p99 ms | errors | listen overflows | server CPU | client CPU | other CPU | server CPU µs per op |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        for row in "${rows[@]}"; do
            key=${row%%:*}
            say "| $name | ${row#*:} | $(get "$name.$key.rps")/s | $(get "$name.$key.p99") | $(get "$name.$key.errors") | $(get "$name.$key.lo") | $(get "$name.$key.scpu") | $(get "$name.$key.wcpu") | $(get "$name.$key.other") | $(get "$name.$key.us") |"
        done
    done
    say ""
    say "(rate: handshakes or requests per second; CPU: cores busy over the measured run, 1.00 ="
    say "one full core; client: twistrs-bench or wrk; other: used by neither, i.e. interference;"
    say "µs per op: server CPU time, kernel included, per handshake or request.)"
    say ""
    for name in $SERVERS; do
        say "- $name negotiated (openssl s_client): $(get "$name.tls")"
    done
} | tee "$summary"

finish "some runs had errors, wrong responses or failures"
