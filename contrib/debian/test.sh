#!/usr/bin/env bash
# Builds the package, installs it on this machine, checks it, and removes it again:
# man twistrs, the bash completions, the units, the twistrs user, and logrotate -f with the
# installed file against a running daemon under load, losing no line. Needs root, dpkg-deb,
# logrotate, curl and man. .ci/run calls it when dpkg-deb is there.
# Usage: contrib/debian/test.sh [BINARY]  (passed on to build.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "contrib/debian/test.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
if dpkg -s twistrs >/dev/null 2>&1; then fail "a twistrs package is installed already: not touching it"; fi
deb=$(contrib/debian/build.sh "$@" | tail -1)
# Debian's own checker of packages: no error and no warning (.ci/run installs it).
if command -v lintian >/dev/null 2>&1; then
    lint=$(lintian --fail-on error,warning "$deb" 2>&1) || fail "lintian: $lint"
fi
work=$(mktemp -d)
pidfile=/run/twistrs-web-pkgtest/twistrs.pid
log=/var/log/twistrs/web-pkgtest.log
cleanup() {
    if [ -e "$pidfile" ]; then /usr/bin/twistrs stop --pidfile="$pidfile" --timeout 5 >/dev/null 2>&1 || true; fi
    rm -rf /run/twistrs-web-pkgtest "$work"
    if dpkg -s twistrs >/dev/null 2>&1; then dpkg -P twistrs >/dev/null || true; fi
    rm -f /etc/systemd/system/multi-user.target.wants/twistrs-web@test-purge.service
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
[ -x /usr/bin/twistrs ] || fail "no /usr/bin/twistrs"
getent passwd twistrs >/dev/null || fail "no twistrs user"
[ "$(stat -c %U:%a /var/log/twistrs)" = root:755 ] || fail "/var/log/twistrs is not root's, 0755"
man -P cat twistrs 2>/dev/null | grep -q "log-format" || fail "man twistrs does not show the page"
man -P cat twistrs-web 2>/dev/null | grep -q -- "--path" || fail "man twistrs-web does not show the page"
bash --norc -c 'source /usr/share/bash-completion/completions/twistrs && complete -p twistrs' | grep -q "_twistrs twistrs" \
    || fail "the bash completions do not load"
grep -q '^ExecStart=/usr/bin/twistrs .* web \$TWISTRS_ARGS$' /usr/lib/systemd/system/twistrs-web@.service \
    || fail "twistrs-web@.service"
grep -q '^EnvironmentFile=/etc/default/twistrs-web-%i$' /usr/lib/systemd/system/twistrs-web@.service \
    || fail "twistrs-web@.service reads no /etc/default file"
# A unit for every service plugin but the wire services (echo stands for them).
for plugin in web mail procmon dns inetd portforward socks echo; do
    grep -q "^ExecStart=/usr/bin/twistrs .* $plugin \\\$TWISTRS_ARGS\$" "/usr/lib/systemd/system/twistrs-$plugin@.service" \
        || fail "no twistrs-$plugin@.service running $plugin"
done
# The installed units as systemd reads them (the man pages they name are installed now);
# systemd-analyze says what is wrong on stderr whatever its exit status.
if command -v systemd-analyze >/dev/null 2>&1; then
    for unit in /usr/lib/systemd/system/twistrs-*@.service; do
        out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
        [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
    done
fi

# A daemon as the unit runs it (without systemd here), under load while logrotate runs.
mkdir -p /run/twistrs-web-pkgtest "$work/www"
echo hello >"$work/www/index.html"
chmod -R a+rX "$work"
/usr/bin/twistrs --pidfile="$pidfile" -l "$log" -u twistrs -g twistrs \
    web --path "$work/www" --listen tcp:0:interface=127.0.0.1
port=$(sed -n 's/.* starting on \([0-9]*\).*/\1/p' "$log" | head -1)
[ -n "$port" ] || fail "no port in $log"
n=400
for i in $(seq 1 $n); do
    curl -s -o /dev/null "http://127.0.0.1:$port/?req=$i" || fail "request $i failed"
    if [ "$i" = 200 ]; then
        logrotate -f -s "$work/logrotate.state" /etc/logrotate.d/twistrs || fail "logrotate"
    fi
done
[ -e "$log.1" ] || fail "logrotate did not move $log"
# The last line is written once its response has left; wait for it (bounded).
for _ in $(seq 1 100); do
    grep -q "req=$n " "$log" 2>/dev/null && break
    sleep 0.05
done
got=$(cat "$log" "$log.1" | grep -c 'GET /?req=' || true)
[ "$got" = "$n" ] || fail "$got access lines of $n across the rotation"
grep -q 'req=1 ' "$log.1" || fail "the first lines are not in the moved file"
grep -q "req=$n " "$log" || fail "the last lines are not in the new file"
[ "$(stat -c %U "$log")" = twistrs ] || fail "the new $log is not the twistrs user's"
/usr/bin/twistrs stop --pidfile="$pidfile" >/dev/null

dpkg -r twistrs >/dev/null
[ ! -e /usr/bin/twistrs ] || fail "/usr/bin/twistrs left after remove"
[ -e /etc/logrotate.d/twistrs ] || fail "the conffile went at remove (it goes at purge)"
# An enabled instance's link (systemctl enable makes it; there is no systemd here to ask).
wants=/etc/systemd/system/multi-user.target.wants
made_wants=
[ -d "$wants" ] || { mkdir -p "$wants"; made_wants=1; }
ln -sf /usr/lib/systemd/system/twistrs-web@.service "$wants/twistrs-web@test-purge.service"
dpkg -P twistrs >/dev/null
[ ! -e /etc/logrotate.d/twistrs ] && [ ! -e /var/log/twistrs ] || fail "purge left files"
[ ! -L "$wants/twistrs-web@test-purge.service" ] || fail "purge left an instance's enablement link"
[ -z "$made_wants" ] || rmdir "$wants" 2>/dev/null || true
! dpkg -s twistrs >/dev/null 2>&1 || fail "still installed"
echo "contrib/debian/test.sh: ok ($n requests, $got lines across the rotation)"
