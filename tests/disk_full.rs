//! Disk full: the tenants directory of the workdir on a small tmpfs the test mounts, filled by a ballast file
//! while a followed primary runs pgbench. Ingest stops with a clear error, the timeline says so
//! (`ingest_stalled`) and `pageserver_ingest_disk_full` counts it; the primary is never told more was flushed
//! than is on disk; reads are served the whole time; a kill -9 while full loses nothing; when the ballast goes
//! ingest resumes by itself and every page equals the primary's.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::{Pageserver, lsn_field};
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// A tmpfs of `size` mounted at `at` (unmounted on drop).
struct SmallFs {
    at: PathBuf,
}

impl SmallFs {
    fn mount(at: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs at {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallFs {
            at: at.to_path_buf(),
        }
    }

    fn free_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.at).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Fills the filesystem with a ballast file until about `keep` bytes are free (the pageserver writes
    /// meanwhile, so a size that no longer fits is retried smaller).
    fn fill(&self, keep: u64) -> PathBuf {
        let ballast = self.at.join("ballast");
        for _ in 0..20 {
            let size = self.free_bytes().saturating_sub(keep);
            let out = Command::new("fallocate")
                .args(["-l", &size.to_string()])
                .arg(&ballast)
                .output()
                .unwrap();
            if out.status.success() {
                return ballast;
            }
            let _ = std::fs::remove_file(&ballast);
        }
        panic!("could not fill {}", self.at.display());
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

fn info(ps: &Pageserver) -> serde_json::Value {
    ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None)
        .1
}

/// What the primary was last told the pageserver flushed.
fn reported_flush(pg: &PgCluster) -> Lsn {
    pg.sql("SELECT coalesce(restart_lsn, '0/0') FROM pg_replication_slots WHERE slot_name = 'pageserver'")
        .parse()
        .unwrap()
}

#[test]
fn disk_full_stops_ingest_and_it_resumes_when_space_returns() {
    let mut pg = PgCluster::start(PgOptions::default());
    pg.pgbench_init("postgres", 1);
    let overrides = ["checkpoint_distance=1048576"];
    let mut ps = Pageserver::start(&overrides);
    let fs = SmallFs::mount(&ps.workdir().join("tenants"), "160m");
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    let now: Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(T, TL, now);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reported_flush(&pg) < now {
        assert!(Instant::now() < deadline, "never flushed: {}", info(&ps));
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "followed to {now}, flushed; {} MB free",
        fs.free_bytes() >> 20
    );

    let ballast = fs.fill(6 << 20);
    // pgbench until ingest stops on the full disk.
    let deadline = Instant::now() + Duration::from_secs(180);
    let stalled = loop {
        pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
        let i = info(&ps);
        if i["ingest_stalled"].is_string() {
            break i;
        }
        assert!(Instant::now() < deadline, "ingest never stalled: {i}");
    };
    let why = stalled["ingest_stalled"].as_str().unwrap();
    println!("stalled at {}: {why}", stalled["last_record_lsn"]);
    assert!(
        why.starts_with("disk full: ") && why.contains("No space left on device"),
        "{why}"
    );
    assert_eq!(ps.metric("pageserver_timelines_ingest_disk_full"), 1);
    assert!(ps.metric("pageserver_disk_full_errors_total") > 0);
    assert!(ps.log_text().contains("disk full: ingest stopped"));

    // More WAL while full: none of it is confirmed, reads go on.
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    std::thread::sleep(Duration::from_secs(3));
    let i = info(&ps);
    let durable = lsn_field(&i, "disk_consistent_lsn");
    let reported = reported_flush(&pg);
    let primary: Lsn = pg.current_lsn().parse().unwrap();
    println!(
        "while full: primary at {primary}, last_record_lsn {}, disk_consistent_lsn {durable}, the slot at {reported}",
        i["last_record_lsn"]
    );
    assert!(
        reported <= durable,
        "reported {reported} > durable {durable}"
    );
    assert!(
        reported >= now,
        "what was flushed before the disk filled stays confirmed"
    );
    assert!(lsn_field(&i, "last_record_lsn") < primary, "ingest stopped");
    for _ in 0..20 {
        assert_eq!(ps.pg_class_page(T, TL), (200, 8192), "reads are served");
    }

    // kill -9 while full, and a start on the full disk: nothing confirmed is lost.
    ps.kill9();
    let reported = reported_flush(&pg);
    ps.spawn(&overrides);
    let i = info(&ps);
    assert!(
        lsn_field(&i, "disk_consistent_lsn") >= reported,
        "after kill -9: {i}, the slot at {reported}"
    );
    assert_eq!(ps.pg_class_page(T, TL), (200, 8192));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !info(&ps)["ingest_stalled"].is_string() {
        assert!(Instant::now() < deadline, "still full after the restart");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Space returns: ingest resumes by itself.
    std::fs::remove_file(&ballast).unwrap();
    let primary: Lsn = pg.current_lsn().parse().unwrap();
    let started = Instant::now();
    let i = ps.wait_ingested(T, TL, primary);
    let resumed_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while info(&ps)["ingest_stalled"].is_string() {
        assert!(Instant::now() < deadline, "still stalled: {}", info(&ps));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ps.metric("pageserver_timelines_ingest_disk_full"), 0);
    println!(
        "space returned: caught up with {primary} in {resumed_in:?} ({} now)",
        i["last_record_lsn"]
    );
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print("after the disk was full, a kill -9 and space returned");
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
}
