#!/usr/bin/env bash
# A Debian 13 (trixie) root filesystem, the "other distribution" of tests/foreign_root.rs: made once with
# debootstrap (minbase) into $PAGESERVER_CACHE_DIR/debian13-root and reused; prints its path as the last line.
# The tests run the pageserver and its walredo bundle inside it (docs/walredo.md, "In another distribution").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

die() { log "error: $*"; exit 1; }
cache=$PAGESERVER_CACHE_DIR
root=$cache/debian13-root
mirror=${DEBIAN13_MIRROR:-http://deb.debian.org/debian}
if [[ -f $root/.complete ]]; then
	printf '%s\n' "$root"
	exit 0
fi
ensure_apt_packages debootstrap
# debian-archive-keyring (Debian 12) holds the trixie release key, so the download is verified.
tmp=$root.tmp.$$
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
log "debootstrap --variant=minbase trixie $tmp $mirror"
as_root debootstrap --variant=minbase trixie "$tmp" "$mirror" >"$cache/debian13-debootstrap.log" 2>&1 || {
	tail -20 "$cache/debian13-debootstrap.log" >&2
	die "debootstrap failed (log: $cache/debian13-debootstrap.log)"
}
grep -q '^VERSION_ID="13"' "$tmp/etc/os-release" || die "the root is not Debian 13: $(cat "$tmp/etc/os-release")"
# Apt's downloads are not needed to run anything.
rm -rf "$tmp/var/cache/apt/archives/"*.deb
date -u +%FT%TZ >"$tmp/.complete"
rm -rf "$root"
mv -T "$tmp" "$root"
trap - EXIT
printf '%s\n' "$root"
