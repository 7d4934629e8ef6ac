# Shared by scripts/run.sh and scripts/test.sh: where caches live and how missing tools get installed.
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
