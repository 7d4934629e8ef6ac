//! WAL ingest speed: a local PostgreSQL 15 primary writes a pgbench WAL stream (about 1 GiB) while nobody
//! consumes it (two slots keep it); then the pageserver (a timeline that follows the primary, its receiver
//! stopped while the WAL was written) and a PostgreSQL 15 streaming standby (a base backup taken at the same
//! point) each catch up on that same stream, one after the other, from the same primary; then pg_receivewal
//! receives it too, writing files only (the floor of the transport). Reported: WAL bytes, seconds and MB/s of
//! each, and the ratio of the pageserver to the standby. Report: `<target>/bench-reports/ingest.json`.
//!
//! Beside the pageserver's rate: its peak RSS (VmHWM) while catching up, next to `checkpoint_distance` and
//! the bytes of the indexes of the layers written (which open layers hold in memory).
//!
//! Under `cargo test` (no `--bench`) it runs once on about 32 MiB as a smoke test.
//! `BENCH_PG_VERSION=18`: the primary and the standby are PostgreSQL 18 (report `ingest-pg18.json`).
//! `INGEST_CHECKPOINT_DISTANCE=<bytes>` sets the tenant's checkpoint_distance.
//! `INGEST_PERF=<file>`: record the pageserver's catch-up with `perf record --call-graph dwarf` into that
//! file (the profile of docs/benchmarks.md; `perf report -i <file>`).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";
const POLL: Duration = Duration::from_millis(50);

fn lsn_of(v: &Value) -> Lsn {
    v.as_str().unwrap().parse().unwrap()
}

fn detail(ps: &Pageserver) -> Value {
    ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None)
        .1
}

fn set_source(ps: &Pageserver, source: Value) {
    ps.set_wal_source(T, TL, source);
}

fn wait_slot_inactive(pg: &PgCluster, slot: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pg.sql(&format!(
        "SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"
    )) == "t"
    {
        assert!(Instant::now() < deadline, "slot {slot} stays active");
        std::thread::sleep(POLL);
    }
}

/// Reads every WAL segment once, so that neither consumer pays for the first read from disk.
fn warm_wal(pg: &PgCluster) -> u64 {
    let mut bytes = 0;
    for entry in std::fs::read_dir(pg.wal_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes += std::fs::read(&path).map_or(0, |b| b.len() as u64);
        }
    }
    bytes
}

/// The tenant's effective checkpoint_distance, MiB.
fn checkpoint_distance_mib_of(ps: &Pageserver) -> f64 {
    let (_, config) = ps.json("GET", &format!("/v1/tenant/{T}/config"), None);
    let bytes = config["effective_config"]["checkpoint_distance"]
        .as_u64()
        .unwrap_or_else(|| panic!("checkpoint_distance in {config}"));
    bytes as f64 / (1 << 20) as f64
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn main() {
    let bench = common::is_bench_run();
    let (scale, target) = if bench {
        (20, 1u64 << 30)
    } else {
        (1, 32u64 << 20)
    };
    let mut pg = PgCluster::start_version(
        common::pg_major(),
        PgOptions {
            extra_conf: vec!["max_wal_size = '2GB'".into()],
        },
    );

    // The pageserver follows the primary, then stops its receiver: the slot keeps the WAL from here.
    let ps = Pageserver::start(&[]);
    // INGEST_CHECKPOINT_DISTANCE=<bytes>: the tenant's checkpoint_distance (peak RSS against it).
    let tenant_conf = match std::env::var("INGEST_CHECKPOINT_DISTANCE") {
        Ok(bytes) => json!({"checkpoint_distance": bytes.parse::<u64>().expect("bytes")}),
        Err(_) => json!({}),
    };
    ps.follow(T, tenant_conf, TL, &pg.connstr("postgres"), "ps");
    let source = json!({"connstr": pg.connstr("postgres"), "slot_name": "ps"});
    set_source(&ps, Value::Null);
    wait_slot_inactive(&pg, "ps");
    let ps_start = lsn_of(&detail(&ps)["last_record_lsn"]);

    // The standby: a base backup now, with its own slot; started only after the WAL is written.
    let mut standby = pg.standby("standby", &["fsync = on", "hot_standby = on"]);
    let label = std::fs::read_to_string(standby.data_dir().join("backup_label")).unwrap();
    let standby_start: Lsn = label
        .split("START WAL LOCATION: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();

    // The transport floor: pg_receivewal on a third slot only receives the stream and writes it to files.
    pg.create_physical_slot("floor");
    let floor_start: Lsn = pg
        .sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'floor'")
        .parse()
        .unwrap();

    // The WAL stream: pgbench -i, then pgbench runs until `target` bytes are written.
    let generating = Instant::now();
    pg.pgbench_init("postgres", scale);
    let current = |pg: &PgCluster| -> Lsn {
        pg.sql("SELECT pg_current_wal_insert_lsn()")
            .parse()
            .unwrap()
    };
    while current(&pg).0 - ps_start.0 < target {
        pg.pgbench("postgres", &["-n", "-c", "4", "-j", "2", "-T", "5"]);
    }
    let end = current(&pg);
    // Flushed WAL beyond `end`, so that pg_receivewal --endpos sees a message past it.
    pg.sql("SELECT pg_switch_wal()");
    let generated = generating.elapsed();
    let warmed = warm_wal(&pg);
    println!(
        "{} MB of WAL written in {:.1} s; pg_wal holds {} MB",
        (end.0 - ps_start.0) / 1_000_000,
        generated.as_secs_f64(),
        warmed / 1_000_000
    );

    // The pageserver catches up.
    let before = detail(&ps);
    assert_eq!(
        lsn_of(&before["last_record_lsn"]),
        ps_start,
        "ingested while stopped: {before}"
    );
    let perf = std::env::var_os("INGEST_PERF").map(|out| common::perf_record(ps.pid(), &out, 299));
    let rss_before = common::status_kib(ps.pid(), "VmHWM");
    let cpu_before = common::cpu_seconds(ps.pid());
    let t = Instant::now();
    set_source(&ps, source.clone());
    let ps_info = loop {
        let info = detail(&ps);
        if lsn_of(&info["last_record_lsn"]) >= end {
            break info;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "pageserver stuck: {info}"
        );
        std::thread::sleep(POLL);
    };
    let ps_time = t.elapsed();
    let peak_rss_kib = common::status_kib(ps.pid(), "VmHWM");
    let ps_cpu = common::cpu_seconds(ps.pid()) - cpu_before;
    if let Some(perf) = perf {
        common::perf_stop(perf);
    }
    // Both rates over the WAL both read: from the later starting point (the other consumer's base backup
    // also ends with a WAL switch, skipped space that costs nothing to read past).
    let common = end.0 - ps_start.0.max(standby_start.0);
    let (_, layers) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}/layer"), None);
    let layer_count = layers["historic_layers"].as_array().map_or(0, |a| a.len());
    let (index_bytes, index_entries) = layer_indexes(&ps.workdir().join("tenants").join(T));
    set_source(&ps, Value::Null);

    // The standby catches up on the same WAL.
    let t = Instant::now();
    standby.restart();
    loop {
        let replayed = standby
            .try_sql("postgres", "SELECT pg_last_wal_replay_lsn()")
            .ok()
            .and_then(|s| s.parse::<Lsn>().ok());
        if replayed.is_some_and(|l| l >= end) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(3600),
            "standby stuck at {replayed:?}"
        );
        std::thread::sleep(POLL);
    }
    let standby_time = t.elapsed();
    // pg_receivewal on the same WAL.
    let receivewal_dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = pg
        .client_command("pg_receivewal")
        .arg("-D")
        .arg(receivewal_dir.path())
        .args(["--slot=floor", "--no-sync", "--no-loop"])
        .arg(format!("--endpos={end}"))
        .output()
        .expect("run pg_receivewal");
    let floor_time = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(floor_start.0 <= ps_start.0.max(standby_start.0));

    let ps_rate = mb_per_s(common, ps_time);
    let standby_rate = mb_per_s(common, standby_time);
    common::write_report(
        &common::versioned_report_name("ingest"),
        &json!({
            "pg_version": common::pg_major(),
            "pgbench_scale": scale,
            "wal_end_lsn": end.to_string(),
            "wal_bytes": common,
            "pageserver": {
                "start_lsn": ps_start.to_string(),
                "seconds": ps_time.as_secs_f64(),
                "mb_per_s": ps_rate,
                // CPU time of the pageserver process (all its threads) while catching up: steadier from run to
                // run than the rate, which depends on how the work spreads over the two cores.
                "cpu_seconds": ps_cpu,
                "cpu_seconds_per_gb": ps_cpu / (common as f64 / 1e9),
                "physical_size": ps_info["current_physical_size"],
                "historic_layers": layer_count,
                "historic_layer_entries": index_entries,
                "historic_layer_index_mib": index_bytes as f64 / (1 << 20) as f64,
                "peak_rss_mib": peak_rss_kib as f64 / 1024.0,
                "peak_rss_mib_before_catch_up": rss_before as f64 / 1024.0,
                "checkpoint_distance_mib": checkpoint_distance_mib_of(&ps),
            },
            "standby": {
                "start_lsn": standby_start.to_string(),
                "seconds": standby_time.as_secs_f64(),
                "mb_per_s": standby_rate,
                "settings": "fsync = on, hot_standby = on, streaming from the primary through a slot",
            },
            "pg_receivewal": {
                "start_lsn": floor_start.to_string(),
                "seconds": floor_time.as_secs_f64(),
                "mb_per_s": mb_per_s(end.0 - floor_start.0, floor_time),
                "settings": "--no-sync: receive and write files only (the transport floor)",
            },
            "ratio_pageserver_to_standby": ps_rate / standby_rate,
        }),
    );
    standby.stop();
    pg.stop();
}

/// The bytes of the indexes of every layer file under `dir` (which an open layer keeps in memory: key 18 +
/// LSN 8 + offset 8 bytes per delta entry, key 18 + offset 8 per image entry), and their entries.
fn layer_indexes(dir: &std::path::Path) -> (u64, u64) {
    let (mut bytes, mut entries) = (0u64, 0u64);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (b, e) = layer_indexes(&path);
            bytes += b;
            entries += e;
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let Ok(layer) = name.parse::<pageserver::repository::layers::LayerName>() else {
            continue;
        };
        use pageserver::repository::layers::{DeltaLayer, ImageLayer, LayerKind};
        let (n, kind) = if layer.is_delta() {
            let d = DeltaLayer::open(&path).expect("open delta layer");
            (d.entry_count() as u64, LayerKind::Delta)
        } else {
            let i = ImageLayer::open(&path).expect("open image layer");
            (i.entry_count() as u64, LayerKind::Image)
        };
        bytes += n * kind.entry_size() as u64;
        entries += n;
    }
    (bytes, entries)
}
