# Shared by the scripts in scripts/: where caches live and how missing tools get installed.
# Sourced, not run.

# Expensive builds (cargo's target dir, the walredo bundle) are cached outside the clone, so reruns are fast;
# nothing depends on the cache being there. Root uses /var/cache (readable by the unprivileged users that run
# PostgreSQL and the redo processes); others use ~/.cache.
if [ -z "${PAGESERVER_CACHE_DIR:-}" ]; then
  if [ "$(id -u)" = 0 ]; then
    PAGESERVER_CACHE_DIR=/var/cache/pageserver
  else
    PAGESERVER_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/pageserver"
  fi
fi
export PAGESERVER_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PAGESERVER_CACHE_DIR/target}"
mkdir -p "$PAGESERVER_CACHE_DIR" "$CARGO_TARGET_DIR"

log() { printf '== %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_apt_packages PKG...: installs the Debian packages that are not installed yet.
ensure_apt_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# ensure_rust COMPONENT...: a Rust toolchain new enough for edition 2024, plus the given rustup components.
ensure_rust() {
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "no Rust toolchain: install rustup (https://rustup.rs) and run this again"
    exit 1
  fi
  local component
  for component in "$@"; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
      log "adding rustup component $component"
      rustup component add "$component"
    fi
  done
}

# ensure_venv SPEC...: a Python virtual environment in the cache ($PAGESERVER_CACHE_DIR/venv) that holds the
# given PyPI requirements (pip specs, e.g. 'psycopg[binary]'), and its bin/ first on PATH, so that `python3` and
# the packages' commands (schemathesis) of every later step, the cargo tests' included, are the venv's.
# Debian 12's own python3 refuses `pip install` into the system (PEP 668: "externally-managed-environment"),
# hence the venv, made with Debian's `python3 -m venv` (package python3-venv; /usr/bin/python3 when it exists,
# not a python3 of pyenv or similar earlier on PATH).
# A venv is reused only if its stamp names the interpreter it was made with (same path, same version) and its
# python and pip run; anything else (a half-made venv, a Python upgrade) is removed and made again. Requirements
# are checked with pip itself, offline (`install --no-index --dry-run`: satisfied by what is installed, deps
# and extras included); only when that fails does pip install from PyPI.
ensure_venv() {
  local venv="$PAGESERVER_CACHE_DIR/venv"
  local base=python3
  if [ -x /usr/bin/python3 ]; then base=/usr/bin/python3; fi
  local key
  key="$base $("$base" -c 'import sys; print(sys.version.split()[0])')"
  if [ "$(cat "$venv/.stamp" 2>/dev/null)" != "$key" ] ||
    ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    log "creating the Python venv $venv ($key)"
    rm -rf "$venv"
    if ! "$base" -m venv "$venv"; then
      rm -rf "$venv"
      log "$base -m venv failed: install the Debian package python3-venv"
      return 1
    fi
    printf '%s\n' "$key" >"$venv/.stamp"
  fi
  if [ "$#" -gt 0 ] &&
    ! "$venv/bin/python" -m pip install --no-index --dry-run --quiet --disable-pip-version-check \
      "$@" >/dev/null 2>&1; then
    log "installing into $venv (PyPI): $*"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
  fi
  export VIRTUAL_ENV="$venv"
  case "$PATH" in
    "$venv/bin:"*) ;;
    *) PATH="$venv/bin:$PATH" ;;
  esac
  export PATH
  unset PYTHONHOME
  hash -r
}

# ensure_npm_package NAME@VERSION BIN: an npm package in $PAGESERVER_CACHE_DIR/npm (never global), with its
# commands' directory (node_modules/.bin) first on PATH; BIN is one of its commands, checked to run. Node.js and
# npm come from Debian when the machine has none.
ensure_npm_package() {
  local spec="$1" bin="$2"
  local dir="$PAGESERVER_CACHE_DIR/npm"
  if ! command -v npm >/dev/null 2>&1; then
    ensure_apt_packages nodejs npm
  fi
  mkdir -p "$dir"
  if [ "$(cat "$dir/.stamp-${spec%@*}" 2>/dev/null)" != "$spec" ] ||
    ! "$dir/node_modules/.bin/$bin" --version >/dev/null 2>&1; then
    log "installing into $dir (npm): $spec"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$spec" >/dev/null
    printf '%s\n' "$spec" >"$dir/.stamp-${spec%@*}"
  fi
  case "$PATH" in
    "$dir/node_modules/.bin:"*) ;;
    *) PATH="$dir/node_modules/.bin:$PATH" ;;
  esac
  export PATH
  hash -r
}

# ensure_cargo_tool CRATE@VERSION BIN: a cargo-installed tool in $PAGESERVER_CACHE_DIR/tools (never in
# ~/.cargo), its bin/ first on PATH; installed from crates.io when missing or of another version.
ensure_cargo_tool() {
  local spec=$1 bin=$2
  local root="$PAGESERVER_CACHE_DIR/tools"
  local version=${spec#*@}
  export PATH="$root/bin:$PATH"
  if [ -x "$root/bin/$bin" ] && grep -qF "$version" "$root/.stamp-$bin" 2>/dev/null; then
    return
  fi
  log "installing $spec into $root (crates.io)"
  cargo install --locked --root "$root" --version "$version" "${spec%@*}"
  echo "$version" >"$root/.stamp-$bin"
}
