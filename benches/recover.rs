//! Recovery replay rate beside the normal ingest rate of the same WAL, in one run, on a node without remote
//! storage (the archive in the workdir):
//! - baseline: a pageserver follows a primary, is stopped, and the primary runs `pgbench -i` and pgbench while
//!   the slot keeps the WAL; the pageserver starts again and catches up: WAL bytes ingested per second, from
//!   its start until its last record reaches the primary's end;
//! - recovery: `POST .../recover` of that timeline (from the archived base, every segment checked): WAL bytes
//!   replayed per second of the whole job (listing, base import and checks included), and the ratio to the
//!   baseline.
//!
//! Report: `<target>/bench-reports/recover.json`. Under `cargo test` (no `--bench`) it runs once on a small
//! load as a smoke test.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pageserver::pg::Lsn;
use serde_json::json;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::recover::{lsn, start_recover, wait_archived, wait_job};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

fn main() {
    let bench = common::is_bench_run();
    let (scale, transactions) = if bench { (20, "20000") } else { (1, "500") };
    let pg = PgCluster::start(PgOptions {
        extra_conf: vec!["max_wal_size = '4GB'".into()],
    });
    let mut ps = Pageserver::start(&[]);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "ps");
    ps.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    pg.pgbench_init("postgres", scale);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", transactions]);
    pg.sql("CHECKPOINT");
    let end: Lsn = pg.current_lsn().parse().unwrap();

    let t = Instant::now();
    ps.spawn(&[]);
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let from = lsn(&info["last_record_lsn"]);
    ps.wait_ingested(T, TL, end);
    let ingest_secs = t.elapsed().as_secs_f64();
    let ingest_bytes = end.0 - from.0;
    let ingest_rate = ingest_bytes as f64 / ingest_secs;
    wait_archived(&ps, T, TL, end);

    let job = start_recover(&ps, T, TL, &format!("to_lsn={end}"));
    let done = wait_job(&ps, T, &job, Duration::from_secs(3600));
    assert_eq!(done["state"], "done", "{done}");
    let replayed = done["bytes_replayed"].as_u64().unwrap();
    let recover_secs = done["elapsed_secs"].as_f64().unwrap();
    let recover_rate = replayed as f64 / recover_secs;

    common::write_report(
        "recover",
        &json!({
            "workload": format!("pgbench -i -s {scale}, then {transactions} transactions x 2 clients"),
            "ingest_catch_up": {
                "wal_bytes": ingest_bytes,
                "seconds": ingest_secs,
                "mb_per_s": ingest_rate / 1e6,
            },
            "recovery": {
                "wal_bytes": replayed,
                "segments": done["segments_replayed"],
                "records": done["records_replayed"],
                "seconds": recover_secs,
                "mb_per_s": recover_rate / 1e6,
                "ratio_to_ingest": recover_rate / ingest_rate,
            },
        }),
    );
}
