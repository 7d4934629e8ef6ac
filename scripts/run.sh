#!/usr/bin/env bash
# Builds and runs a pageserver with the embedded default config, in ./.pageserver (or $PAGESERVER_WORKDIR).
# Extra arguments go to the pageserver, e.g. scripts/run.sh -c "listen_http_addr='127.0.0.1:9999'".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_rust
bundle=$(walredo-bundle/build.sh | tail -1)
cargo build --release --locked --bin pageserver >&2
exec "$CARGO_TARGET_DIR/release/pageserver" -D "${PAGESERVER_WORKDIR:-.pageserver}" \
  -c "pg_distrib_dir='$bundle'" "$@"
