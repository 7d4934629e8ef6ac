//! Follow a running PostgreSQL 15 primary (and an 18 one) in one call through the real binary: the pageserver creates the
//! slot, takes a base backup over the replication protocol, imports it and streams; meanwhile pgbench -i -s 10
//! and then pgbench -T 60 -c 4 concurrently with the DDL mix (every index AM, TRUNCATE, CREATE/DROP DATABASE,
//! VACUUM, sequences, two-phase commit), aborts and multixact sessions; after a CHECKPOINT and a clean stop of
//! the primary, every block of every main, vm and init fork of every
//! database and every SLRU page equal the primary's files after masking.

mod support;

use std::time::Duration;

use pageserver::pg::Lsn;
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, aborts, ddl_mix, multixact_workload};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

#[test]
fn follow_a_primary_and_match_its_files() {
    follow_and_match(15);
}

#[test]
fn follow_a_postgresql_18_primary_and_match_its_files() {
    follow_and_match(18);
}

fn follow_and_match(major: u32) {
    let mut pg = PgCluster::start_version(
        major,
        PgOptions {
            extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
        },
    );
    let ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pageserver'"),
        "1"
    );

    // The workload: pgbench -i -s 10, then pgbench -T 60 -c 4 while the DDL mix, aborts and
    // multixact sessions run.
    pg.pgbench_init("postgres", 10);
    let wal_log_db = std::thread::scope(|scope| {
        let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "60"]));
        ddl_mix(&pg, "fol");
        aborts(&pg);
        multixact_workload(&pg, 3, 300);
        let out = bench.join().expect("pgbench thread");
        assert!(
            out.contains("number of transactions actually processed"),
            "{out}"
        );
        let oid: u32 = pg
            .sql("SELECT oid FROM pg_database WHERE datname = 'ddl_fol_db_wal'")
            .parse()
            .unwrap();
        pg.sql("CHECKPOINT");
        oid
    });
    let (last, info) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    assert_eq!(info["wal_source_connstr"], pg.connstr("postgres"));
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[wal_log_db]);
    cmp.print(&format!("PostgreSQL {major}: followed to {last}"));
    assert_eq!(info["pg_version"], major, "{info}");
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
}

/// kill -9 of the pageserver in the middle of pgbench, then a restart: the receiver resumes from
/// disk_consistent_lsn (the primary's slot never moved past what was durable here), and at the end every page
/// still equals the primary's.
#[test]
fn kill_9_mid_pgbench_resumes_from_disk_consistent_lsn() {
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    let mut ps = Pageserver::start(&["checkpoint_distance=4194304"]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 2);

    let (disk_before, slot_before) = std::thread::scope(|scope| {
        let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "20"]));
        std::thread::sleep(Duration::from_secs(8));
        let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
        let disk: Lsn = info["disk_consistent_lsn"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        ps.kill9();
        // What survived the kill: the metadata's disk_consistent_lsn (line 1 is its checksum, then JSON).
        let meta = std::fs::read_to_string(
            ps.workdir()
                .join(format!("tenants/{T}/timelines/{TL}/metadata")),
        )
        .unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(meta.split_once('\n').unwrap().1).unwrap();
        let durable: Lsn = meta["disk_consistent_lsn"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            durable >= disk,
            "metadata {durable} below what the API said ({disk})"
        );
        // What the primary kept for us: never past what was durable here when we died.
        let slot: Lsn = pg
            .sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver'")
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_secs(2));
        ps.spawn(&["checkpoint_distance=4194304"]);
        let out = bench.join().unwrap();
        assert!(
            out.contains("number of transactions actually processed"),
            "{out}"
        );
        (disk, slot)
    });
    assert!(
        slot_before <= disk_before.align(),
        "the slot moved to {slot_before}, past disk_consistent_lsn {disk_before}"
    );
    let log = ps.log_text();
    let resumed = log
        .lines()
        .rfind(|l| l.contains("streaming WAL"))
        .and_then(|l| l.split("start=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.parse::<Lsn>().unwrap())
        .expect("the receiver streams again after the restart");
    assert!(
        resumed >= disk_before && resumed <= disk_before.align().max(resumed),
        "resumed at {resumed}, durable was {disk_before}"
    );

    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print(&format!(
        "killed at disk_consistent_lsn {disk_before} (slot at {slot_before}), resumed streaming at {resumed}; \
         followed to {last}"
    ));
    assert!(cmp.mismatches.is_empty());
}
