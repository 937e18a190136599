#!/usr/bin/env bash
# bench/soak.sh: a long run of every kind of traffic at once, one twistrs per service (web,
# mail SMTP and POP3, echo sessions, portforward relays, dns over UDP and TCP), sampling
# each server's memory and open descriptors, to show that a daemon left running does not
# grow: RSS after the warm-up against at the end, descriptors idle before the load against
# idle after it, while --metrics is scraped every sample; and that nothing was lost (every
# message smtp-source delivered was retrieved over POP3 or is still in the Maildir; no load
# generator or scrape saw an error).
# Run by hand, not in CI: see bench/README.md ("Soak"). Results go to bench/results/.
#
# Knobs (environment): SOAK_SECS=600 (the load), SOAK_SAMPLE=10 (seconds between samples),
# SOAK_WORKERS=1 (--workers for every service), BENCH_BUILD=1 (0 runs the binaries already
# in target/release), BENCH_QUIET_WAIT=60. Nothing is pinned: the seven load generators
# and five servers share the CPUs, and speed is not what this measures.
set -euo pipefail

SCRIPT=soak.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECS=${SOAK_SECS:-600}
SAMPLE=${SOAK_SAMPLE:-10}
WORKERS=${SOAK_WORKERS:-1}
BUILD=${BENCH_BUILD:-1}
py=${PYTHON:-python3}
SERVICES=(web mail echo portforward dns)

start_run soak

bench="$root/target/release/twistrs-bench"
build_release -p twistrs -p twistrs-bench
[[ -x $twistrs && -x $bench ]] || die "missing $twistrs or $bench"
need_tools "Debian: apt-get install -y wrk curl" wrk curl
smtp_source=$(command -v smtp-source || true)
[[ -n $smtp_source ]] || { [[ -x /usr/sbin/smtp-source ]] && smtp_source=/usr/sbin/smtp-source; }
[[ -n $smtp_source ]] ||
    die "smtp-source not found (Debian: echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y postfix)"
raise_nofile

run_header ", --workers $WORKERS"
say "soak: ${SECS}s of load, a sample every ${SAMPLE}s; services: ${SERVICES[*]}"
wait_quiet

# --- files -----------------------------------------------------------------------------
www="$work/www"
mkdir -p "$www/sub" "$work/mail"
head -c 1024 /dev/urandom | base64 >"$www/small.txt"
head -c 262144 /dev/urandom >"$www/big.bin"
echo "in a folder" >"$www/sub/index.html"
zone="$work/example.com.zone"
cat >"$zone" <<'ZONE'
$ORIGIN example.com.
$TTL 300
@       SOA  ns1 hostmaster 1 3600 600 86400 300
@       NS   ns1
@       MX   10 mail
@       TXT  "soak"
ns1     A    192.0.2.1
mail    A    192.0.2.2
www     A    192.0.2.3
www     AAAA 2001:db8::3
ZONE
# wrk's keep-alive connections ask for files, a folder, a missing name and a range in turn.
cat >"$work/paths.lua" <<'LUA'
local paths = {"/small.txt", "/big.bin", "/", "/sub/", "/missing", "/small.txt"}
local i = 0
request = function()
  i = i + 1
  if i % 7 == 0 then
    return wrk.format("GET", "/small.txt", {["Range"] = "bytes=10-99"})
  end
  return wrk.format("GET", paths[(i % #paths) + 1])
end
LUA

# --- servers ---------------------------------------------------------------------------
declare -A SPID PORT MPORT SCRAPES SCRAPE_ERRORS
# Starts service $1 with plugin arguments $2...; its log is $work/$1.log.
start_service() {
    local name=$1
    shift
    "$twistrs" -n --pidfile= --workers "$WORKERS" --metrics "tcp:0:interface=127.0.0.1" "$@" \
        </dev/null >"$work/$name.log" 2>&1 &
    SPID[$name]=$!
    pids+=("$!")
}
# The port that factory $2 of service $1 listens on, once its log says so (10 s at most);
# with workers, also once they all serve.
port_of() {
    local name=$1 factory=$2 i p
    for ((i = 0; i < 100; i++)); do
        p=$(sed -nE "s/.* $factory starting on ([0-9]+)\$/\\1/p" "$work/$name.log" | head -n1)
        if [[ -n $p ]] && { ((WORKERS == 1)) || grep -q ' workers serve\.$' "$work/$name.log"; }; then
            printf '%s' "$p"
            return 0
        fi
        kill -0 "${SPID[$name]}" 2>/dev/null || { cat "$work/$name.log"; die "$name exited"; }
        sleep 0.1
    done
    cat "$work/$name.log"
    die "$name did not report its $factory port within 10 s"
}

"$bench" reply --size 64 </dev/null >"$work/backend.log" 2>&1 &
backend=$!
pids+=("$backend")
for ((i = 0; i < 100; i++)); do
    bport=$(sed -nE 's/^listening ([0-9]+)$/\1/p' "$work/backend.log")
    [[ -n $bport ]] && break
    sleep 0.05
done
[[ -n ${bport:-} ]] || die "the relay backend did not listen"

local_ep=tcp:0:interface=127.0.0.1
start_service web web --path "$www" --listen "$local_ep"
start_service mail mail -H mx.test -d "example.com=$work/mail" -u joe=secret -s "$local_ep" -p "$local_ep"
start_service echo echo --listen "$local_ep"
start_service portforward portforward -p "$local_ep" -h 127.0.0.1 -d "$bport"
start_service dns dns -p 0 -i 127.0.0.1 --bindzone "$zone"
PORT[web]=$(port_of web Site)
PORT[smtp]=$(port_of mail SMTP)
PORT[pop3]=$(port_of mail VirtualPOP3)
PORT[echo]=$(port_of echo Echo)
PORT[portforward]=$(port_of portforward ProxyFactory)
PORT[dns]=$(port_of dns DNSServerFactory)
for s in "${SERVICES[@]}"; do
    MPORT[$s]=$(port_of "$s" Metrics)
    say "[$s] PID ${SPID[$s]}, metrics on ${MPORT[$s]}"
done
say "ports: web ${PORT[web]}, smtp ${PORT[smtp]}, pop3 ${PORT[pop3]}, echo ${PORT[echo]}, portforward ${PORT[portforward]} (backend $bport), dns ${PORT[dns]}"

# --- samples ---------------------------------------------------------------------------
declare -A IDLE_RSS IDLE_FDS FIRST_RSS LAST_RSS MAX_RSS MAX_FDS AFTER_RSS AFTER_FDS
sample_line() {
    local s line="t=$1"
    for s in "${SERVICES[@]}"; do
        line+=" $s=$(tree_rss_kib "${SPID[$s]}")KiB/$(tree_fds "${SPID[$s]}")fd"
    done
    say "$line"
}
for s in "${SERVICES[@]}"; do
    IDLE_RSS[$s]=$(tree_rss_kib "${SPID[$s]}")
    IDLE_FDS[$s]=$(tree_fds "${SPID[$s]}")
done
sample_line idle

# --- load ------------------------------------------------------------------------------
limit=$((SECS + 120))
end=$(($(date +%s) + SECS))
timeout "$limit" wrk -t1 -c32 -d"${SECS}s" -s "$work/paths.lua" "http://127.0.0.1:${PORT[web]}/" \
    >"$work/wrk-keepalive.out" 2>&1 </dev/null &
loads=("$!")
timeout "$limit" wrk -t1 -c8 -d"${SECS}s" -H 'Connection: close' "http://127.0.0.1:${PORT[web]}/small.txt" \
    >"$work/wrk-close.out" 2>&1 </dev/null &
loads+=("$!")
# smtp-source in rounds of 200 messages, new connections and reused sessions in turn, until
# the end; a round counts as delivered only if smtp-source ended well.
(
    sent=0 failed=0 round=0
    while (($(date +%s) < end)); do
        flags=()
        ((round++ % 2)) && flags=(-d)
        if timeout 300 "$smtp_source" "${flags[@]}" -s 4 -m 200 -l 2048 -M bench.test -f soak@bench.test \
            -t joe@example.com "127.0.0.1:${PORT[smtp]}" >>"$work/smtp.err" 2>&1 </dev/null; then
            sent=$((sent + 200))
        else
            failed=$((failed + 1))
        fi
    done
    echo "sent=$sent failed_rounds=$failed"
) >"$work/smtp.out" &
loads+=("$!")
timeout "$limit" "$py" "$here/peers/pop3_drain.py" --port "${PORT[pop3]}" --user joe@example.com --password secret \
    --secs "$SECS" >"$work/pop3.out" 2>"$work/pop3.err" </dev/null &
loads+=("$!")
timeout "$limit" "$bench" sessions --addr "127.0.0.1:${PORT[echo]}" --conns 8 --send 64 --secs "$SECS" \
    --warmup 0 >"$work/echo.out" 2>&1 </dev/null &
loads+=("$!")
timeout "$limit" "$bench" cycle --addr "127.0.0.1:${PORT[portforward]}" --conns 8 --size 64 --secs "$SECS" \
    --warmup 0 >"$work/portforward.out" 2>&1 </dev/null &
loads+=("$!")
timeout "$limit" "$py" "$here/peers/dns_loop.py" --port "${PORT[dns]}" --secs "$SECS" \
    >"$work/dns.out" 2>"$work/dns.err" </dev/null &
loads+=("$!")

n=0
while (($(date +%s) < end)); do
    sleep "$SAMPLE"
    n=$((n + 1))
    for s in "${SERVICES[@]}"; do
        # Every service serves --metrics, scraped each sample as Prometheus would (with
        # --workers, the master adds up its workers' figures).
        SCRAPES[$s]=$((${SCRAPES[$s]:-0} + 1))
        if ! curl -sf -m 10 "http://127.0.0.1:${MPORT[$s]}/metrics" -o "$work/scrape.txt" ||
            ! grep -q '^twistrs_connections_accepted_total{' "$work/scrape.txt"; then
            SCRAPE_ERRORS[$s]=$((${SCRAPE_ERRORS[$s]:-0} + 1))
        fi
        r=$(tree_rss_kib "${SPID[$s]}")
        f=$(tree_fds "${SPID[$s]}")
        # The first sample is after one interval of load: buffers, caches and pools are
        # warm by then.
        ((n == 1)) && FIRST_RSS[$s]=$r
        LAST_RSS[$s]=$r
        ((r > ${MAX_RSS[$s]:-0})) && MAX_RSS[$s]=$r
        ((f > ${MAX_FDS[$s]:-0})) && MAX_FDS[$s]=$f
    done
    sample_line "$((n * SAMPLE))s"
done
for p in "${loads[@]}"; do wait "$p" || true; done
# The load is over: its connections close; what stays open now is held for good.
sleep 5
for s in "${SERVICES[@]}"; do
    AFTER_RSS[$s]=$(tree_rss_kib "${SPID[$s]}")
    AFTER_FDS[$s]=$(tree_fds "${SPID[$s]}")
    kill -0 "${SPID[$s]}" 2>/dev/null || { say "[$s] ERROR: the server died"; status=1; }
done
sample_line after

# --- what the load generators saw ------------------------------------------------------
say ""
say "== load"
for f in wrk-keepalive wrk-close; do
    reqs=$(sed -nE 's/^ *([0-9]+) requests in .*/\1/p' "$work/$f.out")
    errs=$(grep -E 'Socket errors|Non-2xx' "$work/$f.out" | tr -s ' ' | paste -sd ';' || true)
    say "[web] $f: ${reqs:-?} requests${errs:+; $errs}"
    [[ -n $reqs ]] || { status=1; cat "$work/$f.out"; }
    # Socket errors are failures; non-2xx are the 404s asked for on purpose.
    grep -q 'Socket errors' "$work/$f.out" && status=1
done
smtp=$(cat "$work/smtp.out")
pop3=$(cat "$work/pop3.out")
box="$work/mail/joe"
left=$(find "$box/new" "$box/cur" -type f | wc -l)
tmp=$(find "$box/tmp" -type f | wc -l)
sent=$(kv sent "$smtp")
retrieved=$(kv retrieved "$pop3")
say "[mail] smtp-source: $smtp; pop3: $pop3; left in the Maildir: $left (tmp/: $tmp)"
if [[ $(kv failed_rounds "$smtp") != 0 ]]; then
    say "[mail] ERROR: smtp-source rounds failed:"
    tail -n 5 "$work/smtp.err"
    status=1
elif ((${sent:-0} != ${retrieved:-0} + left)) || ((tmp != 0)); then
    say "[mail] ERROR: $sent delivered, $retrieved retrieved + $left left"
    status=1
else
    say "[mail] every message delivered was retrieved or is still there: $sent = $retrieved + $left"
fi
[[ $(kv errors "$pop3") == 0 ]] || { status=1; cat "$work/pop3.err"; }
for s in echo portforward; do
    out=$(tr '\n' ' ' <"$work/$s.out")
    say "[$s] $out"
    [[ $(kv errors "$out") == 0 ]] || status=1
done
for s in "${SERVICES[@]}"; do
    say "[$s] metrics: ${SCRAPES[$s]:-0} scrapes, ${SCRAPE_ERRORS[$s]:-0} failed"
    ((${SCRAPE_ERRORS[$s]:-0} == 0)) || status=1
done
dns=$(cat "$work/dns.out")
say "[dns] $dns"
[[ $(kv errors "$dns") == 0 ]] || { status=1; cat "$work/dns.err"; }

# --- verdicts --------------------------------------------------------------------------
# Memory is flat if the end of the load holds at most 10% (and 2 MiB) more than its first
# sample; descriptors are if, idle again, the server holds no more than it did idle before.
{
    say ""
    say "## Soak, run $stamp"
    say ""
    say "$(nproc) CPUs, --workers $WORKERS, ${SECS}s of load (web keep-alive and close, SMTP, POP3, echo sessions, relays, dns), a sample every ${SAMPLE}s."
    say ""
    say "| service | RSS KiB idle | after ${SAMPLE}s | end of load | max | idle after | fds idle | max | idle after | verdict |"
    say "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for s in "${SERVICES[@]}"; do
        first=${FIRST_RSS[$s]:-0} last=${LAST_RSS[$s]:-0}
        verdict=flat
        if ((last > first + (first / 10 > 2048 ? first / 10 : 2048))); then
            verdict="RSS GROWS (+$((last - first)) KiB)"
            status=1
        fi
        if ((AFTER_FDS[$s] > IDLE_FDS[$s])); then
            verdict="$verdict; FDS LEAK (+$((AFTER_FDS[$s] - IDLE_FDS[$s])))"
            status=1
        fi
        say "| $s | ${IDLE_RSS[$s]} | $first | $last | ${MAX_RSS[$s]:-0} | ${AFTER_RSS[$s]} | ${IDLE_FDS[$s]} | ${MAX_FDS[$s]:-0} | ${AFTER_FDS[$s]} | $verdict |"
    done
} | tee "$summary"

finish "the soak found a problem"
