//! `pg_dumpall` of a primary and of plain PostgreSQL booted on a fullbackup, and what must be equal between
//! them: the dump of the primary, with each sequence at the value a WAL-derived copy has.

use std::collections::BTreeMap;

use pageserver::pg::Lsn;

use super::pg::PgCluster;

/// What the primary looked like at a pause.
pub struct Snapshot {
    pub lsn: Lsn,
    pub dump: String,
    /// (database, "schema.sequence") -> the value a WAL-derived copy has (last_value + log_cnt * increment).
    pub sequences: BTreeMap<(String, String), i64>,
}

pub fn dumpall(pg: &PgCluster) -> String {
    let out = pg
        .client_command("pg_dumpall")
        .args(["--no-unlogged-table-data", "--restrict-key=pageservertest"])
        .output()
        .expect("run pg_dumpall");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a UTF-8 dump")
}

pub fn snapshot(pg: &PgCluster) -> Snapshot {
    let lsn: Lsn = pg
        .sql("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    let mut sequences = BTreeMap::new();
    let dbs = pg.sql("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1");
    for db in dbs.lines() {
        let seqs = pg.sql_in(
            db,
            "SELECT n.nspname || '.' || c.relname, s.seqincrement FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid \
             WHERE c.relkind = 'S'",
        );
        for line in seqs.lines() {
            let (name, inc) = line.split_once('|').unwrap();
            let row = pg.sql_in(db, &format!("SELECT last_value, log_cnt FROM {name}"));
            let (last, log_cnt) = row.split_once('|').unwrap();
            let wal_value = last.parse::<i64>().unwrap()
                + log_cnt.parse::<i64>().unwrap() * inc.parse::<i64>().unwrap();
            sequences.insert((db.to_string(), name.to_string()), wal_value);
        }
    }
    let dump = dumpall(pg);
    Snapshot {
        lsn,
        dump,
        sequences,
    }
}

/// The primary's dump with each sequence's setval at the value a WAL-derived copy has.
pub fn as_wal_derived(s: &Snapshot) -> String {
    let mut db = String::new();
    let mut out = String::with_capacity(s.dump.len());
    for line in s.dump.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("\\connect ") {
            db = rest
                .split_whitespace()
                .last()
                .unwrap_or("")
                .trim_matches('"')
                .to_string();
        }
        if let Some(args) = line.strip_prefix("SELECT pg_catalog.setval('") {
            let (name, rest) = args.split_once("', ").unwrap();
            let (_, is_called) = rest.split_once(", ").unwrap();
            if let Some(v) = s.sequences.get(&(db.clone(), name.to_string())) {
                out.push_str(&format!(
                    "SELECT pg_catalog.setval('{name}', {v}, {is_called}"
                ));
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

pub fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            return format!("line {}: primary {x:?}, fullbackup {y:?}", i + 1);
        }
    }
    format!(
        "lengths {} and {} lines",
        a.lines().count(),
        b.lines().count()
    )
}
