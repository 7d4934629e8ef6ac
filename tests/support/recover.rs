//! Helpers of the recovery tests: start a job, wait for it, boot a timeline's fullbackup and dump it.

use std::time::{Duration, Instant};

use pageserver::pg::Lsn;

use super::dump::{Snapshot, as_wal_derived, dumpall, first_difference};
use super::pageserver::Pageserver;
use super::pg::PgCluster;

/// POST .../recover with `query` (e.g. `to_lsn=0/1234`); panics unless 202; returns the job.
pub fn start_recover(
    ps: &Pageserver,
    tenant: &str,
    timeline: &str,
    query: &str,
) -> serde_json::Value {
    let (s, job) = ps.json(
        "POST",
        &format!("/v1/tenant/{tenant}/timeline/{timeline}/recover?{query}"),
        None,
    );
    assert_eq!(s, 202, "recover?{query}: {job}");
    assert_eq!(job["state"], "running", "{job}");
    job
}

/// Polls the job until it is no longer running (at most `timeout`).
pub fn wait_job(
    ps: &Pageserver,
    tenant: &str,
    job: &serde_json::Value,
    timeout: Duration,
) -> serde_json::Value {
    let id = job["job_id"].as_str().expect("a job id");
    let deadline = Instant::now() + timeout;
    loop {
        let (s, j) = ps.json("GET", &format!("/v1/tenant/{tenant}/job/{id}"), None);
        assert_eq!(s, 200, "{j}");
        if j["state"] != "running" {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "job still running after {timeout:?}: {j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn lsn(v: &serde_json::Value) -> Lsn {
    v.as_str().unwrap_or("0/0").parse().unwrap()
}

/// The ids of the tenant's timelines.
pub fn timelines(ps: &Pageserver, tenant: &str) -> Vec<String> {
    let (s, list) = ps.json("GET", &format!("/v1/tenant/{tenant}/timeline"), None);
    assert_eq!(s, 200, "{list}");
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Waits until the timeline's WAL archive holds everything up to `lsn` in its store.
pub fn wait_archived(ps: &Pageserver, tenant: &str, timeline: &str, lsn: Lsn) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, info) = ps.json(
            "GET",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}"),
            None,
        );
        if self::lsn(&info["wal_archive"]["uploaded_lsn"]) >= lsn {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "WAL archive stuck below {lsn}: {info}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Boots plain PostgreSQL on a fullbackup of `timeline` at `at` and checks its `pg_dumpall` against `snap`.
pub fn assert_dump_equals(ps: &Pageserver, tenant: &str, timeline: &str, at: Lsn, snap: &Snapshot) {
    let tar = ps.fullbackup(tenant, timeline, at);
    let mut restored = PgCluster::start_from_tar(&tar);
    let ours = dumpall(&restored);
    restored.stop();
    let expected = as_wal_derived(snap);
    assert!(
        ours == expected,
        "pg_dumpall of {timeline} at {at} differs from the primary's at {}: {}",
        snap.lsn,
        first_difference(&expected, &ours)
    );
    println!(
        "fullbackup of {timeline} at {at}: pg_dumpall of {} lines equals the primary's at {}",
        ours.lines().count(),
        snap.lsn
    );
}
