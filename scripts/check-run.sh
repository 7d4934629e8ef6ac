#!/usr/bin/env bash
# Checks the README's run command end to end: scripts/run.sh starts a pageserver that answers
# GET /v1/status, and SIGTERM stops it with exit status 0 within 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."

workdir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PAGESERVER_WORKDIR="$workdir" scripts/run.sh -c "listen_http_addr='127.0.0.1:$port'" \
  -c "listen_pg_addr='127.0.0.1:$pgport'" >"$workdir/out.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$workdir"' EXIT

status=""
for _ in $(seq 1 1200); do   # the release build may take minutes on a cold cache
  if status=$(curl -sf "http://127.0.0.1:$port/v1/status"); then break; fi
  if ! kill -0 $pid 2>/dev/null; then cat "$workdir/out.log"; echo "check-run: pageserver exited early"; exit 1; fi
  sleep 0.5
done
# {"id":1,"pg_addr":"127.0.0.1:<pgport>"}: the default node id, and the page service where it was told to be.
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); sys.exit(d != {"id": 1, "pg_addr": sys.argv[2]})' \
  "$status" "127.0.0.1:$pgport" ||
  { cat "$workdir/out.log"; echo "check-run: /v1/status said '$status'"; exit 1; }

start=$(date +%s%N)
kill -TERM $pid
rc=0
wait $pid || rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
if [ $rc -ne 0 ] || [ $elapsed_ms -gt 5000 ]; then
  cat "$workdir/out.log"
  echo "check-run: exit status $rc after SIGTERM, in $elapsed_ms ms"
  exit 1
fi
echo "check-run: GET /v1/status -> $status; SIGTERM -> exit 0 in ${elapsed_ms} ms"
