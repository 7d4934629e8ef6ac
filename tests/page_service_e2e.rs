//! The page service end to end on a followed PostgreSQL 15 primary running the ingest workload (pgbench -i -s
//! 10, then pgbench -c 4 with the DDL mix, aborts and multixact sessions), paused three times:
//! - at each pause the test records the primary's `pg_dumpall` and LSN; afterwards plain PostgreSQL 15 boots
//!   on a `fullbackup` taken at each of those LSNs and at the final one, and its `pg_dumpall` equals the
//!   primary's (sequences compared by FACTS.md §8's rule: a WAL-derived sequence is `log_cnt` increments
//!   ahead; unlogged tables' data is not in WAL and left out of both dumps);
//! - at the final LSN every block of every main, vm and init fork and every SLRU page, read through
//!   pagestream_v3, equals the primary's files after masking; Nblocks equals the files' sizes, Exists holds for
//!   every relation fork file, DbSize is the sum of the database's forks, GetSlruSegment returns every segment.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use pageserver::page_service::client::PageServiceClient;
use pageserver::page_service::pagestream::{RequestBody, ResponseBody, Version};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::walredo::SlruKind;
use serde_json::json;
use support::compare::{
    Comparison, PagestreamTimeline, compare_relations, compare_slru, wait_past,
};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, aborts, ddl_mix, multixact_workload};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// What the primary looked like at a pause.
struct Snapshot {
    lsn: Lsn,
    dump: String,
    /// (database, "schema.sequence") -> the value a WAL-derived copy has (last_value + log_cnt * increment).
    sequences: BTreeMap<(String, String), i64>,
}

fn dumpall(pg: &PgCluster) -> String {
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

fn snapshot(pg: &PgCluster) -> Snapshot {
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
fn as_wal_derived(s: &Snapshot) -> String {
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

fn first_difference(a: &str, b: &str) -> String {
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

#[test]
fn pagestream_pages_and_fullbackups_equal_the_primary() {
    let started = Instant::now();
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    let ps = Pageserver::start(&[]);
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T}).to_string()),
    );
    let follow = json!({"new_timeline_id": TL, "wal_source": {"connstr": pg.connstr("postgres"), "slot_name": "ps"}});
    let (s, info) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&follow.to_string()),
    );
    assert_eq!(s, 201, "{info}");

    pg.pgbench_init("postgres", 10);
    let mut snapshots = Vec::new();
    let mut wal_log_dbs = Vec::new();
    for phase in 0..4 {
        std::thread::scope(|scope| {
            let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "10"]));
            ddl_mix(&pg, &format!("e2e{phase}"));
            aborts(&pg);
            multixact_workload(&pg, 3, 100);
            bench.join().expect("pgbench thread");
        });
        wal_log_dbs.push(
            pg.sql(&format!(
                "SELECT oid FROM pg_database WHERE datname = 'ddl_e2e{phase}_db_wal'"
            ))
            .parse::<u32>()
            .unwrap(),
        );
        if phase < 3 {
            // Paused: nothing runs; the dump is the state at this LSN.
            snapshots.push(snapshot(&pg));
        }
    }
    pg.sql("CHECKPOINT");
    let mut last_snapshot = snapshot(&pg);
    pg.stop();
    let shutdown_checkpoint: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    let (last, _) = wait_past(&ps, T, TL, shutdown_checkpoint);
    last_snapshot.lsn = last;
    snapshots.push(last_snapshot);
    println!(
        "workload done in {:.0} s; final LSN {last}",
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Every page through pagestream at the final LSN.
    let session = rt.block_on(async {
        PageServiceClient::connect(&ps.pg_addr)
            .await
            .unwrap()
            .pagestream(Version::V3, T, TL)
            .await
            .map_err(|(e, _)| e)
            .unwrap()
    });
    let tl = PagestreamTimeline::new(session);
    let mut cmp = Comparison::default();
    rt.block_on(compare_relations(
        &tl,
        last,
        pg.data_dir(),
        &wal_log_dbs,
        &mut cmp,
    ));
    rt.block_on(compare_slru(&tl, last, pg.data_dir(), &mut cmp));
    println!(
        "pagestream at {last}: relations {}, equal {:?}, tolerated {:?}, mismatches {}",
        cmp.relations,
        cmp.equal,
        cmp.tolerated,
        cmp.mismatches.len()
    );
    for m in cmp.mismatches.iter().take(15) {
        println!("  {m}");
    }
    assert!(cmp.mismatches.is_empty());
    assert!(cmp.equal["main"] > 10_000);

    // Exists for every relation fork file, DbSize the sum of each database's forks, every SLRU segment whole.
    let (exists, db_sizes, segments) = rt.block_on(async {
        let (mut exists, mut db_sizes, mut segments) = (0u64, 0u64, 0u64);
        let base = pg.data_dir().join("base");
        for entry in std::fs::read_dir(&base).unwrap() {
            let entry = entry.unwrap();
            let Ok(db) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let mut forks = std::collections::BTreeSet::new();
            for f in std::fs::read_dir(entry.path()).unwrap() {
                let name = f.unwrap().file_name().to_string_lossy().into_owned();
                let base_name = name.split('.').next().unwrap();
                let (rel, fork) = match base_name.rsplit_once('_') {
                    Some((r, "fsm")) => (r, 1u8),
                    Some((r, "vm")) => (r, 2),
                    Some((r, "init")) => (r, 3),
                    Some(_) => continue,
                    None => (base_name, 0),
                };
                if let Ok(rel) = rel.parse::<u32>() {
                    forks.insert((rel, fork));
                }
            }
            let mut blocks = 0u64;
            for &(rel, fork) in &forks {
                let rel = RelFileNode { spc: 1663, db, rel };
                let unlogged = forks.contains(&(rel.rel, 3));
                if fork != 1 && !(fork == 0 && unlogged) {
                    let r = tl.ask(RequestBody::Exists { rel, fork }, last).await;
                    assert_eq!(r, Ok(ResponseBody::Exists(true)), "{rel:?} fork {fork}");
                    exists += 1;
                }
                if let Ok(ResponseBody::Nblocks(n)) =
                    tl.ask(RequestBody::Nblocks { rel, fork }, last).await
                {
                    blocks += n as u64;
                }
            }
            match tl.ask(RequestBody::DbSize { db }, last).await {
                Ok(ResponseBody::DbSize(n)) => assert_eq!(n as u64, blocks * 8192, "database {db}"),
                other => panic!("DbSize of {db}: {other:?}"),
            }
            db_sizes += 1;
        }
        for (kind, dir) in [
            (SlruKind::Clog, "pg_xact"),
            (SlruKind::MultiXactMembers, "pg_multixact/members"),
            (SlruKind::MultiXactOffsets, "pg_multixact/offsets"),
        ] {
            for entry in std::fs::read_dir(pg.data_dir().join(dir)).unwrap() {
                let entry = entry.unwrap();
                let Ok(segno) = u32::from_str_radix(&entry.file_name().to_string_lossy(), 16)
                else {
                    continue;
                };
                let file = std::fs::read(entry.path()).unwrap();
                let ours = tl.segment(kind, segno, last).await.expect("segment served");
                assert_eq!(&ours[..], &file[..], "{dir}/{segno:04X}");
                segments += 1;
            }
        }
        (exists, db_sizes, segments)
    });
    println!(
        "Exists true for {exists} forks; DbSize of {db_sizes} databases; {segments} SLRU segments equal"
    );

    // Plain PostgreSQL on a fullbackup at each pause and at the end: the same pg_dumpall.
    for (i, snap) in snapshots.iter().enumerate() {
        let tar = rt.block_on(async {
            let mut c = PageServiceClient::connect(&ps.pg_addr).await.unwrap();
            c.backup(&format!("fullbackup {T} {TL} {}", snap.lsn))
                .await
                .unwrap()
        });
        let mut restored = PgCluster::start_from_tar(&tar);
        let ours = dumpall(&restored);
        let expected = as_wal_derived(snap);
        assert!(
            ours == expected,
            "fullbackup {i} at {}: pg_dumpall differs from the primary's: {}",
            snap.lsn,
            first_difference(&expected, &ours)
        );
        let ahead = snap
            .dump
            .lines()
            .zip(expected.lines())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "fullbackup {i} at {}: {} MB tar, pg_dumpall of {} lines equal ({} sequences, {ahead} of them \
             log_cnt ahead of the primary's buffer)",
            snap.lsn,
            tar.len() >> 20,
            ours.lines().count(),
            snap.sequences.len()
        );
        restored.stop();
    }
}
