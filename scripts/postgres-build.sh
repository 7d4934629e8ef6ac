#!/usr/bin/env bash
# Build a full, unpatched PostgreSQL of a major version from the same pinned orig tarball as the walredo
# bundle (walredo-bundle/postgres-source.sh), for tests that need a real primary of that version: server,
# psql, pgbench, pg_ctl, pg_basebackup, pg_waldump, pg_dumpall, pg_controldata, ... (no contrib, no docs).
#
# Usage: scripts/postgres-build.sh VERSION        (VERSION: 18; 15 works too)
#
# Installs into $CACHE/postgresql/<key>, where $CACHE is $PAGESERVER_CACHE_DIR, else /var/cache/pageserver
# for root, else $HOME/.cache/pageserver, and <key> is a sha256 over the tarball's sha256, this script and
# postgres-source.sh; $CACHE/postgresql/VERSION links to it. Configured with --with-lz4 --with-zstd
# --without-icu --without-readline and --prefix=<that directory>, built with make -j${POSTGRES_BUILD_JOBS:-2}.
# Everything is world-readable, so the programs run as the `postgres` user.
#
# Idempotent: an install with a matching .complete stamp is reused as is. Progress goes to stderr; the LAST
# line of stdout is the install directory (bin/, lib/, share/):
#   pgdir=$(scripts/postgres-build.sh 18 | tail -1)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_sh=$here/../walredo-bundle/postgres-source.sh
jobs=${POSTGRES_BUILD_JOBS:-2}
LOG_PREFIX=postgres-build
# shellcheck source=walredo-bundle/postgres-source.sh
. "$source_sh"
# What a test's primary needs, checked after the install.
readonly PROGRAMS=(postgres initdb pg_ctl psql pgbench pg_basebackup pg_waldump pg_dumpall pg_dump
	pg_controldata)

main() {
	(($# == 1)) || die "usage: $0 VERSION"
	local major=$1 cache key dir tmp out p
	pg_source "$major"
	cache=$(cache_root)
	key=$({
		printf 'orig-tarball %s\n' "$ORIG_SHA256"
		sha256sum <"$0"
		sha256sum <"$source_sh"
	} | sha256sum | cut -d' ' -f1)
	dir=$cache/postgresql/$key

	if [[ -x $dir/bin/postgres && -f $dir/.complete && $(cat "$dir/.complete") == "$key" ]]; then
		update_link "$cache/postgresql" "$major" "$key"
		log "up to date: $dir"
		printf '%s\n' "$dir"
		return 0
	fi

	ensure_build_deps
	dl=$cache/src-download
	fetch_tarball "$dl"

	tmp=$(mktemp -d "${TMPDIR:-/tmp}/postgres-build.XXXXXX")
	out=$dir.tmp.$$
	# On failure keep the build dir (and its log) for inspection.
	# shellcheck disable=SC2064 # expand now: these are fixed paths
	trap "status=\$?; rm -rf '$out'; [ \$status -eq 0 ] && rm -rf '$tmp'" EXIT
	build_log=$tmp/build.log
	log "building PostgreSQL $PG_VERSION into $dir (log: $build_log)"
	local start=$SECONDS tree=$tmp/postgresql-$PG_VERSION
	step "extracting $ORIG_TARBALL" tar -xjf "$dl/$ORIG_TARBALL" -C "$tmp"
	configure_postgres "$tree" "$dir"
	step "make -j$jobs" make -C "$tree" -j"$jobs"
	step "make install" make -C "$tree" install DESTDIR="$tmp/stage"

	mkdir -p "$cache/postgresql"
	rm -rf "$out"
	mv -T "$tmp/stage$dir" "$out"
	chmod -R a+rX "$out"
	chmod a+rx "$cache/postgresql"
	for p in "${PROGRAMS[@]}"; do
		[[ -x $out/bin/$p ]] || die "$p was not installed"
	done
	# Runnable by an unprivileged user.
	if [[ $(id -u) -eq 0 ]] && id postgres >/dev/null 2>&1; then
		step "checking that postgres can run it" runuser -u postgres -- "$out/bin/postgres" --version
	fi
	printf '%s\n' "$key" >"$out/.complete"
	if [[ -e $dir ]]; then
		mv -T "$dir" "$dir.old.$$"
		rm -rf "$dir.old.$$"
	fi
	mv -T "$out" "$dir"
	update_link "$cache/postgresql" "$major" "$key"
	log "built PostgreSQL $PG_VERSION in $((SECONDS - start)) s: $dir"
	printf '%s\n' "$dir"
}

main "$@"
