//! The WAL receiver against a real PostgreSQL 15 primary, through the real binary:
//! - bad WAL source input (a wrong connstr, at creation and on a running timeline; a primary that crashes and
//!   comes back; a slot another client holds) gives a clear state and log line, is retried with backoff, and
//!   loses nothing: at the end every page equals the primary's;
//! - get_lsn_by_timestamp answers from the commit records' times, on the timeline, on a branch and after a
//!   restart.

mod support;

use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

fn lsn(v: &Value) -> Lsn {
    v.as_str()
        .unwrap_or_else(|| panic!("not an LSN: {v}"))
        .parse()
        .unwrap()
}

fn detail(ps: &Pageserver, tl: &str) -> Value {
    let (s, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{tl}"), None);
    assert_eq!(s, 200, "{info}");
    info
}

/// Polls timeline detail until `done` holds (at most `secs`); returns the detail.
fn wait_for(
    ps: &Pageserver,
    tl: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let info = detail(ps, tl);
        if done(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {info}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_ingested(ps: &Pageserver, tl: &str, target: Lsn) -> Value {
    ps.wait_ingested(T, tl, target)
}

fn set_source(ps: &Pageserver, source: Value) {
    ps.set_wal_source(T, TL, source);
}

fn insert_rows(pg: &PgCluster, from: u32, to: u32) -> Lsn {
    pg.sql(&format!(
        "INSERT INTO t SELECT i, repeat('x', 200) FROM generate_series({from}, {to}) i"
    ));
    pg.sql("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap()
}

#[test]
fn bad_wal_sources_are_retried_and_nothing_is_lost() {
    let mut pg = PgCluster::start(PgOptions::default());
    let ps = Pageserver::start(&[]);

    // A wrong connstr at creation: 400 naming the failure, and no timeline.
    ps.json(
        "POST",
        "/v1/tenant",
        Some(&json!({"new_tenant_id": T}).to_string()),
    );
    let nowhere = "host=127.0.0.1 port=1 user=postgres dbname=postgres";
    let other = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    let bad =
        json!({"new_timeline_id": other, "wal_source": {"connstr": nowhere, "slot_name": "ps"}});
    let (s, body) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&bad.to_string()),
    );
    assert_eq!(s, 400, "{body}");
    let msg = body["msg"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("refused"), "{msg}");
    let (s, _) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{other}"), None);
    assert_eq!(s, 404);
    let follow = json!({"new_timeline_id": TL, "wal_source": {"connstr": pg.connstr("postgres"), "slot_name": "ps"}});
    let (s, info) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&follow.to_string()),
    );
    assert_eq!(s, 201, "{info}");
    pg.sql("CREATE TABLE t (i int, pad text)");
    let mut next = 1;
    let mut step = |pg: &PgCluster| {
        let lsn = insert_rows(pg, next, next + 999);
        next += 1000;
        lsn
    };
    wait_ingested(&ps, TL, step(&pg));

    // A wrong connstr on a running timeline: retried with backoff, shown in the state and the log; the WAL
    // written meanwhile arrives once the source is right again.
    set_source(&ps, json!({"connstr": nowhere, "slot_name": "ps"}));
    let info = wait_for(&ps, TL, 30, "a failed attempt", |i| {
        i["walreceiver_status"] == "retrying"
            && i["walreceiver_connect_attempts"].as_u64() >= Some(2)
    });
    let error = info["walreceiver_last_error"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        error.starts_with("connect:") && error.contains("refused"),
        "{info}"
    );
    assert!(
        info["walreceiver_next_attempt_ts"].as_u64().is_some(),
        "{info}"
    );
    let written_meanwhile = step(&pg);
    set_source(
        &ps,
        json!({"connstr": pg.connstr("postgres"), "slot_name": "ps"}),
    );
    wait_ingested(&ps, TL, written_meanwhile);

    // The primary crashes (immediate stop) while we stream, and comes back.
    let before_crash = step(&pg);
    wait_ingested(&ps, TL, before_crash);
    pg.crash();
    let info = wait_for(&ps, TL, 60, "the receiver to notice the crash", |i| {
        i["walreceiver_status"] == "retrying"
    });
    assert!(info["walreceiver_last_error"].as_str().is_some(), "{info}");
    let attempts = |i: &Value| i["walreceiver_connect_attempts"].as_u64().unwrap();
    let first = attempts(&info);
    std::thread::sleep(Duration::from_secs(6));
    let info = detail(&ps, TL);
    let tried = attempts(&info) - first;
    // Backoff 1 s, 2 s, 4 s: at most three more attempts in 6 s, and at least one.
    assert!((1..=3).contains(&tried), "{tried} attempts in 6 s: {info}");
    assert!(lsn(&info["last_record_lsn"]) >= before_crash, "{info}");
    pg.restart();
    wait_for(&ps, TL, 60, "streaming again", |i| {
        i["walreceiver_status"] == "streaming"
    });
    wait_ingested(&ps, TL, step(&pg));

    // A slot another client holds: START_REPLICATION fails with PostgreSQL's message until it lets go.
    set_source(&ps, Value::Null);
    let slot_active = |pg: &PgCluster| {
        pg.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'ps'") == "t"
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while slot_active(&pg) {
        assert!(
            Instant::now() < deadline,
            "slot still held by the pageserver"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let receivewal_dir = tempfile::tempdir().unwrap();
    let mut other_client = pg
        .client_command("pg_receivewal")
        .arg("-D")
        .arg(receivewal_dir.path())
        .args(["--slot=ps", "--no-loop"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn pg_receivewal");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slot_active(&pg) {
        assert!(
            Instant::now() < deadline,
            "pg_receivewal did not take the slot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    set_source(
        &ps,
        json!({"connstr": pg.connstr("postgres"), "slot_name": "ps"}),
    );
    let info = wait_for(&ps, TL, 30, "the slot-in-use error", |i| {
        i["walreceiver_last_error"]
            .as_str()
            .is_some_and(|e| e.contains("is active for PID"))
    });
    assert_eq!(info["walreceiver_status"], "retrying", "{info}");
    let written_meanwhile = step(&pg);
    other_client.kill().unwrap();
    other_client.wait().unwrap();
    wait_ingested(&ps, TL, written_meanwhile);

    let log = ps.log_text();
    for needle in ["WAL receiver failed", "refused", "is active for PID"] {
        assert!(log.contains(needle), "log lacks {needle:?}");
    }

    // Nothing was lost: every page equals the primary's after its clean stop.
    step(&pg);
    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print("after the bad sources");
    assert!(cmp.mismatches.is_empty());
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 100);

    // The metrics count what was ingested and read.
    let (_, text) = ps.request("GET", "/metrics", None);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    let labels = format!("{{tenant_id=\"{T}\",timeline_id=\"{TL}\"}}");
    println!(
        "{}",
        text.lines()
            .filter(|l| l.contains("wal_ingest"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(value(&format!("pageserver_wal_ingest_records_total{labels}")) > 1000);
    assert!(value(&format!("pageserver_wal_ingest_bytes_total{labels}")) > 1_000_000);
    assert!(
        value(&format!(
            "pageserver_walreceiver_connect_attempts_total{labels}"
        )) >= 2
    );
    assert!(value("pageserver_getpage_seconds_count") >= cmp.equal["main"]);
}

/// One commit: the WAL insert position before it and after it, and its commit time (RFC 3339, µs) with the
/// times one microsecond before and after.
struct Commit {
    before: Lsn,
    after: Lsn,
    at: String,
    just_before: String,
}

fn commit_row(pg: &PgCluster, i: u32) -> Commit {
    let before: Lsn = pg
        .sql("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    let xid = pg.sql(&format!("INSERT INTO t VALUES ({i}) RETURNING xmin"));
    let fmt = |offset: &str| {
        format!(
            "to_char((pg_xact_commit_timestamp('{xid}'::xid) + interval '{offset} microsecond') \
             AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
    let row = pg.sql(&format!(
        "SELECT {}, {}, pg_current_wal_insert_lsn()",
        fmt("0"),
        fmt("-1")
    ));
    let cols: Vec<&str> = row.split('|').collect();
    std::thread::sleep(Duration::from_millis(20));
    Commit {
        before,
        after: cols[2].parse().unwrap(),
        at: cols[0].to_string(),
        just_before: cols[1].to_string(),
    }
}

fn by_timestamp(ps: &Pageserver, tl: &str, ts: &str) -> (String, Lsn) {
    let (s, v) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/{tl}/get_lsn_by_timestamp?timestamp={ts}"),
        None,
    );
    assert_eq!(s, 200, "{ts}: {v}");
    (v["kind"].as_str().unwrap().to_string(), lsn(&v["lsn"]))
}

/// `lsn` is the end of commit `c`: inside the WAL that commit wrote.
fn assert_is(lsn: Lsn, c: &Commit, what: &str) {
    assert!(
        c.before < lsn && lsn <= c.after,
        "{what}: {lsn} not in ({}, {}]",
        c.before,
        c.after
    );
}

#[test]
fn lsn_by_timestamp_answers_from_commit_times() {
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec![
            "autovacuum = off".into(),
            "track_commit_timestamp = on".into(),
        ],
    });
    let mut ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");

    // No commit since the base backup: nodata at the last record.
    let before = lsn(&detail(&ps, TL)["last_record_lsn"]);
    let (kind, at) = by_timestamp(&ps, TL, "2000-01-01T00:00:00Z");
    assert_eq!(kind, "nodata");
    let after = lsn(&detail(&ps, TL)["last_record_lsn"]);
    assert!(before <= at && at <= after, "{at} is not last_record_lsn");

    pg.sql("CREATE TABLE t (i int)");
    let commits: Vec<Commit> = (1..=4).map(|i| commit_row(&pg, i)).collect();
    let last = wait_ingested(&ps, TL, commits[3].after);
    for (i, c) in commits.iter().enumerate() {
        let (kind, at) = by_timestamp(&ps, TL, &c.at);
        if i + 1 < commits.len() {
            assert_eq!(kind, "present", "commit {i} at {}", c.at);
            assert_is(at, c, &format!("commit {i} at its own time"));
        } else {
            // Nothing was committed after the newest commit: its own time is the future.
            assert_eq!(kind, "future", "newest commit at {}", c.at);
        }
        let (kind, at) = by_timestamp(&ps, TL, &c.just_before);
        assert_eq!(kind, "present");
        if i > 0 {
            assert_is(at, &commits[i - 1], &format!("1 µs before commit {i}"));
        } else {
            assert!(at <= c.before, "1 µs before the first row: {at}");
        }
    }
    let (kind, at) = by_timestamp(&ps, TL, "2100-01-01T00:00:00Z");
    assert_eq!(kind, "future");
    let now = lsn(&detail(&ps, TL)["last_record_lsn"]);
    assert!(
        lsn(&last["last_record_lsn"]) <= at && at <= now,
        "{at} is not last_record_lsn"
    );

    // A branch after commit 2: commit 1's time is before anything it can show.
    let branch = "efefefefefefefefefefefefefefefef";
    let (s, info) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(
            &json!({"new_timeline_id": branch, "ancestor_timeline_id": TL,
                    "ancestor_start_lsn": commits[1].after.to_string()})
            .to_string(),
        ),
    );
    assert_eq!(s, 201, "{info}");
    assert_eq!(
        by_timestamp(&ps, branch, &commits[0].at),
        ("past".to_string(), commits[1].after)
    );
    assert_eq!(
        by_timestamp(&ps, branch, &commits[1].at),
        ("future".to_string(), commits[1].after)
    );

    // Bad input: 400 or 404, never a 5xx.
    for (query, status) in [
        ("", 400),
        ("?timestamp=yesterday", 400),
        ("?timestamp=2026-11-21T10:00:00%2B02:00", 400),
    ] {
        let (s, body) = ps.json(
            "GET",
            &format!("/v1/tenant/{T}/timeline/{TL}/get_lsn_by_timestamp{query}"),
            None,
        );
        assert_eq!(s, status, "{query}: {body}");
    }
    let (s, _) = ps.json(
        "GET",
        &format!("/v1/tenant/{T}/timeline/dddddddddddddddddddddddddddddddd/get_lsn_by_timestamp?timestamp=2000-01-01T00:00:00Z"),
        None,
    );
    assert_eq!(s, 404);

    // After a restart: the same answers, and commits ingested since continue from the stored time.
    assert!(
        ps.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    ps.spawn(&[]);
    let (kind, at) = by_timestamp(&ps, TL, &commits[2].at);
    assert_eq!(kind, "present");
    assert_is(at, &commits[2], "commit 2 after a restart");
    let fifth = commit_row(&pg, 5);
    wait_ingested(&ps, TL, fifth.after);
    assert_eq!(by_timestamp(&ps, TL, &fifth.at).0, "future");
    assert_is(
        by_timestamp(&ps, TL, &commits[3].at).1,
        &commits[3],
        "commit 4 after commit 5",
    );
    assert_is(
        by_timestamp(&ps, TL, &fifth.just_before).1,
        &commits[3],
        "1 µs before commit 5",
    );
}
