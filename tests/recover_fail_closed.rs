//! A recovery fails closed: on a node without remote storage (the archive lives in the workdir, in the same
//! layout as in remote storage), each of these breaks of the archive fails the job with an error naming the
//! segment (or the base) and the check, and leaves no target timeline: one flipped byte in a segment, a
//! deleted middle segment, two segments swapped, a manifest with a wrong `prev_sha256`, a segment of another
//! PostgreSQL system, a tampered base. With the archive restored, the same recovery succeeds and its
//! fullbackup boots with the primary's `pg_dumpall`.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::dump::snapshot;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::recover::{
    assert_dump_equals, lsn, start_recover, timelines, wait_archived, wait_job,
};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";
const T2: &str = "fedcba9876543210fedcba9876543210";
const TL2: &str = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";

/// Writes some rows and switches WAL segments `n` times.
fn make_segments(pg: &PgCluster, n: usize) {
    pg.sql("CREATE TABLE IF NOT EXISTS t (g int, s text)");
    for i in 0..n {
        pg.sql(&format!(
            "INSERT INTO t SELECT g, repeat('r{i}', 50) FROM generate_series(1, 2000) g"
        ));
        pg.sql("SELECT pg_switch_wal()");
    }
    pg.sql("INSERT INTO t VALUES (-1, 'tail')");
}

fn archive_dir(ps: &Pageserver, tenant: &str, timeline: &str) -> PathBuf {
    ps.workdir()
        .join(format!("tenants/{tenant}/timelines/{timeline}/wal"))
}

/// Completed segment names in an archive directory, sorted.
fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Runs a recovery from the base that must fail; checks the error names `what` and `check`, and that no
/// target timeline is left.
fn expect_failure(ps: &Pageserver, case: &str, what: &str, check: &str) {
    let before = timelines(ps, T);
    let job = start_recover(ps, T, TL, "");
    let target = job["target_timeline_id"].as_str().unwrap().to_string();
    let done = wait_job(ps, T, &job, Duration::from_secs(120));
    let error = done["error"].as_str().unwrap_or("");
    println!("{case}: {error}");
    assert_eq!(done["state"], "failed", "{case}: {done}");
    assert!(
        error.contains(what),
        "{case}: the error does not name {what}: {error}"
    );
    assert!(
        error.contains(check),
        "{case}: the error does not name the check {check:?}: {error}"
    );
    assert_eq!(
        timelines(ps, T),
        before,
        "{case}: a target timeline was left"
    );
    let (s, _) = ps.get(&format!("/v1/tenant/{T}/timeline/{target}"));
    assert_eq!(s, 404, "{case}: the target {target} still answers");
}

#[test]
fn each_break_of_the_archive_fails_closed() {
    let pg = PgCluster::start(PgOptions::default());
    let ps = Pageserver::start(&[]);
    ps.follow(
        T,
        json!({"wal_archive_partial_interval": "1s"}),
        TL,
        &pg.connstr("postgres"),
        "pageserver",
    );
    make_segments(&pg, 5);
    let snap = snapshot(&pg);
    let end: pageserver::pg::Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(T, TL, end);
    let info = wait_archived(&ps, T, TL, end);
    println!("archive: {}", info["wal_archive"]);

    // Another system's WAL, for the foreign segment.
    let other = PgCluster::start(PgOptions::default());
    ps.follow(T2, json!({}), TL2, &other.connstr("postgres"), "pageserver");
    make_segments(&other, 7);
    let other_end: pageserver::pg::Lsn = other.current_lsn().parse().unwrap();
    ps.wait_ingested(T2, TL2, other_end);

    let dir = archive_dir(&ps, T, TL);
    let segs = segments(&dir);
    println!("segments: {segs:?}");
    assert!(segs.len() >= 4, "at least 4 completed segments: {segs:?}");
    let backup = ps.workdir().join("archive-backup");
    copy_dir(&dir, &backup);
    let restore = || copy_dir(&backup, &dir);
    let middle = segs[1].clone();
    let next = segs[2].clone();

    // One flipped byte in a segment.
    let path = dir.join(&middle);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5000] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    expect_failure(&ps, "flipped byte", &middle, "check: segment sha256");
    restore();

    // A deleted middle segment.
    std::fs::remove_file(dir.join(&middle)).unwrap();
    std::fs::remove_file(dir.join(format!("{middle}.json"))).unwrap();
    expect_failure(&ps, "deleted segment", &middle, "check: no gap");
    restore();

    // Two segments swapped (each with its manifest).
    for suffix in ["", ".json"] {
        let (a, b) = (
            dir.join(format!("{middle}{suffix}")),
            dir.join(format!("{next}{suffix}")),
        );
        let tmp = dir.join("swap.tmp");
        std::fs::rename(&a, &tmp).unwrap();
        std::fs::rename(&b, &a).unwrap();
        std::fs::rename(&tmp, &b).unwrap();
    }
    expect_failure(
        &ps,
        "swapped segments",
        &middle,
        "check: manifest names its segment",
    );
    restore();

    // A manifest with a wrong prev_sha256.
    let mpath = dir.join(format!("{next}.json"));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["prev_sha256"] = json!("00".repeat(32));
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    expect_failure(&ps, "wrong prev_sha256", &next, "check: hash chain");
    restore();

    // A segment of another system, its manifest relabelled as ours.
    let other_dir = archive_dir(&ps, T2, TL2);
    let other_segs = segments(&other_dir);
    assert!(
        other_segs.contains(&middle),
        "the other system has {middle}: {other_segs:?}"
    );
    std::fs::copy(other_dir.join(&middle), dir.join(&middle)).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other_dir.join(format!("{middle}.json"))).unwrap())
            .unwrap();
    m["tenant_id"] = json!(T);
    m["timeline_id"] = json!(TL);
    std::fs::write(
        dir.join(format!("{middle}.json")),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    expect_failure(&ps, "foreign segment", &middle, "check: same system");
    restore();

    // A tampered base.
    let bpath = dir.join("base.tar.zst");
    let mut bytes = std::fs::read(&bpath).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&bpath, bytes).unwrap();
    expect_failure(&ps, "tampered base", "base.tar.zst", "check: base sha256");
    restore();

    // The archive restored: the same recovery succeeds and equals the primary.
    let job = start_recover(&ps, T, TL, "");
    let done = wait_job(&ps, T, &job, Duration::from_secs(120));
    assert_eq!(done["state"], "done", "{done}");
    let shadow = done["target_timeline_id"].as_str().unwrap();
    let reached = lsn(&done["lsn_reached"]);
    println!(
        "recovery of the restored archive: {} segments, {} bytes, {} records to {reached}",
        done["segments_replayed"], done["bytes_replayed"], done["records_replayed"]
    );
    assert!(reached >= snap.lsn, "{done}");
    assert_dump_equals(&ps, T, shadow, reached, &snap);

    // The tenant-wide form: one job per timeline with an archived base (not the shadow, which has none).
    let (s, all) = ps.json("POST", &format!("/v1/tenant/{T}/recover"), None);
    assert_eq!(s, 202, "{all}");
    let jobs = all["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{all}");
    assert_eq!(jobs[0]["timeline_id"], TL, "{all}");
    let done = wait_job(&ps, T, &jobs[0], Duration::from_secs(120));
    assert_eq!(done["state"], "done", "{done}");
    let (s, _) = ps.request(
        "DELETE",
        &format!(
            "/v1/tenant/{T}/timeline/{}",
            done["target_timeline_id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(s, 202);

    // The periodic scrub: a recovery into a temporary shadow, a scrub against it, the shadow deleted.
    let before = timelines(&ps, T);
    let patch = json!({"tenant_id": T, "scrub_period": "1s"}).to_string();
    let (s, body) = ps.request("PATCH", "/v1/tenant/config", Some(&patch));
    assert_eq!(s, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let scrub = loop {
        let (_, jobs) = ps.json("GET", &format!("/v1/tenant/{T}/job"), None);
        let found = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["periodic"] == true && j["kind"] == "scrub" && j["state"] != "running");
        if let Some(j) = found {
            break j.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no periodic scrub finished: {jobs}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (s, body) = ps.request(
        "PATCH",
        "/v1/tenant/config",
        Some(&json!({"tenant_id": T, "scrub_period": null}).to_string()),
    );
    assert_eq!(s, 200, "{body}");
    println!("periodic scrub: {}", scrub["scrub"]);
    assert_eq!(scrub["state"], "done", "{scrub}");
    assert_eq!(scrub["timeline_id"], TL, "{scrub}");
    assert!(
        scrub["scrub"]["keys_compared"].as_u64().unwrap() > 100,
        "{scrub}"
    );
    assert_eq!(scrub["scrub"]["mismatched"], 0, "{scrub}");
    let periodic_shadow = scrub["target_timeline_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while timelines(&ps, T).contains(&periodic_shadow) {
        assert!(
            std::time::Instant::now() < deadline,
            "the periodic shadow was not deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(timelines(&ps, T).iter().all(|t| before.contains(t)));

    // Retention: completed segments older than wal_archive_retention go (the newest stays); a recovery from
    // the base then fails closed on the missing first segment.
    let first_segment = segs[0].clone();
    let patch = json!({"tenant_id": T, "wal_archive_retention": "1s"}).to_string();
    let (s, body) = ps.request("PATCH", "/v1/tenant/config", Some(&patch));
    assert_eq!(s, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while segments(&dir).len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention removed nothing: {:?}",
            segments(&dir)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    println!("after retention: {:?}", segments(&dir));
    assert_eq!(segments(&dir), vec![segs.last().unwrap().clone()]);
    expect_failure(
        &ps,
        "past retention",
        &first_segment,
        "check: first segment present",
    );
}
