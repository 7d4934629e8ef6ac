#!/usr/bin/env bash
# Build the WAL redo bundle: upstream PostgreSQL 15.18 (the orig tarball of
# Debian's postgresql-15 source package) + patches/*.patch + src/, installed as
# <bundle>/v15/{bin,lib,share}.  See docs/walredo.md.
#
# Usage: walredo-bundle/build.sh [BUNDLE_DIR]
#
# Without BUNDLE_DIR the bundle goes to $CACHE/walredo-bundle/<key>, where
# <key> is a sha256 over the pinned tarball hash, patches/, src/ and this
# script, and $CACHE/walredo-bundle/current points at it.  $CACHE is
# $PAGESERVER_CACHE_DIR, else /var/cache/pageserver for root (the redo child
# runs as an unprivileged user and must be able to reach the binary; root's
# home is not reachable), else $HOME/.cache/pageserver.
#
# Idempotent: a bundle with a matching .complete stamp is reused as is.
# Progress goes to stderr; the LAST line of stdout is the bundle directory:
#   bundle=$(walredo-bundle/build.sh | tail -1)
set -euo pipefail

readonly PG_VERSION=15.18
readonly DEB_SRC_VERSION=15.18-0+deb12u1
readonly ORIG_TARBALL=postgresql-15_${PG_VERSION}.orig.tar.bz2
readonly ORIG_SHA256=11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4
readonly BUILD_DEPS=(build-essential bison flex zlib1g-dev liblz4-dev libzstd-dev python3
	pkg-config dpkg-dev bzip2)
readonly DEB_SRC_LIST=/etc/apt/sources.list.d/pageserver-debian-src.sources
# The installation prefix compiled into the binaries: a fixed path that exists nowhere, so that the bundle's
# bytes do not depend on where it is built or kept (PostgreSQL finds share/ and lib/ relative to its own
# binary; initdb and the redo child get LD_LIBRARY_PATH=<bundle>/v15/lib).
readonly INSTALL_PREFIX=/pageserver-walredo-bundle
# Directories of the PostgreSQL tree built and installed, in build order.
readonly BUILD_DIRS=(src/backend src/backend/utils/mb/conversion_procs
	src/backend/snowball src/interfaces/libpq src/bin/initdb src/pl/plpgsql)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jobs=${WALREDO_BUILD_JOBS:-2}

log() { printf 'walredo-bundle: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		die "root needed to run: $*"
	fi
}

cache_root() {
	if [[ -n ${PAGESERVER_CACHE_DIR:-} ]]; then
		printf '%s\n' "$PAGESERVER_CACHE_DIR"
	elif [[ $(id -u) -eq 0 ]]; then
		printf '%s\n' /var/cache/pageserver
	else
		printf '%s\n' "$HOME/.cache/pageserver"
	fi
}

# sha256 over everything that determines the bundle's contents.
cache_key() {
	(
		cd "$here"
		printf 'orig-tarball %s\n' "$ORIG_SHA256"
		find patches src -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
		sha256sum build.sh
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

ensure_build_deps() {
	local missing=() p
	for p in "${BUILD_DEPS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
			missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "installing build dependencies: ${missing[*]}"
		as_root apt-get update >&2
		as_root env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends "${missing[@]}" >&2
	fi
}

# Print deb-src twins of the Debian entries of a deb822 sources file.
deb_src_entries() {
	awk '
		BEGIN { RS = ""; ORS = "" }
		{
			n = split($0, line, "\n"); out = ""; debian = 0
			for (i = 1; i <= n; i++) {
				if (line[i] ~ /^#/) continue
				if (line[i] ~ /^Types:/) line[i] = "Types: deb-src"
				if (line[i] ~ /^URIs:/ && line[i] ~ /debian/) debian = 1
				out = out line[i] "\n"
			}
			if (debian) { if (printed++) print "\n"; print out }
		}' "$1"
}

ensure_deb_src() {
	[[ -e $DEB_SRC_LIST ]] && return 0
	local main=/etc/apt/sources.list.d/debian.sources entries
	[[ -f $main ]] || die "$main not found: enable deb-src for postgresql-15 by hand"
	entries=$(deb_src_entries "$main")
	[[ -n $entries ]] || die "no Debian entries in $main"
	log "enabling Debian source packages in $DEB_SRC_LIST"
	printf '%s\n' "$entries" | as_root tee "$DEB_SRC_LIST" >/dev/null
}

tarball_ok() {
	[[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$ORIG_SHA256" ]]
}

# Make sure $dl/$ORIG_TARBALL is there and verified; download it if not.
fetch_tarball() {
	local dl=$1
	tarball_ok "$dl/$ORIG_TARBALL" && return 0
	ensure_deb_src
	as_root apt-get update >&2
	mkdir -p "$dl"
	log "downloading postgresql-15=$DEB_SRC_VERSION source into $dl"
	(cd "$dl" && apt-get source --download-only "postgresql-15=$DEB_SRC_VERSION") >&2
	tarball_ok "$dl/$ORIG_TARBALL" ||
		die "$dl/$ORIG_TARBALL does not have sha256 $ORIG_SHA256"
}

# Run a build step with its output in the build log; show the tail on failure.
step() {
	local what=$1
	shift
	log "$what"
	if ! "$@" >>"$build_log" 2>&1; then
		tail -n 60 "$build_log" >&2
		die "$what failed (full log: $build_log)"
	fi
}

# Build PostgreSQL in $1 for prefix $2, stage the install under $3, and leave
# the test-hooks postgres binary at $4.
build_postgres() {
	local tree=$1 prefix=$2 stage=$3 testhooks=$4 p d
	step "extracting $ORIG_TARBALL" tar -xjf "$dl/$ORIG_TARBALL" -C "$(dirname "$tree")"
	for p in "$here"/patches/*.patch; do
		step "applying $(basename "$p")" patch -d "$tree" -p1 --forward --batch -i "$p"
	done
	step "copying src/" cp -R "$here/src/." "$tree/src/"
	step "configuring" bash -c "cd '$tree' && ./configure --prefix='$prefix' \
		--with-lz4 --with-zstd --without-icu --without-readline"
	# Generated headers first and serially: a parallel make in src/backend
	# alone races on creating them.
	step "make generated headers" make -C "$tree/src/backend" generated-headers
	for d in "${BUILD_DIRS[@]}"; do
		step "make $d" make -C "$tree/$d" -j"$jobs"
	done
	for d in "${BUILD_DIRS[@]}"; do
		step "install $d" make -C "$tree/$d" install DESTDIR="$stage"
	done
	# The same postgres with the 'X' test message: recompile one object, relink.
	rm -f "$tree/src/backend/walredo/walredo.o"
	step "make walredo.o with WALREDO_TEST_HOOKS" \
		make -C "$tree/src/backend/walredo" COPT=-DWALREDO_TEST_HOOKS walredo.o
	step "relink postgres-testhooks" make -C "$tree/src/backend" postgres
	cp "$tree/src/backend/postgres" "$testhooks"
}

# Copy what the bundle needs from the staged install at $1 into $2/v15.
assemble() {
	local staged=$1 out=$2
	mkdir -p "$out/v15/bin" "$out/v15/lib" "$out/v15/share"
	cp -a "$staged/bin/postgres" "$staged/bin/initdb" "$out/v15/bin/"
	cp -a "$staged/lib/." "$out/v15/lib/"
	cp -a "$staged/share/." "$out/v15/share/"
	find "$out/v15/lib" \( -name '*.a' -o -name pkgconfig -o -name pgxs \) -prune \
		-exec rm -rf {} +
	chmod -R a+rX "$out"
}

# The host libraries the bundle's programs load (glibc and its loader, zlib, lz4, zstd; what ldd resolves
# outside the bundle), copied into $1/v15/lib/system under their sonames, with the shell initdb runs its
# commands through (dash, as sh) and glibc's C.UTF-8 locale data (lib/system/locale, for LOCPATH); and the
# empty directory that the tmpfs root of the redo child and of initdb is mounted on ($1/sandbox-root). In
# the empty root these copies are all there is (docs/walredo.md, "The empty root").
add_system_libraries() {
	local out=$1 interp lib
	mkdir -p "$out/v15/lib/system/locale" "$out/sandbox-root"
	cp -L "$(readlink -f /bin/sh)" "$out/v15/lib/system/sh"
	cp -a /usr/lib/locale/C.utf8 "$out/v15/lib/system/locale/"
	interp=$(readelf -l "$out/v15/bin/postgres" |
		sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
	[[ -n $interp ]] || die "no ELF interpreter in $out/v15/bin/postgres"
	{
		printf '%s\n' "$interp"
		# ldd fails on what is not a dynamic ELF file (the locale data): only its answers count.
		find "$out/v15/bin" "$out/v15/lib" -type f -print0 |
			{ xargs -0 env LD_LIBRARY_PATH="$out/v15/lib" ldd 2>/dev/null || true; } |
			awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
	} | sort -u | while read -r lib; do
		case $lib in "$out"/*) continue ;; esac
		cp -L "$lib" "$out/v15/lib/system/${lib##*/}"
	done
	chmod -R a+rX "$out/v15/lib/system" "$out/sandbox-root"
}

# Check the assembled bundle: initdb works, --wal-redo starts and exits on EOF.
verify() {
	local out=$1 data
	data=$(mktemp -d "${TMPDIR:-/tmp}/walredo-verify.XXXXXX")
	[[ $(id -u) -eq 0 ]] && chown "$(unprivileged_user)" "$data"
	step "verifying initdb" run_unprivileged env -i LD_LIBRARY_PATH="$out/v15/lib" \
		"$out/v15/bin/initdb" -D "$data/pgdata" -U postgres -A trust -E UTF8 \
		--locale=C --no-sync
	rm -rf "$data"
	step "verifying postgres --wal-redo" bash -c "$(declare -f run_unprivileged unprivileged_user)
		run_unprivileged '$out/v15/bin/postgres' --wal-redo </dev/null"
	step "verifying postgres-testhooks --wal-redo" bash -c "$(declare -f run_unprivileged unprivileged_user)
		run_unprivileged '$out/v15/bin/postgres-testhooks' --wal-redo </dev/null"
}

# The compiler, linker and libraries the binaries are made with and linked against, and the packages of the
# shell and locale data the bundle copies: their Debian versions go
# into the manifest beside the build dependencies (a change of any may change the bytes).
readonly TOOLCHAIN_PACKAGES=(gcc-12 binutils libc6 libc6-dev libc-bin dash zlib1g liblz4-1 libzstd1)

# Write $1/manifest.json: the sha256 of every file of the bundle and the target of every symbolic link
# (what the pageserver checks at start), and what it was built from: the source package and tarball, the
# patches and src/ files by sha256, this script, and the versions of the build dependencies and toolchain.
write_manifest() {
	local out=$1
	python3 - "$out" "$here" "$PG_VERSION" "$DEB_SRC_VERSION" "$ORIG_TARBALL" "$ORIG_SHA256" \
		"${BUILD_DEPS[@]}" "${TOOLCHAIN_PACKAGES[@]}" <<'PY'
import hashlib, json, os, subprocess, sys

out, here, pg_version, deb_version, tarball, tarball_sha, *deps = sys.argv[1:]

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
inputs = {}
for sub in ("patches", "src"):
    inputs[sub], _ = tree(os.path.join(here, sub))
versions = {}
for dep in deps:
    q = subprocess.run(["dpkg-query", "-W", "-f=${Version}", dep], capture_output=True, text=True)
    versions[dep] = q.stdout
manifest = {
    "format_version": 1,
    "versions": {
        "15": {
            "postgresql": pg_version,
            "debian_source_package": "postgresql-15",
            "debian_source_version": deb_version,
            "orig_tarball": tarball,
            "orig_sha256": tarball_sha,
            "patches": inputs["patches"],
            "src": inputs["src"],
        }
    },
    "build": {
        "script_sha256": sha256(os.path.join(here, "build.sh")),
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

update_current_link() {
	local dir=$1 key=$2
	ln -sfn "$key" "$dir/current.tmp.$$"
	mv -Tf "$dir/current.tmp.$$" "$dir/current"
}

main() {
	(($# <= 1)) || die "usage: $0 [BUNDLE_DIR]"
	local cache key bundle default_dir=1
	cache=$(cache_root)
	key=$(cache_key)
	if (($# == 1)); then
		bundle=$(realpath -m "$1")
		default_dir=0
	else
		bundle=$cache/walredo-bundle/$key
	fi

	if [[ -x $bundle/v15/bin/postgres && -f $bundle/.complete &&
		$(cat "$bundle/.complete") == "$key" ]]; then
		((default_dir)) && update_current_link "$(dirname "$bundle")" "$key"
		log "up to date: $bundle"
		printf '%s\n' "$bundle"
		return 0
	fi

	ensure_build_deps
	dl=$cache/src-download
	fetch_tarball "$dl"

	local tmp out
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/walredo-build.XXXXXX")
	out=$bundle.tmp.$$
	# On failure keep the build dir (and its log) for inspection.
	# shellcheck disable=SC2064 # expand now: these are fixed paths
	trap "status=\$?; rm -rf '$out'; [ \$status -eq 0 ] && rm -rf '$tmp'" EXIT
	build_log=$tmp/build.log
	log "building $bundle (log: $build_log)"

	build_postgres "$tmp/postgresql-$PG_VERSION" "$INSTALL_PREFIX/v15" "$tmp/stage" "$tmp/postgres-testhooks"
	mkdir -p "$(dirname "$bundle")"
	rm -rf "$out"
	assemble "$tmp/stage$INSTALL_PREFIX/v15" "$out"
	cp "$tmp/postgres-testhooks" "$out/v15/bin/postgres-testhooks"
	add_system_libraries "$out"
	verify "$out"
	write_manifest "$out"
	chmod a+r "$out/manifest.json"
	printf '%s\n' "$key" >"$out/.complete"

	if [[ -e $bundle ]]; then
		# Stale or foreign contents (or a concurrent build won): replace.
		mv -T "$bundle" "$bundle.old.$$"
		rm -rf "$bundle.old.$$"
	fi
	mv -T "$out" "$bundle"
	((default_dir)) && update_current_link "$(dirname "$bundle")" "$key"
	log "built $bundle"
	printf '%s\n' "$bundle"
}

main "$@"
