#!/usr/bin/env bash
# Build the WAL redo bundle: upstream PostgreSQL 15.18 and 18.6 (the orig tarballs of Debian's postgresql-15
# and postgresql-18 source packages) + patches/<major>/*.patch + src/, installed as
# <bundle>/v15/{bin,lib,share} and <bundle>/v18/{bin,lib,share}.  See docs/walredo.md.
#
# Usage: walredo-bundle/build.sh [BUNDLE_DIR]
#
# Without BUNDLE_DIR the bundle goes to $CACHE/walredo-bundle/<key>, where
# <key> is a sha256 over the versions built, their pinned tarball hashes,
# patches/, src/, this script and postgres-source.sh, and
# $CACHE/walredo-bundle/current points at it.  $CACHE is
# $PAGESERVER_CACHE_DIR, else /var/cache/pageserver for root (the redo child
# runs as an unprivileged user and must be able to reach the binary; root's
# home is not reachable), else $HOME/.cache/pageserver.
#
# WALREDO_VERSIONS (default "15 18") restricts the major versions built, for
# development; such a bundle has its own key.
#
# Idempotent: a bundle with a matching .complete stamp is reused as is.
# Progress goes to stderr; the LAST line of stdout is the bundle directory:
#   bundle=$(walredo-bundle/build.sh | tail -1)
set -euo pipefail

# The installation prefix compiled into the binaries, plus /v<major>: a fixed path that exists nowhere, so
# that the bundle's bytes do not depend on where it is built or kept (PostgreSQL finds share/ and lib/
# relative to its own binary; initdb and the redo child get LD_LIBRARY_PATH=<bundle>/v<major>/lib).
readonly INSTALL_PREFIX=/pageserver-walredo-bundle
# Directories of the PostgreSQL tree built and installed, in build order.
readonly BUILD_DIRS=(src/backend src/backend/utils/mb/conversion_procs
	src/backend/snowball src/interfaces/libpq src/bin/initdb src/pl/plpgsql)
readonly ALL_VERSIONS="15 18"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=${WALREDO_BUILD_JOBS:-2}
LOG_PREFIX=walredo-bundle
# shellcheck source=walredo-bundle/postgres-source.sh
. "$here/postgres-source.sh"
read -r -a versions <<<"${WALREDO_VERSIONS:-$ALL_VERSIONS}"

# sha256 over everything that determines the bundle's contents.
cache_key() {
	(
		cd "$here"
		local v
		printf 'versions %s\n' "${versions[*]}"
		for v in "${versions[@]}"; do
			pg_source "$v"
			printf 'orig-tarball %s\n' "$ORIG_SHA256"
		done
		find patches src -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
		sha256sum build.sh postgres-source.sh
	) | sha256sum | cut -d' ' -f1
}

# The user the bundle's programs run as when we are root (they refuse root).
unprivileged_user() {
	if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

run_unprivileged() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u "$(unprivileged_user)" -- "$@"
	else
		"$@"
	fi
}

# Build PostgreSQL major version $1 (its pins set by pg_source) in $2 for
# prefix $3, stage the install under $4, and leave the test-hooks postgres
# binary at $5.
build_postgres() {
	local v=$1 tree=$2 prefix=$3 stage=$4 testhooks=$5 p d install_dirs
	step "extracting $ORIG_TARBALL" tar -xjf "$dl/$ORIG_TARBALL" -C "$(dirname "$tree")"
	for p in "$here/patches/$v"/*.patch; do
		step "applying $v/$(basename "$p")" patch -d "$tree" -p1 --forward --batch -i "$p"
	done
	step "copying src/" cp -R "$here/src/." "$tree/src/"
	configure_postgres "$tree" "$prefix"
	# Generated headers first and serially: a parallel make in src/backend
	# alone races on creating them.
	step "make generated headers" make -C "$tree/src/backend" generated-headers
	for d in "${BUILD_DIRS[@]}"; do
		step "make $d" make -C "$tree/$d" -j"$jobs"
	done
	install_dirs=("${BUILD_DIRS[@]}")
	# 18 installs postgres.bki and system_constraints.sql from here (15 from src/backend/catalog).
	((v >= 18)) && install_dirs+=(src/include/catalog)
	for d in "${install_dirs[@]}"; do
		step "install $d" make -C "$tree/$d" install DESTDIR="$stage"
	done
	# The same postgres with the 'X' test message: recompile one object, relink.
	rm -f "$tree/src/backend/walredo/walredo.o"
	step "make walredo.o with WALREDO_TEST_HOOKS" \
		make -C "$tree/src/backend/walredo" COPT=-DWALREDO_TEST_HOOKS walredo.o
	step "relink postgres-testhooks" make -C "$tree/src/backend" postgres
	cp "$tree/src/backend/postgres" "$testhooks"
}

# Copy what the bundle needs from the staged install at $1 into $2 (<bundle>/v<major>).
assemble() {
	local staged=$1 out=$2
	mkdir -p "$out/bin" "$out/lib" "$out/share"
	cp -a "$staged/bin/postgres" "$staged/bin/initdb" "$out/bin/"
	cp -a "$staged/lib/." "$out/lib/"
	cp -a "$staged/share/." "$out/share/"
	find "$out/lib" \( -name '*.a' -o -name pkgconfig -o -name pgxs \) -prune \
		-exec rm -rf {} +
	chmod -R a+rX "$out"
}

# The host libraries the programs of one version load (glibc and its loader, zlib, lz4, zstd; what ldd
# resolves outside the bundle), copied into $1/lib/system ($1 = <bundle>/v<major>; each version has its own
# copy) under their sonames, with the shell initdb runs its commands through (dash, as sh) and glibc's
# C.UTF-8 locale data (lib/system/locale, for LOCPATH). In the empty root these copies are all there is
# (docs/walredo.md, "The empty root").
add_system_libraries() {
	local out=$1 interp lib
	mkdir -p "$out/lib/system/locale"
	cp -L "$(readlink -f /bin/sh)" "$out/lib/system/sh"
	cp -a /usr/lib/locale/C.utf8 "$out/lib/system/locale/"
	interp=$(readelf -l "$out/bin/postgres" |
		sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
	[[ -n $interp ]] || die "no ELF interpreter in $out/bin/postgres"
	{
		printf '%s\n' "$interp"
		# ldd fails on what is not a dynamic ELF file (the locale data): only its answers count.
		find "$out/bin" "$out/lib" -type f -print0 |
			{ xargs -0 env LD_LIBRARY_PATH="$out/lib" ldd 2>/dev/null || true; } |
			awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
	} | sort -u | while read -r lib; do
		case $lib in "$out"/*) continue ;; esac
		cp -L "$lib" "$out/lib/system/${lib##*/}"
	done
	chmod -R a+rX "$out/lib/system"
}

# Check one version of the assembled bundle ($1 = <bundle>/v<major>): initdb works, --wal-redo starts and
# exits on EOF.
verify() {
	local out=$1 v=${1##*/} data b
	data=$(mktemp -d "${TMPDIR:-/tmp}/walredo-verify.XXXXXX")
	[[ $(id -u) -eq 0 ]] && chown "$(unprivileged_user)" "$data"
	step "verifying $v initdb" run_unprivileged env -i LD_LIBRARY_PATH="$out/lib" \
		"$out/bin/initdb" -D "$data/pgdata" -U postgres -A trust -E UTF8 \
		--locale=C --no-sync
	rm -rf "$data"
	for b in postgres postgres-testhooks; do
		step "verifying $v $b --wal-redo" bash -c "$(declare -f run_unprivileged unprivileged_user)
			run_unprivileged '$out/bin/$b' --wal-redo </dev/null"
	done
}

# The compiler, linker and libraries the binaries are made with and linked against, and the packages of the
# shell and locale data the bundle copies: their Debian versions go
# into the manifest beside the build dependencies (a change of any may change the bytes).
readonly TOOLCHAIN_PACKAGES=(gcc-12 binutils libc6 libc6-dev libc-bin dash zlib1g liblz4-1 libzstd1)

# Write $1/manifest.json: the sha256 of every file of the bundle and the target of every symbolic link
# (what the pageserver checks at start), and what it was built from: per major version the source package
# and tarball and the patches, the src/ files by sha256, this script and postgres-source.sh, and the
# versions of the build dependencies and toolchain.
write_manifest() {
	local out=$1 v sources=()
	for v in "${versions[@]}"; do
		pg_source "$v"
		sources+=("$v:$PG_VERSION:$DEB_SRC_PACKAGE:$DEB_SRC_VERSION:$ORIG_TARBALL:$ORIG_SHA256")
	done
	python3 - "$out" "$here" "${sources[*]}" \
		"${BUILD_DEPS[@]}" "${TOOLCHAIN_PACKAGES[@]}" <<'PY'
import hashlib, json, os, subprocess, sys

out, here, sources, *deps = sys.argv[1:]

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def tree(top, skip=()):
    files, links = {}, {}
    for root, dirs, names in os.walk(top):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, top)
            if rel in skip:
                continue
            if os.path.islink(path):
                links[rel] = os.readlink(path)
            else:
                files[rel] = sha256(path)
    return dict(sorted(files.items())), dict(sorted(links.items()))

files, links = tree(out, skip=("manifest.json", ".complete"))
src, _ = tree(os.path.join(here, "src"))
pg = {}
for source in sources.split():
    major, release, package, deb_version, tarball, tarball_sha = source.split(":")
    patches, _ = tree(os.path.join(here, "patches", major))
    pg[major] = {
        "postgresql": release,
        "debian_source_package": package,
        "debian_source_version": deb_version,
        "orig_tarball": tarball,
        "orig_sha256": tarball_sha,
        "patches": patches,
        "src": src,
    }
versions = {}
for dep in deps:
    q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", dep], capture_output=True, text=True)
    versions[dep] = q.stdout
manifest = {
    "format_version": 1,
    "versions": pg,
    "build": {
        "script_sha256": sha256(os.path.join(here, "build.sh")),
        "postgres_source_sha256": sha256(os.path.join(here, "postgres-source.sh")),
        "dependencies": versions,
    },
    "files": files,
    "symlinks": links,
}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
    f.write("\n")
PY
}

# True if $1 is a complete bundle of key $2 with every version asked for.
bundle_complete() {
	local v
	[[ -f $1/.complete && $(cat "$1/.complete") == "$2" ]] || return 1
	for v in "${versions[@]}"; do
		[[ -x $1/v$v/bin/postgres ]] || return 1
	done
}

# Build, assemble and check major version $1 into $2/v$1, in the temp dir $3.
build_version() {
	local v=$1 out=$2 tmp=$3 start=$SECONDS
	pg_source "$v"
	mkdir -p "$tmp/$v"
	fetch_tarball "$dl"
	build_postgres "$v" "$tmp/$v/postgresql-$PG_VERSION" "$INSTALL_PREFIX/v$v" "$tmp/$v/stage" \
		"$tmp/$v/postgres-testhooks"
	assemble "$tmp/$v/stage$INSTALL_PREFIX/v$v" "$out/v$v"
	cp "$tmp/$v/postgres-testhooks" "$out/v$v/bin/postgres-testhooks"
	add_system_libraries "$out/v$v"
	verify "$out/v$v"
	log "PostgreSQL $PG_VERSION built in $((SECONDS - start)) s"
}

main() {
	(($# <= 1)) || die "usage: $0 [BUNDLE_DIR]"
	local cache key bundle default_dir=1 v
	((${#versions[@]})) || die "WALREDO_VERSIONS is empty"
	for v in "${versions[@]}"; do
		[[ " $ALL_VERSIONS " == *" $v "* ]] || die "WALREDO_VERSIONS: $v is not one of $ALL_VERSIONS"
	done
	cache=$(cache_root)
	key=$(cache_key)
	if (($# == 1)); then
		bundle=$(realpath -m "$1")
		default_dir=0
	else
		bundle=$cache/walredo-bundle/$key
	fi

	if bundle_complete "$bundle" "$key"; then
		((default_dir)) && update_link "$(dirname "$bundle")" current "$key"
		log "up to date: $bundle"
		printf '%s\n' "$bundle"
		return 0
	fi

	ensure_build_deps
	dl=$cache/src-download

	local tmp out
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/walredo-build.XXXXXX")
	out=$bundle.tmp.$$
	# On failure keep the build dir (and its log) for inspection.
	# shellcheck disable=SC2064 # expand now: these are fixed paths
	trap "status=\$?; rm -rf '$out'; [ \$status -eq 0 ] && rm -rf '$tmp'" EXIT
	build_log=$tmp/build.log
	log "building $bundle (log: $build_log)"

	mkdir -p "$(dirname "$bundle")"
	rm -rf "$out"
	# The empty directory the tmpfs root of the redo child and of initdb is mounted on.
	mkdir -p "$out/sandbox-root"
	for v in "${versions[@]}"; do
		build_version "$v" "$out" "$tmp"
	done
	chmod -R a+rX "$out"
	write_manifest "$out"
	chmod a+r "$out/manifest.json"
	printf '%s\n' "$key" >"$out/.complete"

	if [[ -e $bundle ]]; then
		# Stale or foreign contents (or a concurrent build won): replace.
		mv -T "$bundle" "$bundle.old.$$"
		rm -rf "$bundle.old.$$"
	fi
	mv -T "$out" "$bundle"
	((default_dir)) && update_link "$(dirname "$bundle")" current "$key"
	log "built $bundle"
	printf '%s\n' "$bundle"
}

main "$@"
