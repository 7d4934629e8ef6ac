//! Cost as the data grows: the same measurements on a pgbench database of scale 10 and of scale 100 (1 and 4
//! under `cargo test`; `SCALES=10,100,500` to change them). For each scale, a fresh PostgreSQL 15 primary and a
//! fresh pageserver following it (tenant settings `pitr_interval = 0 s`, `gc_horizon = 0`, background
//! compaction and GC off: the bench runs them itself), then `pgbench -i -s <scale>` and `pgbench -c 2 -T 30`
//! (10 s under `cargo test`); the pageserver catches up and flushes, then compaction runs forced to its end
//! (`force_l0_compaction`, `force_image_layer_creation`) and GC after it.
//! Measured in the same run:
//!
//! - **space**: the timeline's layer files against the primary's data (the sum of `pg_database_size`);
//! - **backups** (each taken twice, the second time counted, so that both sides read from a warm page cache):
//!   `pg_basebackup -Ft -X none -D -` of the primary (the baseline), and `basebackup` and `fullbackup` of the
//!   pageserver at its last LSN, each written by psql to /dev/null (the same libpq client library);
//! - **GetPage**: random relation blocks of the timeline at its last LSN, 1 client, 10 s, with a page cache of
//!   one page (so every read walks the layers), p50 and p99.
//!
//! Report: `<target>/bench-reports/scale.json`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pageserver::pagebench::{Load, fetch_keyspace, get_page_latest_lsn};
use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions, pg_bin_dir};

const T: &str = "5ca1e5ca1e5ca1e5ca1e5ca1e5ca1e00";
const TL: &str = "5ca1e5ca1e5ca1e5ca1e5ca1e5ca1e01";

/// Seconds `cmd` takes, its stdout to /dev/null; panics unless it succeeds.
fn timed(cmd: &mut Command, what: &str) -> f64 {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn psql_to_null(ps: &Pageserver, command: &str) -> f64 {
    let (host, port) = ps.pg_addr.rsplit_once(':').unwrap();
    let conninfo = format!("host={host} port={port} user=cloud_admin dbname=postgres");
    timed(
        Command::new(pg_bin_dir().join("psql")).args(["-X", "-q", "-d", &conninfo, "-c", command]),
        command,
    )
}

fn one_scale(scale: u32, bench: bool) -> Value {
    let pg = PgCluster::start(PgOptions::default());
    let mut ps = Pageserver::start(&[]);
    let conf = json!({"pitr_interval": "0 s", "gc_horizon": 0, "compaction_period": "0 s", "gc_period": "0 s"});
    ps.follow(T, conf, TL, &pg.connstr("postgres"), "scale");
    let t = Instant::now();
    pg.pgbench_init("postgres", scale);
    let init_secs = t.elapsed().as_secs_f64();
    pg.pgbench(
        "postgres",
        &["-n", "-c", "2", "-T", if bench { "30" } else { "10" }],
    );
    pg.sql("CHECKPOINT");
    let end: Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(T, TL, end);
    let tl_path = format!("/v1/tenant/{T}/timeline/{TL}");
    let put = |what: &str, body: Option<&str>| {
        let (s, answer) = ps.json("PUT", &format!("{tl_path}/{what}"), body);
        assert_eq!(s, 200, "{what}: {answer}");
        answer
    };
    put("checkpoint?wait_until_flushed=true", None);
    let (_, before) = ps.json("GET", &tl_path, None);
    let before = before["current_physical_size"].as_u64().unwrap();
    // Compaction forced to its end (every L0 merged, an image of every range with deltas above its
    // image), then GC (pitr_interval and gc_horizon 0: everything below the images goes).
    let t = Instant::now();
    let compacted = put(
        "compact?force_l0_compaction=true&force_image_layer_creation=true",
        None,
    );
    let compaction_secs = t.elapsed().as_secs_f64();
    let gc = put("do_gc", Some(r#"{"gc_horizon": 0}"#));
    let maintenance_secs = t.elapsed().as_secs_f64();
    println!("scale {scale}: compaction {compacted} in {compaction_secs:.1} s; GC {gc}");
    let (_, detail) = ps.json("GET", &tl_path, None);
    let physical = detail["current_physical_size"].as_u64().unwrap();
    let primary: u64 = pg
        .sql("SELECT sum(pg_database_size(oid)) FROM pg_database")
        .parse()
        .unwrap();
    let (_, layers) = ps.json("GET", &format!("{tl_path}/layer"), None);
    let layer_count = layers["historic_layers"].as_array().map_or(0, |l| l.len());

    // Backups: each twice, the second counted.
    let mut pg_basebackup = 0.0;
    let (mut basebackup, mut fullbackup) = (0.0, 0.0);
    for _ in 0..2 {
        pg_basebackup = timed(
            pg.client_command("pg_basebackup").args([
                "-Ft",
                "-X",
                "none",
                "--checkpoint=fast",
                "-D",
                "-",
            ]),
            "pg_basebackup",
        );
        basebackup = psql_to_null(&ps, &format!("basebackup {T} {TL}"));
        fullbackup = psql_to_null(&ps, &format!("fullbackup {T} {TL}"));
    }

    // GetPage through the layers: a page cache of one page.
    assert!(
        ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(30))
            .is_some()
    );
    ps.spawn(&["page_cache_size=1"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let (ranges, lsn) = fetch_keyspace(&format!("http://{}", ps.http_addr), T, TL)
            .await
            .unwrap();
        let load = Load {
            page_service: ps.pg_addr.clone(),
            tenant: T.into(),
            timeline: TL.into(),
            clients: 1,
            queue_depth: 1,
            runtime: Duration::from_secs(if bench { 10 } else { 2 }),
            limit_keys: None,
            seed: 7,
        };
        get_page_latest_lsn(&load, &ranges, lsn).await.unwrap()
    });
    assert_eq!(report.errors, 0);
    println!(
        "scale {scale}: primary {primary} bytes, layers {physical} bytes ({:.2}x, {layer_count} layers); pg_basebackup {pg_basebackup:.2} s, basebackup {basebackup:.2} s, fullbackup {fullbackup:.2} s ({:.2}x); GetPage p50 {} us p99 {} us over {} keys",
        physical as f64 / primary as f64,
        fullbackup / pg_basebackup,
        report.latency_us.p50,
        report.latency_us.p99,
        report.keys
    );
    json!({
        "scale": scale,
        "pgbench_init_s": init_secs,
        "wal_bytes": end.0,
        "maintenance_s": maintenance_secs,
        "compaction_s": compaction_secs,
        "compaction": compacted,
        "gc": gc,
        "layer_bytes_before_compaction": before,
        "primary_bytes": primary,
        "layer_bytes": physical,
        "layers": layer_count,
        "space_vs_primary": physical as f64 / primary as f64,
        "pg_basebackup_s": pg_basebackup,
        "basebackup_s": basebackup,
        "fullbackup_s": fullbackup,
        "basebackup_vs_pg_basebackup": basebackup / pg_basebackup,
        "fullbackup_vs_pg_basebackup": fullbackup / pg_basebackup,
        "getpage_p50_us": report.latency_us.p50,
        "getpage_p99_us": report.latency_us.p99,
        "getpage_requests_per_s": report.requests_per_s,
        "getpage_keys": report.keys,
    })
}

fn main() {
    let bench = common::is_bench_run();
    let scales: Vec<u32> = std::env::var("SCALES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| if bench { vec![10, 100] } else { vec![1, 4] });
    let rows: Vec<Value> = scales.iter().map(|s| one_scale(*s, bench)).collect();
    let p50 = |r: &Value| r["getpage_p50_us"].as_f64().unwrap();
    let growth = p50(rows.last().unwrap()) / p50(&rows[0]);
    println!(
        "GetPage p50 grows {growth:.2}x from scale {} to {}",
        scales[0],
        scales[scales.len() - 1]
    );
    common::write_report(
        "scale",
        &json!({ "rows": rows, "getpage_p50_growth": growth }),
    );
}
