//! `/recover` and `/scrub` end to end with the ingest workload, remote storage on a local path.
//!
//! A pageserver follows a primary through the ingest workload; the primary's state is recorded at two
//! pauses. The pageserver restarts with a simulated bug: reads of three pages of `pgbench_accounts` on the
//! official timeline return a flipped byte. Then, while pgbench keeps the primary writing:
//! - a recovery with `to_time` (the first pause) runs slowly (a pause point after each segment) while the test
//!   reads pages of the source and checks them, and sees the source ingest; its fullbackup equals the first
//!   pause's `pg_dumpall`;
//! - a recovery with `from_lsn` (the first pause, into a branch there) and `to_lsn` (the second pause) equals
//!   the second pause's dump.
//!
//! With the primary stopped, a recovery without `from_lsn` builds a shadow from the base and archive alone:
//! every page equals the primary's (masked), a scrub of the official timeline against it names exactly the
//! three corrupted keys, and its fullbackup boots plain PostgreSQL with the primary's `pg_dumpall`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::Key;
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::dump::snapshot;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::recover::{assert_dump_equals, lsn, start_recover, wait_archived, wait_job};
use support::workload::{WORKLOAD_CONF, ingest_workload};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";
const BRANCH: &str = "b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1b1";

fn detail(ps: &Pageserver, timeline: &str) -> serde_json::Value {
    let (s, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{timeline}"), None);
    assert_eq!(s, 200, "{info}");
    info
}

fn getpage(ps: &Pageserver, timeline: &str, key: &str, at: Lsn) -> Vec<u8> {
    let (s, page) = ps.get_bytes(&format!(
        "/v1/tenant/{T}/timeline/{timeline}/getpage?key={key}&lsn={at}"
    ));
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&page));
    page
}

/// A scrub of `timeline` against `other` at `at`; returns its result.
fn scrub(ps: &Pageserver, timeline: &str, other: &str, at: Lsn) -> serde_json::Value {
    let (s, job) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline/{timeline}/scrub?other={other}&lsn={at}"),
        None,
    );
    assert_eq!(s, 202, "{job}");
    let done = wait_job(ps, T, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "done", "{done}");
    done["scrub"].clone()
}

fn mismatched(r: &serde_json::Value) -> BTreeSet<String> {
    r["mismatched_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn recoveries_equal_the_primary_and_the_scrub_finds_the_corruption() {
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = format!(
        "remote_storage={{local_path='{}'}}",
        remote_dir.path().display()
    );
    let overrides = [
        remote.as_str(),
        "checkpoint_distance=4194304",
        "compaction_threshold=3",
        "compaction_period='2s'",
    ];
    let mut ps = Pageserver::start(&overrides);
    ps.follow(
        T,
        json!({"wal_archive_partial_interval": "2s"}),
        TL,
        &pg.connstr("postgres"),
        "pageserver",
    );
    let wal_log_db = ingest_workload(&pg, "rc");
    let first = snapshot(&pg);
    std::thread::sleep(Duration::from_millis(1100));
    let to_time = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "200"]);
    pg.sql("CREATE TABLE after_second_pause AS SELECT 1 AS x");
    pg.sql("DROP TABLE after_second_pause");
    let second = snapshot(&pg);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "100"]);
    ps.wait_ingested(T, TL, pg.current_lsn().parse().unwrap());

    // The simulated bug: three pages of pgbench_accounts read wrong on the official timeline.
    let db: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();
    let rel: u32 = pg
        .sql("SELECT relfilenode FROM pg_class WHERE relname = 'pgbench_accounts'")
        .parse()
        .unwrap();
    let node = RelFileNode { spc: 1663, db, rel };
    let corrupted: BTreeSet<String> = [1u32, 5, 9]
        .iter()
        .map(|&b| Key::rel_block(node, 0, b).to_string())
        .collect();
    let fault = corrupted
        .iter()
        .map(|k| format!("{TL}:{k}"))
        .collect::<Vec<_>>()
        .join(",");
    ps.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    ps.env
        .push(("PAGESERVER_FAULT_CORRUPT_PAGES".into(), fault));
    ps.env.push((
        "PAGESERVER_FAILPOINT_PAUSE".into(),
        "recover-after-segment=700".into(),
    ));
    ps.spawn(&overrides);
    ps.wait_ingested(T, TL, second.lsn);

    // Reference reads of the source, before any job: a page that is not corrupted, at the first pause.
    let probe = Key::rel_block(node, 0, 2).to_string();
    let probe_page = getpage(&ps, TL, &probe, first.lsn);

    // A slow recovery to the first pause's time, while pgbench writes and the test reads the source.
    std::thread::scope(|scope| {
        let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "2", "-T", "8"]));
        let job = start_recover(&ps, T, TL, &format!("to_time={to_time}"));
        let shadow = job["target_timeline_id"].as_str().unwrap().to_string();
        let start_last = lsn(&detail(&ps, TL)["last_record_lsn"]);
        let (mut reads, mut running_polls, mut progress_seen) = (0, 0, 0);
        let mut ingested_during = false;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let (_, j) = ps.json(
                "GET",
                &format!("/v1/tenant/{T}/job/{}", job["job_id"].as_str().unwrap()),
                None,
            );
            if j["state"] != "running" {
                assert_eq!(j["state"], "done", "{j}");
                println!(
                    "to_time recovery: {} segments, {} bytes at {:.0} bytes/s, to {}",
                    j["segments_replayed"],
                    j["bytes_replayed"],
                    j["rate_bytes_per_sec"].as_f64().unwrap(),
                    j["lsn_reached"]
                );
                break;
            }
            running_polls += 1;
            // The job's progress: done of total WAL bytes, a rate and an ETA once a segment is replayed.
            let (s, running) = ps.json("GET", "/v1/progress", None);
            assert_eq!(s, 200, "{running}");
            if let Some(r) = (running.as_array().unwrap().iter()).find(|p| p["kind"] == "recover") {
                let (done, total) = (r["done"].as_u64().unwrap(), r["total"].as_u64().unwrap());
                assert!(total > 0 && done <= total, "{r}");
                assert_eq!(r["timeline_id"], shadow.as_str(), "{r}");
                if done > 0 {
                    assert!(r["rate_per_sec"].as_f64().unwrap() > 0.0, "{r}");
                    assert!(r["eta_secs"].as_f64().is_some(), "{r}");
                    progress_seen += 1;
                }
            }
            // The target refuses reads while the job runs.
            let (s, _) = ps.get_bytes(&format!(
                "/v1/tenant/{T}/timeline/{shadow}/getpage?key={probe}&lsn={}",
                first.lsn
            ));
            assert_eq!(s, 409, "the target serves during its recovery");
            assert_eq!(
                getpage(&ps, TL, &probe, first.lsn),
                probe_page,
                "the source's page changed during the job"
            );
            reads += 1;
            if lsn(&detail(&ps, TL)["last_record_lsn"]) > start_last {
                ingested_during = true;
            }
            assert!(Instant::now() < deadline, "the job did not finish: {j}");
            std::thread::sleep(Duration::from_millis(300));
        }
        println!(
            "during the job: {reads} reads of the source checked over {running_polls} polls, ingest went on: {ingested_during}"
        );
        assert!(
            running_polls >= 3 && reads >= 3,
            "the job ran while the source was read"
        );
        assert!(ingested_during, "the source ingested during the job");
        assert!(
            progress_seen >= 1,
            "GET /v1/progress never showed the recovery under way"
        );
        let (_, running) = ps.json("GET", "/v1/progress", None);
        assert!(
            !(running.as_array().unwrap().iter()).any(|p| p["kind"] == "recover"),
            "a finished recovery is still listed: {running}"
        );
        let log = ps.log_text();
        assert!(
            log.lines()
                .any(|l| l.contains("finished") && l.contains("kind=Recover")),
            "no end-of-recovery progress line in the log"
        );
        let info = detail(&ps, &shadow);
        let at = lsn(&info["last_record_lsn"]);
        assert!(at >= first.lsn, "{info}");
        assert_dump_equals(&ps, T, &shadow, at, &first);
        bench.join().unwrap();
    });

    // From the first pause's LSN (a branch there) to the second pause's.
    let (s, b) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&json!({"new_timeline_id": BRANCH, "ancestor_timeline_id": TL, "ancestor_start_lsn": first.lsn}).to_string()),
    );
    assert_eq!(s, 201, "{b}");
    let job = start_recover(
        &ps,
        T,
        TL,
        &format!(
            "from_lsn={}&target={BRANCH}&to_lsn={}",
            first.lsn, second.lsn
        ),
    );
    let done = wait_job(&ps, T, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "done", "{done}");
    let at = lsn(&done["lsn_reached"]);
    println!(
        "from_lsn {} to_lsn {}: reached {at}, {} segments",
        first.lsn, second.lsn, done["segments_replayed"]
    );
    assert!(at <= second.lsn && at > first.lsn, "{done}");
    let r = scrub(&ps, TL, BRANCH, at);
    assert_eq!(mismatched(&r), corrupted, "{r}");
    assert_dump_equals(&ps, T, BRANCH, at, &second);
    // A target more advanced than from_lsn is refused.
    let (s, e) = ps.json(
        "POST",
        &format!(
            "/v1/tenant/{T}/timeline/{TL}/recover?from_lsn={}&target={BRANCH}",
            first.lsn
        ),
        None,
    );
    assert_eq!(s, 409, "{e}");

    // The primary stops; a recovery from the base and the archive alone.
    pg.sql("CHECKPOINT");
    let last_snap = snapshot(&pg);
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    wait_archived(&ps, T, TL, last);
    let job = start_recover(&ps, T, TL, "");
    let done = wait_job(&ps, T, &job, Duration::from_secs(600));
    assert_eq!(done["state"], "done", "{done}");
    let shadow = done["target_timeline_id"].as_str().unwrap().to_string();
    assert_eq!(lsn(&done["lsn_reached"]), last, "{done}");
    println!(
        "recovery from the base: {} segments, {} bytes, {} records at {:.0} bytes/s",
        done["segments_replayed"],
        done["bytes_replayed"],
        done["records_replayed"],
        done["rate_bytes_per_sec"].as_f64().unwrap()
    );

    let cmp = compare_over_http(&ps, T, &shadow, last, &pg, &[wal_log_db]);
    cmp.print("the shadow against the primary");
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
    let official = compare_over_http(&ps, T, TL, last, &pg, &[wal_log_db]);
    official.print("the official timeline (with the simulated bug) against the primary");
    assert_eq!(
        official.mismatches.len(),
        corrupted.len(),
        "{:?}",
        official.mismatches
    );

    let (s, job) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline/{TL}/scrub?other={shadow}&lsn={last}"),
        None,
    );
    assert_eq!(s, 202, "{job}");
    let done = wait_job(&ps, T, &job, Duration::from_secs(300));
    assert_eq!(done["state"], "done", "{done}");
    let r = &done["scrub"];
    let found: BTreeSet<String> = r["mismatched_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap().to_string())
        .collect();
    println!(
        "scrub at {last}: {} keys ({} relation pages, {} sizes, {} SLRU pages, {} other), mismatched {:?}",
        r["keys_compared"],
        r["rel_pages_compared"],
        r["rel_sizes_compared"],
        r["slru_pages_compared"],
        r["other_keys_compared"],
        found
    );
    assert_eq!(found, corrupted, "{r}");
    assert_eq!(r["mismatched"], 3, "{r}");
    assert_eq!(r["only_in_timeline"], 0, "{r}");
    assert_eq!(r["only_in_other"], 0, "{r}");
    assert!(ps.metric("pageserver_scrub_mismatched_keys_total") >= 3);

    assert_dump_equals(&ps, T, &shadow, last, &last_snap);
}
