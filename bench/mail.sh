#!/usr/bin/env bash
# bench/mail.sh: the mail benchmark, twistrs mail (SMTP into Maildir, every message
# fsynced, group-committed) vs aiosmtpd writing a Maildir (with Python's
# mailbox.Maildir.add as in the issue's reference figure, which fsyncs the file but not
# new/; with file and new/ fsynced per message, like twistrs; and with no fsync at all),
# all on 127.0.0.1:
# messages/s over 20 parallel SMTP sessions with a new connection per message and with
# reused sessions (postfix's smtp-source), files landed, POP3 RETR/s and latency
# (twistrs only), and the latency from the end of DATA to the 250 over 10 sessions, alone
# and while a bulk writer fills the same file system (twistrs and aiosmtpd-fsync).
# Run by hand, not in CI: see bench/README.md ("Mail"). Results go to bench/results/.
#
# Needs smtp-source (Debian: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix,
# "No configuration"; the script never starts postfix itself) and aiosmtpd in bench/.venv
# (installed by the script if missing).
# Knobs (environment): BENCH_SERVERS="twistrs twistrs_w2 aiosmtpd aiosmtpd-fsync aiosmtpd-nosync",
# BENCH_MSGS=2000,
# BENCH_SESSIONS=20, BENCH_SIZE=1024 (payload bytes per message), BENCH_RUNS=3 (runs per
# mode, median reported), BENCH_WARMUP_MSGS=200 (discarded, before the runs),
# BENCH_POP3_MSGS=200, BENCH_FSYNC_ITERS=200, BENCH_PIN=1 (servers on CPU 0, smtp-source
# and the POP3 client on CPU 1; 0 lets the scheduler place them), BENCH_BUILD=1 (0 runs
# the twistrs binary already in target/release), BENCH_TWISTRS_BINS="LABEL=PATH ..."
# (other twistrs binaries, e.g. built from an older commit, run as servers twistrs-LABEL
# beside twistrs), BENCH_LAT_SERVERS (default: every twistrs and aiosmtpd-fsync of
# BENCH_SERVERS), BENCH_LAT_MSGS=200, BENCH_LAT_SESSIONS=10, BENCH_LAT_RUNS=3,
# BENCH_BULK_MB=4096 (the bulk writer's size; 0: no bulk writer rows).
set -euo pipefail

SCRIPT=mail.sh
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

other_twistrs_bins
SERVERS=${BENCH_SERVERS:-"twistrs ${other_twistrs}twistrs_w2 aiosmtpd aiosmtpd-fsync aiosmtpd-nosync"}
is_twistrs() { [[ $1 == twistrs || $1 == twistrs-* || $1 == twistrs_w2 ]]; }
LAT_SERVERS=${BENCH_LAT_SERVERS:-$(for n in $SERVERS; do
    if is_twistrs "$n" || [[ $n == aiosmtpd-fsync ]]; then printf '%s ' "$n"; fi
done)}
LAT_MSGS=${BENCH_LAT_MSGS:-200}
LAT_SESSIONS=${BENCH_LAT_SESSIONS:-10}
LAT_RUNS=${BENCH_LAT_RUNS:-3}
BULK_MB=${BENCH_BULK_MB:-4096}
MSGS=${BENCH_MSGS:-2000}
SESSIONS=${BENCH_SESSIONS:-20}
SIZE=${BENCH_SIZE:-1024}
RUNS=${BENCH_RUNS:-3}
WARMUP_MSGS=${BENCH_WARMUP_MSGS:-200}
POP3_MSGS=${BENCH_POP3_MSGS:-200}
FSYNC_ITERS=${BENCH_FSYNC_ITERS:-200}
PIN=${BENCH_PIN:-1}
BUILD=${BENCH_BUILD:-1}
AIOSMTPD_VERSION=1.4.6
RCPT=joe@example.com
SENDER=a@b.test
# Upper bound for one smtp-source or POP3 run (seconds): every loop here is bounded.
RUN_TIMEOUT=300

# The safety check comes first: twistd-style servers rotate log files by renaming them,
# so a log on /dev/null would, as root, replace the device (see need_dev_null). No
# server here ever gets /dev/null as a log file.
need_dev_null
for v in MSGS SESSIONS SIZE RUNS WARMUP_MSGS POP3_MSGS FSYNC_ITERS LAT_MSGS LAT_SESSIONS LAT_RUNS BULK_MB; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "BENCH_$v must be a number"
done
((RUNS >= 1 && RUNS <= 20 && MSGS >= 1 && MSGS <= 1000000 && SESSIONS >= 1 && SESSIONS <= 1000)) ||
    die "BENCH_RUNS (1-20), BENCH_MSGS (1-1000000) or BENCH_SESSIONS (1-1000) out of range"
((LAT_RUNS <= 20 && LAT_MSGS <= 100000 && LAT_SESSIONS >= 1 && LAT_SESSIONS <= 1000 && BULK_MB <= 65536)) ||
    die "BENCH_LAT_RUNS (0-20), BENCH_LAT_MSGS (0-100000), BENCH_LAT_SESSIONS (1-1000) or BENCH_BULK_MB (0-65536) out of range"

start_run mail

# Every folder made directly in $work (each server's Maildir) goes into a block group of
# its own, one with few folders and many free inodes (ext4's Orlov allocator treats a
# folder with the T attribute as a top of hierarchy), rather than next to /tmp: on ext4
# without a journal, creating a file in a group where many files were deleted in the
# last 60-300 s (the previous run's cleanup, anyone's test suite in /tmp) scans past
# every one of those inodes (recently_deleted() in find_inode_bit), and on this VM that
# made each create cost 0.5 ms instead of 0.015 ms. See clear_maildir too.
chattr +T "$work" 2>/dev/null || true

now() { printf '%s' "$EPOCHREALTIME"; }

# --- build and environment -------------------------------------------------------------
build_release -p twistrs
need_twistrs mail

smtp_source=$(command -v smtp-source || true)
[[ -n $smtp_source ]] || { [[ -x /usr/sbin/smtp-source ]] && smtp_source=/usr/sbin/smtp-source; }
[[ -n $smtp_source ]] ||
    die "smtp-source not found (Debian: echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections; DEBIAN_FRONTEND=noninteractive apt-get install -y postfix)"
need_tools "" taskset timeout find dd

python_env aiosmtpd aiosmtpd "$AIOSMTPD_VERSION"
"$py" -c "import sys, asyncio, aiosmtpd; \
print('python', sys.version.split()[0], '| aiosmtpd', aiosmtpd.__version__, '|', type(asyncio.new_event_loop()).__name__)" ||
    die "aiosmtpd does not import from $venv"

raise_nofile
set_pinning

run_header ", $twistrs"
for n in "${!TW_BIN[@]}"; do say "$n: ${TW_BIN[$n]} ($(date -r "${TW_BIN[$n]}" +%FT%T))"; done
say "smtp-source: $smtp_source ($(dpkg-query -W -f='${Package} ${Version}' postfix 2>/dev/null || echo '?'))"
say "file system of the Maildirs: $(df -T "$work" | awk 'NR == 2 {print $1, $2}') ($work)"
say "servers: $SERVERS; $MSGS messages of $SIZE B to $RCPT over $SESSIONS sessions, $RUNS runs per mode (median), $WARMUP_MSGS warm-up messages; POP3: $POP3_MSGS messages"
say "pinning: ${srv_pin[*]:-none} for servers, ${cli_pin[*]:-none} for smtp-source and the POP3 client"
wait_quiet

# --- what the disk charges for durability ------------------------------------------------
# (Its files stay in $work until the end, for the reason given at clear_maildir.)
say "== fsync cost"
if line=$("$py" "$here/peers/fsync_cost.py" "$work" "$FSYNC_ITERS"); then
    say "fsync cost: $line"
    for k in create_p50_ms file_fsync_p50_ms file_fsync_p99_ms dir_fsync_p50_ms dir_fsync_p99_ms delivery_p50_ms serial_msgs_per_sec; do
        R[fsync.$k]=$(kv "$k" "$line")
    done
    # Creating a file normally takes about 0.015 ms here; far more means the scan over
    # recently deleted inodes described at the top, which slows every server's deliveries.
    if awk -v c="${R[fsync.create_p50_ms]:-0}" 'BEGIN { exit !(c > 0.1) }'; then
        say "fsync cost: WARNING: creating a file takes ${R[fsync.create_p50_ms]} ms (usually ~0.015 ms): many files were deleted"
        say "  near $work in the last minutes; delivery figures will be low. Rerun in 5 minutes."
    fi
else
    say "fsync cost: failed"
fi

# --- servers ---------------------------------------------------------------------------
# Each server's files live in a folder of its own, $work/NAME.XXXXXX: a random name, since
# ext4 picks the block group of a new folder under a T folder starting from a hash of its
# name, and a fixed name would land in the group whose files the previous run has just
# deleted (see the top).
declare -A BASE
base_of() {
    [[ -n ${BASE[$1]:-} ]] || BASE[$1]=$(mktemp -d "$work/$1.XXXXXX")
    printf '%s' "${BASE[$1]}"
}
# The Maildir (the folder holding new/, tmp/, cur/) of server $1.
maildir_of() {
    case $1 in
    twistrs | twistrs-* | twistrs_w2) printf '%s' "${BASE[$1]}/mail/joe" ;;
    *) printf '%s' "${BASE[$1]}/Maildir" ;;
    esac
}
count_files() { find "$1" -mindepth 1 -maxdepth 1 -type f 2>/dev/null | wc -l || true; }
# Empties a Maildir between runs without deleting a file: each of new/, tmp/, cur/ that
# holds files is renamed into $work/retired/ and made again, empty, with the same mode
# (the servers open these folders by path for every message, and are idle meanwhile).
# Deleting would skew the next runs: on ext4 without a journal (this VM's disk), the
# kernel does not reuse an inode for 60 s after its file was deleted (300 s while its
# inode table block is dirty), and every file created in that block group meanwhile
# scans past all the recently freed inodes (recently_deleted() in find_inode_bit): after
# a few thousand deletions, creating a file costs up to 30 times as much. Everything is
# deleted at the end, with $work.
retired=0
clear_maildir() {
    local d=$1 sub mode
    mkdir -p "$work/retired"
    for sub in new tmp cur; do
        [[ -d $d/$sub ]] || continue
        [[ -n $(find "$d/$sub" -mindepth 1 -maxdepth 1 -print -quit) ]] || continue
        mode=$(stat -c %a "$d/$sub")
        retired=$((retired + 1))
        mv "$d/$sub" "$work/retired/$retired-$sub"
        mkdir -m "$mode" "$d/$sub"
    done
    return 0
}

# Starts server $1 on free ports of 127.0.0.1; sets SPID, SPORT and (twistrs) PPORT.
start_server() {
    local name=$1 log="$work/$1.server.log" out="$work/$1.server.out" i cmd
    rm -f "$log" "$out"
    base_of "$name" >/dev/null # (not in a subshell: sets BASE[$name])
    case $name in
    twistrs | twistrs-* | twistrs_w2)
        mkdir -p "${BASE[$name]}/mail"
        local bin=$twistrs workers=()
        [[ $name == twistrs_w2 ]] && workers=(--workers 2)
        if [[ $name == twistrs-* ]]; then
            bin=${TW_BIN[$name]:-}
            [[ -n $bin ]] || die "no binary for $name: give it in BENCH_TWISTRS_BINS"
        fi
        # -l: a regular file of the run's folder, never /dev/null (see the top).
        cmd=("$bin" -n --pidfile= "${workers[@]}" -l "$log" mail -H mx.test -d "example.com=${BASE[$name]}/mail"
            -u joe=secret -s tcp:0:interface=127.0.0.1 -p tcp:0:interface=127.0.0.1)
        ;;
    aiosmtpd) cmd=("$py" "$here/peers/aiosmtpd_maildir.py" --port 0 "$(maildir_of "$name")") ;;
    aiosmtpd-fsync) cmd=("$py" "$here/peers/aiosmtpd_maildir.py" --fsync --port 0 "$(maildir_of "$name")") ;;
    aiosmtpd-nosync) cmd=("$py" "$here/peers/aiosmtpd_maildir.py" --nosync --port 0 "$(maildir_of "$name")") ;;
    *) die "unknown server $name (BENCH_SERVERS takes twistrs, twistrs-LABEL, aiosmtpd, aiosmtpd-fsync, aiosmtpd-nosync)" ;;
    esac
    say "[$name] ${cmd[*]}"
    local pin=("${srv_pin[@]}")
    [[ $name == *_w2 ]] && pin=()
    "${pin[@]}" "${cmd[@]}" </dev/null >"$out" 2>&1 &
    SPID=$!
    pids+=("$SPID")
    SPORT=
    PPORT=
    for ((i = 0; i < 100; i++)); do
        if is_twistrs "$name"; then
            # The log file appears only once twistrs has started logging.
            SPORT=$(sed -nE 's/.* SMTP starting on ([0-9]+)$/\1/p' "$log" 2>/dev/null | head -n1 || true)
            PPORT=$(sed -nE 's/.* VirtualPOP3 starting on ([0-9]+)$/\1/p' "$log" 2>/dev/null | head -n1 || true)
            [[ -n $SPORT && -n $PPORT ]] && { [[ $name != *_w2 ]] || grep -q ' workers serve\.$' "$log"; } && break
        else
            SPORT=$(sed -nE 's/^listening ([0-9]+)$/\1/p' "$out" | head -n1 || true)
            [[ -n $SPORT ]] && break
        fi
        kill -0 "$SPID" 2>/dev/null || { cat "$out" "$log" 2>/dev/null || true; die "$name exited before listening"; }
        sleep 0.1
    done
    [[ -n $SPORT ]] || { cat "$out" "$log" 2>/dev/null || true; die "$name did not report its port within 10 s"; }
    say "[$name] pid $SPID, SMTP on 127.0.0.1:$SPORT${PPORT:+, POP3 on 127.0.0.1:$PPORT}, Maildir $(maildir_of "$name")"
}

# smtp-source with $1 messages, mode $2 (new: a new connection per message, the default;
# reused: -d, each session sends message after message over one connection). Output in
# SS_RC, SS_ERR (stderr lines), SS_SECS, SS_SCPU/SS_CCPU/SS_OTHER (cores).
run_source() {
    local msgs=$1 mode=$2 flags=() t0 t1 c0 c1 w0 w1 m0 m1
    [[ $mode == reused ]] && flags=(-d)
    t0=$(now); c0=$(tree_ticks "$SPID"); w0=$(reaped_ticks); m0=$(machine_ticks)
    SS_RC=0
    "${cli_pin[@]}" timeout "$RUN_TIMEOUT" "$smtp_source" "${flags[@]}" -s "$SESSIONS" -m "$msgs" -l "$SIZE" \
        -M bench.test -f "$SENDER" -t "$RCPT" "127.0.0.1:$SPORT" >"$work/ss.out" 2>"$work/ss.err" </dev/null || SS_RC=$?
    t1=$(now); c1=$(tree_ticks "$SPID"); w1=$(reaped_ticks); m1=$(machine_ticks)
    SS_ERR=$(cat "$work/ss.out" "$work/ss.err" | grep -c . || true)
    SS_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
    SS_SCPU=$(cores "$c0" "$c1" 0 "$SS_SECS")
    SS_CCPU=$(cores "$w0" "$w1" 0 "$SS_SECS")
    SS_OTHER=$(other_cores "$m0" "$m1" 0 "$SS_SECS" "$SS_SCPU" "$SS_CCPU")
}

# RUNS runs of mode $2 against server $1, each into an empty Maildir.
measure_mode() {
    local name=$1 mode=$2 md run landed tmpleft short rate rates=() bad=() errs=0 us
    md=$(maildir_of "$name")
    for ((run = 1; run <= RUNS; run++)); do
        clear_maildir "$md"
        run_source "$MSGS" "$mode"
        landed=$(count_files "$md/new")
        tmpleft=$(count_files "$md/tmp")
        # Every message carries SIZE payload bytes plus headers: a smaller file is truncated.
        short=$(find "$md/new" -mindepth 1 -maxdepth 1 -type f -size -"$SIZE"c 2>/dev/null | wc -l || true)
        rate=$(awk -v n="$MSGS" -v s="$SS_SECS" 'BEGIN { printf "%.0f", n / s }')
        us=$(awk -v c="$SS_SCPU" -v s="$SS_SECS" -v n="$MSGS" 'BEGIN { printf "%.0f", c * s * 1e6 / n }')
        say "[$name] $mode run $run: $MSGS msgs in ${SS_SECS}s = $rate msg/s; smtp-source rc=$SS_RC, $SS_ERR output lines; landed $landed/$MSGS in new/, $tmpleft left in tmp/, $short short; server_cpu=$SS_SCPU smtp_source_cpu=$SS_CCPU other_cpu=$SS_OTHER server_us_per_msg=$us"
        if ((SS_ERR > 0)); then
            head -n 5 "$work/ss.out" "$work/ss.err" 2>/dev/null | sed "s/^/[$name] $mode run $run: smtp-source: /"
        fi
        R[$name.$mode.run$run]="$rate|$landed|$((SS_ERR + (SS_RC != 0)))|$SS_SCPU|$SS_CCPU|$SS_OTHER|$us|$tmpleft|$short"
        warn_other "[$name] $mode run $run" "$SS_OTHER"
        if ((SS_RC != 0 || SS_ERR > 0 || landed != MSGS || tmpleft != 0 || short != 0)); then
            status=1
            errs=$((errs + SS_ERR + (SS_RC != 0)))
            bad+=("$landed")
        fi
        if ((SS_RC == 0)); then rates+=("$rate"); fi
    done
    clear_maildir "$md"
    R[$name.$mode.rate]=$(printf '%s\n' "${rates[@]}" | { grep -E '^[0-9]+$' || true; } | median)
    R[$name.$mode.rates]="${rates[*]:-}"
    R[$name.$mode.errs]=$errs
    R[$name.$mode.bad]="${bad[*]:-}"
}

# twistrs only: POP3_MSGS messages delivered over SMTP, then RETR 1..N in one session.
measure_pop3() {
    local name=$1 md line landed
    md=$(maildir_of "$name")
    clear_maildir "$md"
    run_source "$POP3_MSGS" reused
    landed=$(count_files "$md/new")
    say "[$name] pop3: delivered $landed/$POP3_MSGS (smtp-source rc=$SS_RC)"
    if ((landed != POP3_MSGS)); then
        status=1
    fi
    line=$("${cli_pin[@]}" timeout "$RUN_TIMEOUT" "$py" "$here/peers/pop3_retr.py" --port "$PPORT" \
        --user "$RCPT" --password secret --expect "$POP3_MSGS" --maildir "$md" </dev/null 2>"$work/pop3.err") || status=1
    sed "s/^/[$name] pop3: /" "$work/pop3.err"
    say "[$name] pop3: ${line:-failed}"
    for k in retr retr_per_sec p50_ms p99_ms max_ms login_ms errors; do
        R[$name.pop3.$k]=$(kv "$k" "${line:-}")
    done
    [[ ${R[$name.pop3.errors]:-1} == 0 ]] || status=1
    clear_maildir "$md"
}

# --- latency to the 250, alone and beside a bulk writer ----------------------------------
# The latency client (peers/smtp_latency.py) against the server started last: LAT_MSGS
# messages over LAT_SESSIONS sessions, each timed from its "." to its 250. Sets LAT_LINE
# and LAT_RC.
run_latency() {
    LAT_RC=0
    LAT_LINE=$("${cli_pin[@]}" timeout "$RUN_TIMEOUT" "$py" "$here/peers/smtp_latency.py" --port "$SPORT" \
        --sessions "$LAT_SESSIONS" --msgs "$LAT_MSGS" --size "$SIZE" --rcpt "$RCPT" \
        --timeout $((RUN_TIMEOUT - 10)) </dev/null 2>"$work/lat.err") || LAT_RC=$?
}
# The bulk writer: dd writes BULK_MB MiB of zeros, buffered, into $work (the file system of
# the Maildirs) and fdatasyncs them, on the clients' CPU at the lowest priority (so it
# takes no CPU from the server, and the client still gets the CPU when an answer comes).
# Returns once a quarter of it is written (the page cache then holds gigabytes of dirty
# pages and the kernel is writing them back), or after 60 s. Sets BULK_PID and BULK_AT.
start_bulk() {
    local i mb=0
    rm -f "$work/bulk"
    "${cli_pin[@]}" nice -n 19 timeout "$RUN_TIMEOUT" dd if=/dev/zero of="$work/bulk" bs=1M count="$BULK_MB" \
        conv=fdatasync status=none </dev/null 2>"$work/bulk.err" &
    BULK_PID=$!
    pids+=("$BULK_PID")
    for ((i = 0; i < 600; i++)); do
        mb=$(($(stat -c %s "$work/bulk" 2>/dev/null || echo 0) / 1048576))
        ((mb >= BULK_MB / 4)) && break
        kill -0 "$BULK_PID" 2>/dev/null || break
        sleep 0.1
    done
    BULK_AT=$mb
}
# Stops the writer (by its PID) and deletes its file. Sets BULK_ALIVE (whether it was
# still writing or syncing when the client finished) and BULK_DONE (MiB written by then).
stop_bulk() {
    BULK_ALIVE=no
    kill -0 "$BULK_PID" 2>/dev/null && BULK_ALIVE=yes
    BULK_DONE=$(($(stat -c %s "$work/bulk" 2>/dev/null || echo 0) / 1048576))
    stop_pid "$BULK_PID"
    rm -f "$work/bulk"
}
# LAT_RUNS latency runs against server $1 with nothing else writing (quiet), then as many
# with the bulk writer (bulk), each into an empty Maildir.
measure_latency() {
    local name=$1 md kind run landed v p50s p99s maxs totals note
    md=$(maildir_of "$name")
    for kind in quiet bulk; do
        [[ $kind == bulk ]] && ((BULK_MB == 0)) && continue
        p50s=() p99s=() maxs=() totals=()
        for ((run = 1; run <= LAT_RUNS; run++)); do
            clear_maildir "$md"
            note=
            [[ $kind == bulk ]] && start_bulk
            run_latency
            if [[ $kind == bulk ]]; then
                stop_bulk
                note="; bulk writer: client started at $BULK_AT MiB, $BULK_DONE MiB written by its end, writer still busy then: $BULK_ALIVE"
            fi
            landed=$(count_files "$md/new")
            say "[$name] latency $kind run $run: ${LAT_LINE:-failed} (rc=$LAT_RC); landed $landed/$LAT_MSGS$note"
            sed "s/^/[$name] latency $kind run $run: /" "$work/lat.err"
            if ((LAT_RC != 0 || landed != LAT_MSGS)) || [[ $(kv errors "${LAT_LINE:-}") != 0 ]]; then
                status=1
            fi
            p50s+=("$(kv p50_ms "${LAT_LINE:-}")")
            p99s+=("$(kv p99_ms "${LAT_LINE:-}")")
            maxs+=("$(kv max_ms "${LAT_LINE:-}")")
            totals+=("$(kv total_s "${LAT_LINE:-}")")
        done
        clear_maildir "$md"
        R[$name.lat.$kind.p50]=$(printf '%s\n' "${p50s[@]}" | { grep -E '^[0-9.]+$' || true; } | median)
        R[$name.lat.$kind.p99]=$(printf '%s\n' "${p99s[@]}" | { grep -E '^[0-9.]+$' || true; } | median)
        R[$name.lat.$kind.total]=$(printf '%s\n' "${totals[@]}" | { grep -E '^[0-9.]+$' || true; } | median)
        v=$(printf '%s\n' "${maxs[@]}" | { grep -E '^[0-9.]+$' || true; } | sort -n | tail -n1)
        R[$name.lat.$kind.max]=${v:-n/a}
        R[$name.lat.$kind.p99s]="${p99s[*]}"
        R[$name.lat.$kind.totals]="${totals[*]}"
    done
}

for name in $SERVERS; do
    say "== $name"
    start_server "$name"
    md=$(maildir_of "$name")
    # The same durability probe, in the server's own folder: its block group is the
    # Maildir's, so a slow create here means this server's deliveries pay for it too.
    if line=$("$py" "$here/peers/fsync_cost.py" "${BASE[$name]}" 50); then
        R[$name.create]=$(kv create_p50_ms "$line")
        say "[$name] probe next to the Maildir: $line"
        if awk -v c="${R[$name.create]:-0}" 'BEGIN { exit !(c > 0.1) }'; then
            say "[$name] WARNING: creating a file next to this Maildir takes ${R[$name.create]} ms (usually ~0.015 ms):"
            say "  recently deleted files in its block group; this server's figures will be low. Rerun in 5 minutes."
        fi
    fi
    if ((WARMUP_MSGS > 0)); then
        run_source "$WARMUP_MSGS" new
        say "[$name] warm-up: $WARMUP_MSGS msgs in ${SS_SECS}s (rc=$SS_RC), landed $(count_files "$md/new") (discarded)"
        clear_maildir "$md"
    fi
    for mode in new reused; do
        measure_mode "$name" "$mode"
    done
    if [[ $name == twistrs && $POP3_MSGS -gt 0 ]]; then
        measure_pop3 "$name"
    fi
    if [[ " $LAT_SERVERS " == *" $name "* ]] && ((LAT_RUNS > 0 && LAT_MSGS > 0)); then
        measure_latency "$name"
    fi
    say "[$name] RSS at the end: $(rss_kib "$SPID" 2>/dev/null || echo '?') KiB, threads: $(awk '/^Threads:/ {print $2}' "/proc/$SPID/status" 2>/dev/null || echo '?')"
    kill -0 "$SPID" 2>/dev/null || { say "[$name] the server died during the runs"; status=1; }
    stop_pid "$SPID"
    { tail -n 4 "$work/$name.server.log" 2>/dev/null || true; tail -n 4 "$work/$name.server.out"; } |
        sed "s/^/[$name] log: /"
    # Anything the server logged as an error or a traceback.
    if grep -iE 'error|traceback|exception|panic' "$work/$name.server.log" "$work/$name.server.out" 2>/dev/null | head -n 10 | sed "s/^/[$name] log: ERROR? /" | grep .; then
        status=1
    fi
done
say "loadavg at end: $(cat /proc/loadavg)"
check_dev_null

# --- report ----------------------------------------------------------------------------
# "2000/2000" when every run of both modes landed every message, else the short counts.
landed_cell() {
    local name=$1 bad
    bad="$(get "$name.new.bad") $(get "$name.reused.bad")"
    bad=$(tr -s ' ' <<<"${bad//n\/a/}" | sed 's/^ //; s/ $//')
    if [[ -z $bad ]]; then
        printf '%s/%s (all %s runs)' "$MSGS" "$MSGS" "$((2 * RUNS))"
    else
        printf 'NOT ALL: %s/%s in failed runs' "$bad" "$MSGS"
    fi
}
has_lat() { [[ " $LAT_SERVERS " == *" $1 "* ]]; }
label() {
    case $1 in
    twistrs) printf 'twistrs (fsync, group commit)' ;;
    aiosmtpd) printf 'aiosmtpd, mailbox.Maildir.add (file fsync, no dir fsync)' ;;
    aiosmtpd-fsync) printf 'aiosmtpd --fsync (file + dir fsync per message)' ;;
    aiosmtpd-nosync) printf 'aiosmtpd --nosync (no fsync at all)' ;;
    twistrs-*) printf '%s (%s)' "$1" "${TW_BIN[$1]:-?}" ;;
    twistrs_w2) printf 'twistrs --workers 2 (not pinned)' ;;
    *) printf '%s' "$1" ;;
    esac
}

{
    say ""
    say "Mail benchmark, $stamp: smtp-source, $MSGS messages of $SIZE B (payload) to $RCPT over"
    say "$SESSIONS parallel sessions; msg/s is the median of $RUNS runs per mode, each into an empty Maildir."
    say ""
    say "| server / variant | msg/s new connection per message | msg/s reused sessions | files landed | errors |"
    say "|---|---:|---:|---|---:|"
    for name in $SERVERS; do
        e=$(($(get "$name.new.errs" | sed 's/n\/a/0/') + $(get "$name.reused.errs" | sed 's/n\/a/0/')))
        say "| $(label "$name") | $(get "$name.new.rate") | $(get "$name.reused.rate") | $(landed_cell "$name") | $e |"
    done
    if has twistrs && [[ $POP3_MSGS -gt 0 ]]; then
        say ""
        say "| POP3 (twistrs) | RETR/s | p50 ms per RETR | p99 ms per RETR | max ms | RETRs | errors |"
        say "|---|---:|---:|---:|---:|---:|---:|"
        say "| poplib, one session, RETR 1..$POP3_MSGS of $SIZE B messages | $(get twistrs.pop3.retr_per_sec) | $(get twistrs.pop3.p50_ms) | $(get twistrs.pop3.p99_ms) | $(get twistrs.pop3.max_ms) | $(get twistrs.pop3.retr) | $(get twistrs.pop3.errors) |"
    fi
    if [[ -n ${LAT_SERVERS// /} ]] && ((LAT_RUNS > 0 && LAT_MSGS > 0)); then
        say ""
        say "Latency from the end of DATA to the 250: $LAT_MSGS messages of $SIZE B over $LAT_SESSIONS sessions (smtplib),"
        say "$LAT_RUNS runs each, alone (quiet) and while dd writes $BULK_MB MiB into the same file system (bulk):"
        say "medians over the runs, and the largest max."
        say ""
        say "| server / variant | writer | p50 ms | p99 ms | max ms | s for $LAT_MSGS msgs | p99 ms per run | s per run |"
        say "|---|---|---:|---:|---:|---:|---|---|"
        for name in $LAT_SERVERS; do
            for kind in quiet bulk; do
                [[ $kind == bulk ]] && ((BULK_MB == 0)) && continue
                w=$([[ $kind == bulk ]] && echo "dd ${BULK_MB} MiB" || echo "none")
                say "| $(label "$name") | $w | $(get "$name.lat.$kind.p50") | $(get "$name.lat.$kind.p99") | $(get "$name.lat.$kind.max") | $(get "$name.lat.$kind.total") | $(get "$name.lat.$kind.p99s") | $(get "$name.lat.$kind.totals") |"
            done
        done
    fi
    if has twistrs; then
        say ""
        say "| ratio | value | target | |"
        say "|---|---:|---|---|"
        for other in $SERVERS; do
            [[ $other == twistrs-* ]] || continue
            for mode in new reused; do
                r=$(ratio "$(get "twistrs.$mode.rate")" "$(get "$other.$mode.rate")")
                say "| twistrs/$other msg/s, $mode | $r | (no target: twistrs against another build) | |"
            done
            if [[ " $LAT_SERVERS " == *" $other "* ]] && ((BULK_MB > 0)) && has_lat twistrs; then
                r=$(ratio "$(get "$other.lat.bulk.p99")" "$(get twistrs.lat.bulk.p99)")
                say "| $other/twistrs p99 ms to the 250 beside the bulk writer | $r | (no target) | |"
            fi
        done
        if has twistrs_w2; then
            for mode in new reused; do
                r=$(ratio "$(get "twistrs_w2.$mode.rate")" "$(get "twistrs.$mode.rate")")
                say "| twistrs_w2/twistrs msg/s, $mode (2 workers over 1) | $r | above 1x | $(verdict "$r" gt 1) |"
            done
        fi
        for peer in aiosmtpd aiosmtpd-fsync aiosmtpd-nosync; do
            has "$peer" || continue
            for mode in new reused; do
                r=$(ratio "$(get "twistrs.$mode.rate")" "$(get "$peer.$mode.rate")")
                m=$([[ $mode == new ]] && echo "new connections" || echo "reused sessions")
                if [[ $peer == aiosmtpd-nosync ]]; then
                    say "| twistrs/$peer msg/s, $m | $r | (no target: aiosmtpd with no durability at all) | |"
                else
                    say "| twistrs/$peer msg/s, $m | $r | at least 5x aiosmtpd's messages/s while fsyncing every message | $(verdict "$r" ge 5) |"
                fi
            done
        done
        if [[ $POP3_MSGS -gt 0 ]]; then
            p99=$(get twistrs.pop3.p99_ms)
            say "| twistrs ms per RETR (p99; p50 $(get twistrs.pop3.p50_ms)) | $p99 ms | under 1 ms per RETR | $(verdict "$p99" lt 1) |"
            r=$(ratio "$(get twistrs.pop3.retr_per_sec)" 23)
            say "| twistrs RETR/s / Twisted's reference (~23 RETR/s) | $r | (reference figure, not measured here) | |"
        fi
    fi
    say ""
    say "Disk cost of durability here ($FSYNC_ITERS serial deliveries of 1 KiB: write to tmp/, fsync, rename"
    say "into new/, fsync new/): create p50 $(get fsync.create_p50_ms) ms, file fsync p50 $(get fsync.file_fsync_p50_ms) ms (p99 $(get fsync.file_fsync_p99_ms)),"
    say "directory fsync p50 $(get fsync.dir_fsync_p50_ms) ms (p99 $(get fsync.dir_fsync_p99_ms)), whole delivery p50"
    say "$(get fsync.delivery_p50_ms) ms: at most $(get fsync.serial_msgs_per_sec) msg/s for one writer that fsyncs each message alone."
    say "Create p50 next to each server's Maildir (usually ~0.015 ms; far more skews that server):$(
        for name in $SERVERS; do printf ' %s %s ms;' "$name" "$(get "$name.create")"; done | sed 's/;$/./')"
    say ""
    say "| server | mode | run | msg/s | landed | errors | server CPU | smtp-source CPU | other CPU | server CPU µs/msg |"
    say "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for name in $SERVERS; do
        for mode in new reused; do
            for ((run = 1; run <= RUNS; run++)); do
                IFS='|' read -r rate landed errs scpu ccpu other us _ _ <<<"$(get "$name.$mode.run$run")"
                say "| $name | $mode | $run | ${rate:-n/a} | ${landed:-n/a} | ${errs:-n/a} | ${scpu:-n/a} | ${ccpu:-n/a} | ${other:-n/a} | ${us:-n/a} |"
            done
        done
    done
    say ""
    say "(new: smtp-source's default, one connection per message; reused: smtp-source -d, each"
    say "session sends message after message over one connection. CPU: cores busy over the run,"
    say "1.00 = one full core; other: used by neither side, i.e. interference; µs/msg: server CPU"
    say "time, kernel included, per message. landed: files in new/ after the run.)"
} | tee "$summary"

finish "some runs had errors, lost messages or failed"
