//! The WAL receiver and a source that says nothing, through the real binary and a real PostgreSQL 15
//! primary:
//! - an idle primary's WAL becomes durable within seconds (its `pg_stat_replication.flush_lsn` for our slot
//!   reaches the last commit), not at checkpoint_timeout;
//! - a healthy idle primary is not dropped, even with nothing to send for several `lagging_wal_timeout`s;
//! - a partitioned source (a proxy that stops forwarding without closing) is noticed within
//!   `lagging_wal_timeout` plus a margin, reported as lost, and reconnected; the WAL written meanwhile
//!   arrives and every page equals the primary's.

mod support;

use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::proxy::Proxy;

const T: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const TL: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

fn detail(ps: &Pageserver) -> Value {
    let (s, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    assert_eq!(s, 200, "{info}");
    info
}

fn insert(pg: &PgCluster, from: u32, to: u32) -> Lsn {
    pg.sql(&format!(
        "INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series({from}, {to}) i"
    ));
    pg.sql("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap()
}

/// The flush position the primary has for the walsender holding slot `ps`, if one holds it.
fn slot_flush_lsn(pg: &PgCluster) -> Option<Lsn> {
    let text = pg.sql(
        "SELECT s.flush_lsn FROM pg_stat_replication s \
         JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = 'ps'",
    );
    text.parse().ok()
}

#[test]
fn idle_primary_wal_is_flushed_within_seconds() {
    let pg = PgCluster::start(PgOptions::default());
    let ps = Pageserver::start(&[]);
    // checkpoint_timeout and checkpoint_distance far away: only the receiver's idle flush can make it durable.
    ps.follow(
        T,
        json!({"checkpoint_timeout": "1h"}),
        TL,
        &pg.connstr("postgres"),
        "ps",
    );
    pg.sql("CREATE TABLE t (i int, pad text)");
    let commit = insert(&pg, 1, 1);
    let started = Instant::now();
    loop {
        let flushed = slot_flush_lsn(&pg);
        if flushed.is_some_and(|f| f >= commit) {
            println!(
                "flush_lsn {} reached the commit {commit} after {:?}",
                flushed.unwrap(),
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "flush_lsn {flushed:?} has not reached the commit {commit} after 5 s: {}",
            detail(&ps)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let info = detail(&ps);
    let durable: Lsn = info["disk_consistent_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(durable >= commit, "{info}");
}

#[test]
fn a_partitioned_source_is_noticed_and_an_idle_one_is_kept() {
    // The primary ends a walsender that hears nothing for 4 s, so the stalled connection frees the slot.
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: vec!["wal_sender_timeout = '4s'".into()],
    });
    let proxy = Proxy::start(pg.port());
    let ps = Pageserver::start(&[]);
    let timeout = Duration::from_secs(3);
    let via_proxy = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres",
        proxy.port
    );
    ps.follow(
        T,
        json!({"lagging_wal_timeout": "3s"}),
        TL,
        &via_proxy,
        "ps",
    );
    pg.sql("CREATE TABLE t (i int, pad text)");
    ps.wait_ingested(T, TL, insert(&pg, 1, 1000));

    // Healthy and idle for more than twice the timeout: the receiver asks for replies and keeps the source.
    std::thread::sleep(timeout * 3);
    let info = detail(&ps);
    assert_eq!(info["walreceiver_status"], "streaming", "{info}");
    assert_eq!(info["walreceiver_connect_attempts"], 1, "{info}");
    assert_eq!(
        proxy.accepted(),
        2,
        "the follow's own connection and the receiver's"
    );

    // Partitioned: noticed within the timeout plus a margin, and reconnected.
    proxy.stall();
    let stalled = Instant::now();
    let lost = loop {
        let info = detail(&ps);
        let error = info["walreceiver_last_error"].as_str().unwrap_or("");
        if error.contains("WAL source lost") {
            break stalled.elapsed();
        }
        assert!(
            stalled.elapsed() < timeout + Duration::from_secs(4),
            "partition not noticed after {:?}: {info}",
            stalled.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("partition noticed after {lost:?} (lagging_wal_timeout {timeout:?})");
    // The silence started with the last message, up to about a second before the stall.
    assert!(
        lost >= timeout - Duration::from_millis(1500),
        "noticed after {lost:?}, well before the timeout"
    );
    assert!(ps.log_text().contains("WAL source lost"));

    // The WAL written during and after the partition arrives over a new connection.
    let target = insert(&pg, 1001, 3000);
    let info = ps.wait_ingested(T, TL, target);
    assert!(proxy.accepted() >= 3, "no new connection through the proxy");
    assert!(
        info["walreceiver_connect_attempts"].as_u64() >= Some(2),
        "{info}"
    );
    println!(
        "reconnected: attempts {}, status {}",
        info["walreceiver_connect_attempts"], info["walreceiver_status"]
    );

    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print("after the partition");
    assert!(cmp.mismatches.is_empty());
    assert!(cmp.equal.values().sum::<u64>() > 100, "{:?}", cmp.equal);
}
