#!/usr/bin/env bash
# Property-based run of the HTTP API against its OpenAPI document (schemathesis, from PyPI): a real
# pageserver on a free port with JWT authentication on (http_auth_type NeonJWT, a key made here by openssl,
# every request with a pageserverapi token), one tenant in it, 60 s of generated requests. Fails on any 5xx or any response
# that does not match the document. The coverage phase is left out: schemathesis 4.32's own Hypothesis cache
# fails in it ("AST constructor recursion depth mismatch") before sending anything.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# schemathesis from the venv in the cache (scripts/lib.sh ensure_venv), installed there if missing.
ensure_venv schemathesis
bin="$CARGO_TARGET_DIR/debug/pageserver"
[ -x "$bin" ] || cargo build --locked --bin pageserver

workdir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
bundle_arg=()
if [ -n "${PAGESERVER_WALREDO_BUNDLE:-}" ]; then bundle_arg=(-c "pg_distrib_dir='$PAGESERVER_WALREDO_BUNDLE'"); fi
openssl genpkey -algorithm ed25519 -out "$workdir/auth.key"
openssl pkey -in "$workdir/auth.key" -pubout -out "$workdir/auth.pub"
token=$("$bin" token --private-key "$workdir/auth.key" --scope pageserverapi)
"$bin" -D "$workdir" -c "listen_http_addr='127.0.0.1:$port'" -c "listen_pg_addr='127.0.0.1:$pgport'" \
  -c "http_auth_type='NeonJWT'" -c "auth_validation_public_key_path='$workdir/auth.pub'" \
  "${bundle_arg[@]}" >"$workdir/pageserver.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$workdir"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/v1/status" >/dev/null && break; sleep 0.1; done
# Auth is on: without the token the API answers 401.
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/tenant")" = 401 ]
curl -sf -H "Authorization: Bearer $token" -X POST "http://127.0.0.1:$port/v1/tenant" \
  -d '{"new_tenant_id":"0123456789abcdef0123456789abcdef"}' >/dev/null

schemathesis run "http://127.0.0.1:$port/swagger.yml" -H "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance \
  --phases examples,fuzzing,stateful --max-time "${SCHEMATHESIS_SECONDS:-60}" --workers 2 --seed 42 \
  --warnings off >"$workdir/schemathesis.out" 2>&1 && status=0 || status=$?
# The failures (each with a curl line that reproduces it), then the summary; the token is masked.
sed -n '/FAILURES/,/SUMMARY/p' "$workdir/schemathesis.out" | sed "s/$token/<token>/g"
tail -25 "$workdir/schemathesis.out" | sed "s/$token/<token>/g"
# Every generated request carried the token: the one 401 is the check above, without it.
unauthorized=$(grep -c 'status=401' "$workdir/pageserver.log" || true)
if [ "$unauthorized" -ne 1 ]; then
  echo "schemathesis: $unauthorized requests answered 401 (1 expected): the token was not sent"; exit 1
fi
if grep -qF "$token" "$workdir/pageserver.log"; then
  echo "schemathesis: the token is in the pageserver's log"; exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "pageserver errors:"; grep -a "ERROR" "$workdir/pageserver.log" | tail -20 || true
fi
if grep -q "panicked" "$workdir/pageserver.log"; then
  echo "schemathesis: the pageserver panicked:"; grep -A5 panicked "$workdir/pageserver.log"; exit 1
fi
exit "$status"
