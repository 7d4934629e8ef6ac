# Sourced, not run, by walredo-bundle/build.sh and scripts/postgres-build.sh: the pinned PostgreSQL
# sources (the upstream orig tarballs of Debian's source packages), how to get and check them, the build
# dependencies, the cache location and logging. The sourcing script sets LOG_PREFIX first.

# The apt packages a PostgreSQL build from the tarball needs (readline and ICU are configured out;
# python3 writes the bundle's manifest).
readonly BUILD_DEPS=(build-essential bison flex zlib1g-dev liblz4-dev libzstd-dev python3
	pkg-config dpkg-dev bzip2)

log() { printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2; }
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

# $PAGESERVER_CACHE_DIR, else /var/cache/pageserver for root (the unprivileged users that run what is built
# there must reach it; root's home is not reachable), else $HOME/.cache/pageserver.
cache_root() {
	if [[ -n ${PAGESERVER_CACHE_DIR:-} ]]; then
		printf '%s\n' "$PAGESERVER_CACHE_DIR"
	elif [[ $(id -u) -eq 0 ]]; then
		printf '%s\n' /var/cache/pageserver
	else
		printf '%s\n' "$HOME/.cache/pageserver"
	fi
}

# pg_source MAJOR: set the pins of that major version's source. PG_VERSION (the release), DEB_SRC_PACKAGE
# and DEB_SRC_VERSION (the Debian source package it comes from), DEB_SUITE (the Debian suite that serves
# it), DEB_SRC_LIST (the deb-src list file made for that suite when missing), ORIG_TARBALL and ORIG_SHA256
# (the value in Debian's .dsc).
pg_source() {
	case $1 in
	15)
		PG_VERSION=15.18
		DEB_SRC_VERSION=15.18-0+deb12u1
		DEB_SUITE=bookworm
		DEB_SRC_LIST=/etc/apt/sources.list.d/pageserver-debian-src.sources
		ORIG_SHA256=11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4
		;;
	18)
		PG_VERSION=18.6
		DEB_SRC_VERSION=18.6-3
		DEB_SUITE=sid
		DEB_SRC_LIST=/etc/apt/sources.list.d/pageserver-debian-src-newer.sources
		ORIG_SHA256=555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f
		;;
	*) die "no pinned source for PostgreSQL $1 (15 and 18 are; 17's is not served here)" ;;
	esac
	DEB_SRC_PACKAGE=postgresql-$1
	ORIG_TARBALL=${DEB_SRC_PACKAGE}_${PG_VERSION}.orig.tar.bz2
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

# Print deb-src twins of the Debian entries of a deb822 sources file. With a suite ($2), only the entries of
# the main archive (URIs ending in /debian), with that suite instead of theirs.
deb_src_entries() {
	awk -v suite="${2:-}" '
		BEGIN { RS = ""; ORS = "" }
		{
			n = split($0, line, "\n"); out = ""; debian = 0
			for (i = 1; i <= n; i++) {
				if (line[i] ~ /^#/) continue
				if (line[i] ~ /^Types:/) line[i] = "Types: deb-src"
				if (suite != "" && line[i] ~ /^Suites:/) line[i] = "Suites: " suite
				if (line[i] ~ /^URIs:/ && line[i] ~ (suite != "" ? "/debian/?$" : "debian")) debian = 1
				out = out line[i] "\n"
			}
			if (debian) { if (printed++) print "\n"; print out }
		}' "$1"
}

# Make sure apt knows the source packages of $DEB_SUITE: the Debian entries of the host's own suites
# (bookworm), or one entry for another suite (sid), written to $DEB_SRC_LIST, a file of its own.
ensure_deb_src() {
	[[ -e $DEB_SRC_LIST ]] && return 0
	local main=/etc/apt/sources.list.d/debian.sources entries suite=
	[[ -f $main ]] || die "$main not found: enable deb-src for $DEB_SRC_PACKAGE by hand"
	grep -q "^Suites:.*\b$DEB_SUITE\b" "$main" || suite=$DEB_SUITE
	entries=$(deb_src_entries "$main" "$suite")
	[[ -n $entries ]] || die "no Debian entries in $main"
	log "enabling Debian source packages ($DEB_SUITE) in $DEB_SRC_LIST"
	printf '%s\n' "$entries" | as_root tee "$DEB_SRC_LIST" >/dev/null
}

tarball_ok() {
	[[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$ORIG_SHA256" ]]
}

# Make sure $1/$ORIG_TARBALL is there and verified; download it if not.
fetch_tarball() {
	local dl=$1
	tarball_ok "$dl/$ORIG_TARBALL" && return 0
	ensure_deb_src
	as_root apt-get update >&2
	mkdir -p "$dl"
	log "downloading $DEB_SRC_PACKAGE=$DEB_SRC_VERSION source into $dl"
	(cd "$dl" && apt-get source --download-only "$DEB_SRC_PACKAGE=$DEB_SRC_VERSION") >&2
	tarball_ok "$dl/$ORIG_TARBALL" ||
		die "$dl/$ORIG_TARBALL does not have sha256 $ORIG_SHA256"
}

# Run a build step with its output in $build_log; show the tail on failure.
step() {
	local what=$1
	shift
	log "$what"
	if ! "$@" >>"$build_log" 2>&1; then
		tail -n 60 "$build_log" >&2
		die "$what failed (full log: $build_log)"
	fi
}

# configure_postgres TREE PREFIX: configure an extracted tree the way every build here does.
configure_postgres() {
	step "configuring" bash -c "cd '$1' && ./configure --prefix='$2' \
		--with-lz4 --with-zstd --without-icu --without-readline"
}

# Replace the symbolic link $1/$2 by one to $3 (relative), atomically.
update_link() {
	local dir=$1 name=$2 target=$3
	ln -sfn "$target" "$dir/$name.tmp.$$"
	mv -Tf "$dir/$name.tmp.$$" "$dir/$name"
}
