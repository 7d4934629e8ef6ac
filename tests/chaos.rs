//! Chaos: a pageserver with remote storage (S3, SeaweedFS) follows a primary that runs pgbench and the DDL mix
//! without pause (at a bounded rate, the mix's objects dropped again), and is killed with SIGKILL again and
//! again (`CHAOS_KILLS`, default 10): during ingest, a flush, a compaction, a GC and an upload in turn, at a
//! random point of each. Every fourth kill also throws the tenant's local files away and attaches it from the
//! bucket (the next generation). After each kill the flush LSN it had reported to the primary is read from
//! the replication slot, and after each restart:
//! - the timeline's disk_consistent_lsn is at or above it (nothing acknowledged is lost);
//! - every key of the keyspace at that LSN reads the same as on a second pageserver that imported the same
//!   base backup and followed the same primary undisturbed (the control), byte for byte or equal under the
//!   `wal_consistency_checking` mask.
//!
//! At the end every page equals the stopped primary's files. The random choices come from `CHAOS_SEED`
//! (printed), so a failing run can be repeated.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use pageserver::pg::mask::{guess_page_kind, mask_for_comparison};
use pageserver::repository::Key;
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait, wait_past};
use support::objstore::S3Server;
use support::pageserver::{Pageserver, lsn_field};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ddl_mix};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// xorshift64*: enough randomness for kill moments, repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Milliseconds in `lo..hi`.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// What was going on when the pageserver was killed.
#[derive(Clone, Copy, Debug)]
enum Moment {
    Ingest,
    Flush,
    Compaction,
    Gc,
    Upload,
}

const MOMENTS: [Moment; 5] = [
    Moment::Ingest,
    Moment::Flush,
    Moment::Compaction,
    Moment::Gc,
    Moment::Upload,
];

fn timeline_path(what: &str) -> String {
    format!("/v1/tenant/{T}/timeline/{TL}{what}")
}

fn info(ps: &Pageserver) -> serde_json::Value {
    ps.json("GET", &timeline_path(""), None).1
}

/// What the primary was last told the pageserver flushed (the slot's restart_lsn).
fn reported_flush(pg: &PgCluster) -> Lsn {
    pg.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver'")
        .parse()
        .unwrap()
}

/// Starts a PUT of `what` on the timeline in the background (its answer does not matter: the kill cuts it).
fn put_in_background(ps: &Pageserver, what: &str) {
    let url = format!("http://{}{}", ps.http_addr, timeline_path(what));
    std::thread::spawn(move || {
        let _ = ureq::put(&url).send_empty();
    });
}

/// Timeline detail once the timeline answers after a start.
fn info_when_loaded(ps: &Pageserver) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) = ps.json("GET", &timeline_path(""), None);
        if s == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "timeline not loaded: {s} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the moment, then kills.
fn kill_at(ps: &mut Pageserver, moment: Moment, rng: &mut Rng) -> String {
    let what = match moment {
        Moment::Ingest => {
            std::thread::sleep(rng.millis(300, 3000));
            "while ingesting".to_string()
        }
        Moment::Flush => {
            std::thread::sleep(rng.millis(500, 2000));
            put_in_background(ps, "/checkpoint?wait_until_flushed=true");
            let d = rng.millis(0, 200);
            std::thread::sleep(d);
            format!("{d:?} into a checkpoint")
        }
        Moment::Compaction => {
            std::thread::sleep(rng.millis(500, 2000));
            put_in_background(ps, "/compact");
            let d = rng.millis(0, 400);
            std::thread::sleep(d);
            format!("{d:?} into a compaction")
        }
        Moment::Gc => {
            std::thread::sleep(rng.millis(500, 2000));
            put_in_background(ps, "/do_gc");
            let d = rng.millis(0, 100);
            std::thread::sleep(d);
            format!("{d:?} into a GC")
        }
        Moment::Upload => {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let q = info(ps)["upload_queue"].clone();
                if q["in_flight"].as_u64().unwrap_or(0) > 0 {
                    break format!("with uploads in flight ({q})");
                }
                assert!(Instant::now() < deadline, "no upload in flight for 60 s");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    ps.kill9();
    what
}

/// Every key of the control's keyspace at `lsn`, read from both at `lsn`. Returns (keys, byte-equal,
/// equal under the mask); panics on the first difference.
fn compare_with_control(ps: &Pageserver, control: &Pageserver, lsn: Lsn) -> (u64, u64, u64) {
    let keyspace = |server: &Pageserver| {
        let (s, ks) = server.json(
            "GET",
            &timeline_path(&format!("/keyspace?at_lsn={lsn}")),
            None,
        );
        assert_eq!(s, 200, "{ks}");
        ks["keys"].clone()
    };
    let ranges = keyspace(control);
    assert_eq!(keyspace(ps), ranges, "keyspaces at {lsn} differ");
    let (mut keys, mut exact, mut masked) = (0, 0, 0);
    for range in ranges.as_array().unwrap() {
        let mut key: Key = range[0].as_str().unwrap().parse().unwrap();
        let end: Key = range[1].as_str().unwrap().parse().unwrap();
        while key < end {
            let path = timeline_path(&format!("/getpage?key={key}&lsn={lsn}"));
            let (s1, ours) = ps.get_bytes(&path);
            let (s2, theirs) = control.get_bytes(&path);
            assert_eq!(
                (s1, s2),
                (200, 200),
                "{key} at {lsn}: {} / {}",
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
            keys += 1;
            if ours == theirs {
                exact += 1;
            } else {
                let (fork, blk) = match key.page_id() {
                    Some(pageserver::walredo::PageId::Rel(tag)) => (tag.forknum, tag.blkno),
                    _ => panic!("{key} at {lsn}: the value differs from the control's"),
                };
                let kind = guess_page_kind(fork, blk, &theirs);
                let (mut a, mut b) = (ours.clone(), theirs.clone());
                let _ = mask_for_comparison(fork, blk, kind, &mut a);
                let _ = mask_for_comparison(fork, blk, kind, &mut b);
                assert!(
                    a == b,
                    "{key} at {lsn} ({kind:?}): differs from the control's"
                );
                masked += 1;
            }
            key = key.next();
        }
    }
    (keys, exact, masked)
}

/// Creates the tenant, imports `tar` as the timeline and follows the primary through `slot`.
fn import_and_follow(ps: &Pageserver, tar: &[u8], base: Lsn, end: Lsn, pg: &PgCluster, slot: &str) {
    ps.create_tenant(T);
    ps.import_basebackup(T, TL, tar, base, end);
    ps.set_wal_source(
        T,
        TL,
        json!({"connstr": pg.connstr("postgres"), "slot_name": slot}),
    );
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let kills: usize = std::env::var("CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CHAOS_SEED={seed} CHAOS_KILLS={kills}");
    let mut rng = Rng(seed);

    let s3 = S3Server::start();
    let remote = format!("remote_storage={}", s3.remote_storage("chaos"));
    // Small layers so that flushes, compactions, image layers and GC happen every few seconds, but not so
    // small that uploads fall behind the workload (1 MiB layers left thousands of uploads queued).
    let overrides = [
        remote.as_str(),
        "checkpoint_distance=8388608",
        "compaction_threshold=3",
        "compaction_target_size=8388608",
        "image_creation_threshold=3",
        "compaction_period='5s'",
        "gc_period='5s'",
        "gc_horizon=8388608",
        "pitr_interval='120s'",
    ];
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    });
    pg.pgbench_init("postgres", 1);
    // Both pageservers import the same base backup and stream from its start through their own slots, made
    // first: their timelines hold the same values at every LSN from there on (a follow takes a base backup of
    // its own, whose non-WAL-logged parts, such as free space maps, differ from any other one's).
    for slot in ["control", "pageserver"] {
        pg.sql(&format!(
            "SELECT pg_create_physical_replication_slot('{slot}', true)"
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let tar = std::fs::read(pg.basebackup_tar(&dir.path().join("bb"))).unwrap();
    let base = support::pg::backup_start_lsn(&tar);
    let end: Lsn = pg.current_lsn().parse().unwrap();
    let control = Pageserver::start(&[]);
    import_and_follow(&control, &tar, base, end, &pg, "control");
    let mut ps = Pageserver::start_with_env(&overrides, s3.env());
    import_and_follow(&ps, &tar, base, end, &pg, "pageserver");
    println!(
        "both imported the base backup at {base} (consistent at {end}) and follow the primary"
    );

    let stop = AtomicBool::new(false);
    /// Stops the workload when the kill loop ends, by a panic too (the scope waits for the workload).
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let mut generation = 1;
    std::thread::scope(|scope| {
        let work = scope.spawn(|| {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                // At a bounded rate, so that a 50-kill run keeps the WAL, the layers and the bucket small.
                pg.pgbench("postgres", &["-n", "-c", "2", "-T", "4", "-R", "150"]);
                if round % 4 == 1 {
                    // The DDL mix, then its objects dropped again: the keyspace stays the same size.
                    let t = format!("ddl_c{round}");
                    ddl_mix(&pg, &format!("c{round}"));
                    for sql in [
                        format!("DROP DATABASE {t}_db_wal"),
                        format!("DROP TABLE {t}, {t}_unlogged"),
                        format!("DROP SEQUENCE {t}_seq"),
                    ] {
                        pg.sql(&sql);
                    }
                }
                round += 1;
            }
            round
        });
        let stopper = StopOnDrop(&stop);
        let mut totals = (0, 0, 0);
        for i in 0..kills {
            // Every moment in turn (each twice in 10 kills), at a random point of it.
            let moment = MOMENTS[i % MOMENTS.len()];
            let what = kill_at(&mut ps, moment, &mut rng);
            let reported = reported_flush(&pg);
            let wipe = i % 4 == 3;
            // Compaction and GC delete layers in the bucket as fast as they upload new ones; the space of
            // deleted objects comes back only when the server vacuums.
            if i % 5 == 4 {
                s3.vacuum();
            }
            if wipe {
                std::fs::remove_dir_all(ps.workdir().join("tenants").join(T)).unwrap();
            }
            ps.spawn(&overrides);
            if wipe {
                generation += 1;
                ps.attach(T, Some(generation));
                ps.set_wal_source(
                    T,
                    TL,
                    json!({"connstr": pg.connstr("postgres"), "slot_name": "pageserver"}),
                );
            }
            let after = info_when_loaded(&ps);
            let durable = lsn_field(&after, "disk_consistent_lsn");
            assert!(
                durable >= reported,
                "kill {i} ({moment:?}, {what}): restarted at {durable}, below the flush it had reported, \
                 {reported}: {after}"
            );
            // The timelines are consistent from the end of the base backup on (the slot starts below it).
            let at = reported.max(end);
            control.wait_ingested(T, TL, at);
            ps.wait_ingested(T, TL, at);
            let started = Instant::now();
            let (keys, exact, masked) = compare_with_control(&ps, &control, at);
            totals = (totals.0 + keys, totals.1 + exact, totals.2 + masked);
            println!(
                "kill {i}: {moment:?}, {what}{}; reported flush {reported}, restarted at {durable}; \
                 {keys} keys equal to the control's at {at} ({exact} byte for byte, {masked} masked) \
                 in {:?}",
                if wipe {
                    ", local files thrown away and attached"
                } else {
                    ""
                },
                started.elapsed()
            );
        }
        drop(stopper);
        let rounds = work.join().unwrap();
        println!(
            "{kills} kills over {rounds} workload rounds: {} keys compared, {} byte for byte, {} masked, \
             0 differences",
            totals.0, totals.1, totals.2
        );
    });

    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let shutdown: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    wait_past(&control, T, TL, shutdown);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print(&format!("after {kills} kills, followed to {last}"));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
}
