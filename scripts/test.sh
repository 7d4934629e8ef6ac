#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian 12 machine: installs what is missing (Debian
# packages, Rust components), checks formatting and lints, runs every test, then checks the run command.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# postgresql-15: the real primary of the integration tests (server, psql, pgbench, pg_basebackup, pg_waldump).
ensure_apt_packages postgresql-15 ca-certificates curl
ensure_rust clippy fmt

log "walredo bundle (PostgreSQL 15.18 + our patch; cached by its inputs)"
PAGESERVER_WALREDO_BUNDLE=$(walredo-bundle/build.sh | tail -1)
export PAGESERVER_WALREDO_BUNDLE
log "walredo bundle smoke test"
python3 walredo-bundle/test/smoke.py --bundle "$PAGESERVER_WALREDO_BUNDLE"

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "psycopg (PyPI): the third-party libpq client of tests/page_service_e2e.rs"
python3 -c 'import psycopg' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'psycopg[binary]'
log "cargo test"
cargo test --all-targets --locked
log "the HTTP API against its OpenAPI document (schemathesis)"
scripts/schemathesis.sh
log "the run command"
scripts/check-run.sh
