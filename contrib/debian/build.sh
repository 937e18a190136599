#!/usr/bin/env bash
# Builds target/debian/twistrs_VERSION_ARCH.deb with dpkg-deb from a staged tree.
# dpkg-deb rather than cargo-deb: it is Debian's own tool, on every Debian machine, while
# cargo-deb is one more program to build from crates.io (minutes on 2 cores) for what is a
# list of files to copy; the tree below is the whole package, readable in one place.
# Usage: contrib/debian/build.sh [BINARY]  (default: cargo build --release, then its binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release --locked -p twistrs
    bin=target/release/twistrs
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=target/debian/stage
rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/share/man/man1" \
    "$stage/usr/lib/systemd/system" "$stage/etc/logrotate.d" "$stage/usr/share/doc/twistrs/examples" \
    "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" \
    "$stage/usr/share/fish/vendor_completions.d"
install -m 0755 "$bin" "$stage/usr/bin/twistrs"
strip --strip-unneeded "$stage/usr/bin/twistrs" 2>/dev/null || true
for page in man/*.1; do
    gzip -9n <"$page" >"$stage/usr/share/man/man1/$(basename "$page").gz"
done
install -m 0644 completions/twistrs.bash "$stage/usr/share/bash-completion/completions/twistrs"
install -m 0644 completions/_twistrs "$stage/usr/share/zsh/vendor-completions/_twistrs"
install -m 0644 completions/twistrs.fish "$stage/usr/share/fish/vendor_completions.d/twistrs.fish"
# One template unit per service plugin: twistrs-web@.service reads /etc/default/twistrs-web-%i.
# (The wire services other than echo run the same way; echo's unit shows the shape.)
for plugin in web mail procmon dns inetd portforward socks echo; do
    sed "s/PLUGIN/$plugin/g" contrib/debian/unit.in >"$stage/usr/lib/systemd/system/twistrs-$plugin@.service"
done
install -m 0644 contrib/debian/logrotate "$stage/etc/logrotate.d/twistrs"
install -m 0644 contrib/debian/default.example "$stage/usr/share/doc/twistrs/examples/twistrs-web-www"
# Debian's machine-readable copyright file (DEP-5), with the licence's whole text.
{
    printf 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n'
    printf 'Upstream-Name: twistrs\n'
    printf 'Comment: The binary links Rust crates under their own licences (MIT, Apache-2.0, ISC,\n'
    printf ' BSD-3-Clause, Zlib, Unicode-3.0); Cargo.lock lists them with their versions.\n\n'
    printf 'Files: *\n'
    sed -n 's/^Copyright (c) /Copyright: /p' LICENSE
    printf 'License: MIT\n'
    sed -n '/^Permission/,$p' LICENSE | sed 's/^$/./; s/^/ /'
} >"$stage/usr/share/doc/twistrs/copyright"
# A native package's changelog (Debian policy 12.7), dated by the commit it is built from so
# the same commit builds the same file.
when=$(git log -1 --format=%aD 2>/dev/null || date -R)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
printf 'twistrs (%s) unstable; urgency=medium\n\n  * Built from commit %s.\n\n -- twistrs developers <twistrs@example.invalid>  %s\n' \
    "$version" "$commit" "$when" | gzip -9n >"$stage/usr/share/doc/twistrs/changelog.gz"
install -m 0755 contrib/debian/postinst contrib/debian/prerm contrib/debian/postrm "$stage/DEBIAN/"
echo /etc/logrotate.d/twistrs >"$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<CONTROL
Package: twistrs
Version: $version
Architecture: $arch
Maintainer: twistrs developers <twistrs@example.invalid>
Installed-Size: $size
Depends: libc6 (>= 2.34), passwd
Recommends: logrotate
Section: net
Priority: optional
Homepage: https://example.invalid/twistrs
Description: Twisted's twistd, rebuilt in Rust
 One native binary running twistd's service plugins (web, mail, procmon,
 dns, inetd, portforward, socks and the RFC wire services) with twistd's
 command line, plus stop, status and restart.
CONTROL
out=target/debian/twistrs_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "$out"
