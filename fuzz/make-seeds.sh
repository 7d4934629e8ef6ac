#!/usr/bin/env bash
# Makes the seed corpus fuzz/seeds/ from a real run (docs/testing.md, Fuzzing): a PostgreSQL 15 primary under
# pgbench and a DDL mix (wal_compression pglz, lz4 and zstd in turn, so that compressed full-page images are
# among the records), followed by a pageserver with remote storage on a local path (its index_part.json files
# and WAL archive manifests), then fuzz/src/bin/make_seeds.rs cuts the seeds out of the primary's WAL and the
# remote storage (every WAL segment of the primary, up to its end of WAL). Run as root on the test machine after scripts/test.sh has built the debug binary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
bin="$CARGO_TARGET_DIR/debug/pageserver"
pgbin=/usr/lib/postgresql/15/bin
work=$(mktemp -d /tmp/fuzz-seeds.XXXXXX)
chown postgres "$work"
pg() { runuser -u postgres -- "$@"; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
wal_level = replica
fsync = off
CONF
pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
psql() { "$pgbin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
ps_http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ps_pg=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" -D "$work/ps" -c "listen_http_addr='127.0.0.1:$ps_http'" -c "listen_pg_addr='127.0.0.1:$ps_pg'" \
  -c "remote_storage={local_path='$work/remote'}" -c "pg_distrib_dir='${PAGESERVER_WALREDO_BUNDLE:-/var/cache/pageserver/walredo-bundle/current}'" \
  >"$work/ps.log" 2>&1 &
pspid=$!
trap 'kill $pspid 2>/dev/null || true; pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ps_http/v1/status" >/dev/null && break; sleep 0.1; done
t=5eed5eed5eed5eed5eed5eed5eed5eed
curl -sf -X POST "http://127.0.0.1:$ps_http/v1/tenant" -d "{\"new_tenant_id\":\"$t\"}" >/dev/null
curl -sf -X POST "http://127.0.0.1:$ps_http/v1/tenant/$t/timeline" -d "{\"new_timeline_id\":\"$t\",
  \"wal_source\":{\"connstr\":\"host=127.0.0.1 port=$port user=postgres\",\"slot_name\":\"seeds\"}}" >/dev/null
"$pgbin/pgbench" -q -i -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
for c in pglz lz4 zstd; do
  psql -c "ALTER SYSTEM SET wal_compression = $c" -c "SELECT pg_reload_conf()" -c CHECKPOINT >/dev/null
  "$pgbin/pgbench" -t 200 -c 2 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
done
psql <<'SQL' >/dev/null
CREATE TABLE ddl (id int PRIMARY KEY, t text, v tsvector, p point, r int4range);
INSERT INTO ddl SELECT g, md5(g::text), to_tsvector(md5(g::text)), point(g, g), int4range(g, g + 10)
  FROM generate_series(1, 5000) g;
CREATE INDEX ON ddl USING hash (t); CREATE INDEX ON ddl USING gin (v); CREATE INDEX ON ddl USING gist (p);
CREATE INDEX ON ddl USING spgist (r); CREATE INDEX ON ddl USING brin (id);
CREATE SEQUENCE s; SELECT nextval('s') FROM generate_series(1, 100);
UPDATE ddl SET t = t || 'x' WHERE id % 3 = 0; DELETE FROM ddl WHERE id % 5 = 0; VACUUM ddl;
TRUNCATE pgbench_history; CREATE DATABASE copy_db; DROP TABLE pgbench_branches;
SQL
lsn=$(psql -Atc "SELECT pg_current_wal_lsn()")
for _ in $(seq 600); do
  last=$(curl -sf "http://127.0.0.1:$ps_http/v1/tenant/$t/timeline/$t" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_record_lsn"])')
  python3 -c "import sys; a,b=[int(x.split('/')[0],16)<<32|int(x.split('/')[1],16) for x in sys.argv[1:]]; sys.exit(a<b)" "$last" "$lsn" && break
  sleep 0.1
done
curl -sf -X PUT "http://127.0.0.1:$ps_http/v1/tenant/$t/timeline/$t/checkpoint" >/dev/null
kill -TERM $pspid; wait $pspid || true
segments=$(ls "$work/data/pg_wal" | grep -E '^[0-9A-F]{24}$' | sort | sed "s|^|--wal $work/data/pg_wal/|")
cd fuzz
rm -rf seeds
cargo run --features seeds --bin make_seeds --target-dir "$PAGESERVER_CACHE_DIR/fuzz-seeds-target" -- \
  $segments --remote "$work/remote" --out seeds
du -sh seeds; ls seeds | while read -r d; do echo "$d: $(ls "seeds/$d" | wc -l)"; done
