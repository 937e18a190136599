# shellcheck shell=bash
# bench/common.sh: what echo.sh, web.sh and mail.sh share. Not run on its own: each script
# sets SCRIPT (its name, the prefix of its messages) and sources this file right after
# `set -euo pipefail`, then sets its knobs (PIN, BUILD, SERVERS, ...) from BENCH_*.
# Defines functions and a few variables only; nothing here prints or starts anything.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) # bench/
root=$(cd "$here/.." && pwd)
SCRIPT=${SCRIPT:-$(basename "$0")}
twistrs="$root/target/release/twistrs"
hz=$(getconf CLK_TCK)

pids=()        # processes this script started and has not reaped yet
status=0       # the exit status: 1 once any run had errors, lost data or failed
declare -gA R  # R[name.key] = value, for the report

say() { printf '%s\n' "$*"; }
die() {
    say "$SCRIPT: $*" >&2
    exit 1
}

# --- processes -------------------------------------------------------------------------
children_of() { cat "/proc/$1/task/$1/children" 2>/dev/null || true; }

# The start time of process $1 (field 22 of /proc/PID/stat) into ST; empty once it is gone.
# Without a subshell: socat and dante leave thousands of children to look at.
start_time_of() {
    local l f
    ST=
    { read -r l <"/proc/$1/stat"; } 2>/dev/null || return 0
    read -r -a f <<<"${l##*) }"
    ST=${f[19]:-}
}

# SIGTERM, then SIGKILL after 10 s; only for PIDs this script started. Children the
# process leaves behind (nginx's worker, if its master had to be killed) get SIGKILL, each
# only if it is still the same process: a child that exited meanwhile may have given its PID
# to a process started since (with socat's thousands of forks, the next load generator).
stop_pid() {
    local pid=$1 i kids=() k
    for k in $(children_of "$pid"); do
        start_time_of "$k"
        kids+=("$k:$ST")
    done
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
    for k in "${kids[@]}"; do
        start_time_of "${k%%:*}"
        if [[ -n $ST && $ST == "${k#*:}" ]]; then kill -KILL "${k%%:*}" 2>/dev/null || true; fi
    done
    local keep=() p
    for p in "${pids[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local p
    for p in "${pids[@]}"; do stop_pid "$p"; done
    rm -rf "$work"
}

# The run of benchmark $1 (echo, web, mail) begins: sets stamp, work (a temporary folder,
# deleted at exit with every process in pids stopped), raw and summary (the whole output
# and the tables, in bench/results/$1-<stamp>.log and .md). Everything printed from here
# on is also the raw record of the run.
start_run() {
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    results="$here/results"
    mkdir -p "$results"
    raw="$results/$1-$stamp.log"
    summary="$results/$1-$stamp.md"
    work=$(mktemp -d)
    exec > >(tee -a "$raw") 2>&1
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# --- /proc readers ---------------------------------------------------------------------
# key=value field of a one-line report.
kv() { grep -oE "(^| )$1=[^ ]*" <<<"$2" | head -n1 | cut -d= -f2; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime + stime of a process (all its threads), clock ticks (fields 14 and 15, counted
# after the "(comm)" field); empty once the process is gone.
cpu_ticks() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || true; }
# Of those, the ticks in user space only (the framework's own work; the kernel's is the same
# for every server on loopback).
user_ticks() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12}' || true; }

# --- process trees (a server and its children: nginx's workers, twistrs --workers) ----------
# utime + stime of a process and its children, clock ticks; `tree_ticks PID user`: utime only.
tree_ticks() {
    local p t=0 v
    for p in "$1" $(children_of "$1"); do
        if [[ ${2:-} == user ]]; then v=$(user_ticks "$p"); else v=$(cpu_ticks "$p"); fi
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}
# VmRSS of a process plus its children, KiB.
tree_rss_kib() {
    local p t=0 v
    for p in "$1" $(children_of "$1"); do
        v=$(rss_kib "$p" 2>/dev/null || true)
        t=$((t + ${v:-0}))
    done
    printf '%s' "$t"
}
# Open descriptors of a process and its children.
tree_fds() {
    local p t=0
    for p in "$1" $(children_of "$1"); do
        t=$((t + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
    done
    printf '%s' "$t"
}
now() { date +%s.%N; }
# A TcpExt counter of /proc/net/netstat (ListenOverflows: connections dropped because an
# accept queue was full; only this script's traffic runs on loopback here).
tcpext() { awk -v k="$1" '/^TcpExt:/ { if (!n++) { for (i = 2; i <= NF; i++) h[$i] = i } else { print (k in h) ? $(h[k]) : 0; exit } }' /proc/net/netstat; }
# cutime + cstime of this shell: CPU of the children it has waited for (the load
# generator), clock ticks.
reaped_ticks() { sed -E 's/^.*\) //' "/proc/$$/stat" | awk '{print $14 + $15}'; }
# Busy clock ticks of the whole machine (all of /proc/stat's cpu line but idle and iowait).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# Cores used (1.00 = one full core) between tick readings $1 and $2 taken at times $3 and
# $4 (seconds).
cores() {
    awk -v a="$1" -v b="$2" -v t0="$3" -v t1="$4" -v hz="$hz" \
        'BEGIN { printf "%.2f", (b - a) / hz / (t1 - t0) }'
}
# What neither the server nor the load generator used, i.e. interference from elsewhere:
# the cores the machine used between machine_ticks readings $1 and $2 (at times $3 and
# $4) less the cores given after them (the server's, the load generator's), at least 0.
other_cores() {
    local m0=$1 m1=$2 t0=$3 t1=$4
    shift 4
    awk -v a="$m0" -v b="$m1" -v t0="$t0" -v t1="$t1" -v hz="$hz" -v used="$*" 'BEGIN {
        o = (b - a) / hz / (t1 - t0); n = split(used, u, " ")
        for (i = 1; i <= n; i++) o -= u[i]
        printf "%.2f", (o < 0 ? 0 : o) }'
}
# A warning after the line $1 when other_cores gave $2 above 0.15.
warn_other() {
    if awk -v o="$2" 'BEGIN { exit !(o > 0.15) }'; then
        say "$1: WARNING: other processes used $2 cores during this run"
    fi
}

# --- build and environment -------------------------------------------------------------
# cargo build --release with the packages given (-p NAME ...), unless BUILD is not 1.
build_release() {
    if [[ $BUILD == 1 ]]; then
        say "== build"
        (cd "$root" && cargo build --release "$@")
    else
        say "== build skipped (BENCH_BUILD=0): $(date -r "$twistrs" +%FT%T) $twistrs"
    fi
}
# The twistrs binary, with plugin $1.
need_twistrs() {
    [[ -x $twistrs ]] || die "missing $twistrs"
    "$twistrs" "$1" --help >/dev/null 2>&1 || die "$twistrs has no $1 plugin"
}
# Every command named after $1 (how to install them, or "") on the PATH.
need_tools() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool not found${hint:+ ($hint)}"
    done
}
# twistd-style servers rotate a log file by renaming it and creating a new one: as root, a
# log on /dev/null replaces the machine's /dev/null with a regular file (web.sh's first
# version did that). No server here ever gets /dev/null as a log file; web.sh and mail.sh
# check the device before the run (need_dev_null) and after it (check_dev_null).
need_dev_null() {
    [[ -c /dev/null ]] || die "/dev/null is not a character device: repair it (rm /dev/null; mknod -m 666 /dev/null c 1 3) first"
}
check_dev_null() {
    if [[ ! -c /dev/null ]]; then
        say "$SCRIPT: ERROR: /dev/null is no longer a character device after this run"
        status=1
    fi
}

# bench/.venv with Python module $1 at version $3 (pip package $2, installed if the
# version differs); sets venv and py.
python_env() {
    local module=$1 package=$2 version=$3
    say "== python environment"
    venv="$here/.venv"
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv"
    fi
    py="$venv/bin/python"
    if ! "$py" -c "import sys, $module; sys.exit($module.__version__ != '$version')" 2>/dev/null; then
        "$venv/bin/pip" install --quiet "$package==$version"
    fi
}
# Prints the versions of Python and Twisted and Twisted's reactor; dies if Twisted does
# not import.
check_twisted() {
    "$py" -c "import sys, twisted; from twisted.internet import reactor; \
print('python', sys.version.split()[0], '| Twisted', twisted.__version__, '|', type(reactor).__name__)" ||
        die "Twisted does not import from $venv"
}

# srv_pin and cli_pin: taskset prefixes putting the servers on CPU 0 and the clients on
# CPU 1 when PIN is 1 and there are two CPUs or more; empty otherwise.
# shellcheck disable=SC2034 # used by the scripts
set_pinning() {
    srv_pin=()
    cli_pin=()
    if [[ $PIN == 1 ]] && command -v taskset >/dev/null && (($(nproc) >= 2)); then
        srv_pin=(taskset -c 0)
        cli_pin=(taskset -c 1)
    fi
}
# The descriptor limit up to 20000 (or the hard limit); servers inherit it.
raise_nofile() { ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

# The first lines of the run; $1, if any, ends the twistrs line.
run_header() {
    say "== run $stamp"
    say "host: $(uname -sr), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    say "twistrs: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')${1:-}"
}

# Anything else running (a build, a test suite) skews every number: wait up to a minute
# (BENCH_QUIET_WAIT seconds; 0 for a quick check of a script) for the machine to be quiet
# (under 0.2 busy cores over one second). Sets busy.
wait_quiet() {
    local i b0
    say "loadavg at start: $(cat /proc/loadavg)"
    busy=n/a
    for ((i = 0; i < ${BENCH_QUIET_WAIT:-60}; i++)); do
        b0=$(machine_ticks)
        sleep 1
        busy=$(awk -v a="$b0" -v b="$(machine_ticks)" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
        awk -v b="$busy" 'BEGIN { exit !(b < 0.2) }' && break
        ((i % 10 == 0)) && say "machine busy ($busy cores used by other processes); waiting for it to be idle"
    done
    say "machine busy before start: $busy cores"
}

# --- report ----------------------------------------------------------------------------
get() { printf '%s' "${R[$1]:-n/a}"; }
has() { [[ " $SERVERS " == *" $1 "* ]]; }
# Median of the numbers on stdin.
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# a / b as "1.23x", or n/a when either is missing or b is not positive.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 <= 0) { print "n/a"; exit }
        printf "%.2fx", a / b }'
}
# Whether $1 (a number or "1.23x") is at least ($2 == ge), above ($2 == gt), below
# ($2 == lt) or at most ($2 == le) $3: met, MISSED, or n/a when $1 is not a number.
verdict() {
    awk -v r="${1%x}" -v op="$2" -v t="$3" 'BEGIN {
        if (r !~ /^[0-9.]+$/) { print "n/a"; exit }
        ok = (op == "ge") ? (r + 0 >= t) : (op == "gt") ? (r + 0 > t) : (op == "le") ? (r + 0 <= t) : (r + 0 < t)
        print ok ? "met" : "MISSED" }'
}

# The last lines: where the record is; exits with status, saying $1 when it is not 0.
finish() {
    say ""
    say "raw log: ${raw#"$root"/}"
    say "summary: ${summary#"$root"/}"
    if ((status != 0)); then
        say "$SCRIPT: $1 (see above)"
    fi
    exit "$status"
}

# Other twistrs binaries to run beside this one (e.g. built from an older commit):
# BENCH_TWISTRS_BINS="LABEL=PATH ..." sets TW_BIN[twistrs-LABEL]=PATH and other_twistrs,
# the list of those server names (with a trailing space), for a script's BENCH_SERVERS.
other_twistrs_bins() {
    declare -gA TW_BIN=()
    local kv
    for kv in ${BENCH_TWISTRS_BINS:-}; do
        [[ $kv =~ ^([A-Za-z0-9_]+)=(.+)$ ]] || die "BENCH_TWISTRS_BINS takes LABEL=PATH words, not '$kv'"
        [[ -x ${BASH_REMATCH[2]} ]] || die "BENCH_TWISTRS_BINS: ${BASH_REMATCH[2]} is not executable"
        TW_BIN[twistrs-${BASH_REMATCH[1]}]=$(realpath "${BASH_REMATCH[2]}")
    done
    other_twistrs=$(for n in "${!TW_BIN[@]}"; do printf '%s ' "$n"; done | tr ' ' '\n' | sort | tr '\n' ' ')
}
# The global options of twistrs server $1 into the array TW_ARGS: BENCH_TWISTRS_ARGS
# (split on spaces, e.g. "--metrics tcp:0:interface=127.0.0.1" or "--log-format json"),
# and for twistrs_metrics (the same binary as twistrs, for an A/B in one run) --metrics on a
# port of its own first. The scripts find their server's port by its own "NAME starting on"
# line or a port they chose, never the Metrics listener's.
twistrs_args() {
    TW_ARGS=()
    [[ $1 == twistrs_metrics ]] && TW_ARGS+=(--metrics tcp:0:interface=127.0.0.1)
    # shellcheck disable=SC2206 # split on purpose: a list of options
    TW_ARGS+=(${BENCH_TWISTRS_ARGS:-})
}
# The Metrics listener's port in log $1 (empty if it has none).
metrics_port() { sed -nE 's/.*Metrics starting on ([0-9]+)("}|)$/\1/p' "$1" | head -n1; }
# The scrape of the server whose log is $1, its lines matching $2, prefixed "[$3] metrics:"
# (nothing when it serves no metrics); checks that --metrics answers while the run is on.
show_metrics() {
    local port
    port=$(metrics_port "$1")
    [[ -n $port ]] || return 0
    curl -sS --max-time 5 "http://127.0.0.1:$port/metrics" | grep -E "$2" | sed "s/^/[$3] metrics: /" ||
        { say "[$3] metrics: no scrape from 127.0.0.1:$port"; status=1; }
}
# The binary of twistrs server $1 (twistrs, or twistrs-LABEL from BENCH_TWISTRS_BINS).
twistrs_bin() {
    if [[ $1 == twistrs || $1 == twistrs_metrics ]]; then echo "$twistrs"; else echo "${TW_BIN[$1]:-}"; fi
}
