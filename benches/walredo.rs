//! WAL redo through the sandboxed `postgres --wal-redo` (one tenant pool of one process, pipelined): requests
//! per second and latency for a ping (the protocol floor, the baseline of this run), a request of one real
//! heap record and one of ten, with 1, 4 and 16 concurrent callers. Report:
//! `<target>/bench-reports/walredo.json`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use pageserver::walredo::process::encode_request;
use pageserver::walredo::{
    PageId, PostgresRedoManager, RedoConfig, RedoManager, RedoRequest, WalRecord,
};
use support::walsample::heap_page_sample;

const PING: [u8; 5] = [b'H', 0, 0, 0, 4];

#[derive(Clone, Copy, Debug)]
enum Kind {
    Ping,
    Records(usize),
}

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Ping => "ping".into(),
            Kind::Records(n) => format!("{n}_record"),
        }
    }
}

struct Setup {
    manager: PostgresRedoManager,
    /// Requests of 1 and 10 records on a base image.
    one: RedoRequest,
    ten: RedoRequest,
}

impl Setup {
    async fn run(&self, kind: Kind) {
        match kind {
            Kind::Ping => {
                self.manager
                    .pool(pageserver::pg::PgVersion::V15)
                    .unwrap()
                    .request(&PING)
                    .await
                    .unwrap();
            }
            Kind::Records(1) => {
                self.manager.redo(self.one.clone()).await.unwrap();
            }
            Kind::Records(_) => {
                self.manager.redo(self.ten.clone()).await.unwrap();
            }
        }
    }
}

/// `callers` tasks share `total` requests; returns the wall time and each request's latency.
async fn drive(
    setup: &Arc<Setup>,
    kind: Kind,
    callers: usize,
    total: u64,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers as u64 {
        let setup = setup.clone();
        let n = total / callers as u64 + u64::from(c < total % callers as u64);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = Instant::now();
                setup.run(kind).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    (start.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let bench = common::is_bench_run();
    let bundle = pageserver::walredo::bundle_from_env().expect(
        "PAGESERVER_WALREDO_BUNDLE must name a built walredo bundle (scripts/test.sh sets it)",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sample = heap_page_sample(40);
    let setup = rt.block_on(async {
        let manager = PostgresRedoManager::new(
            &RedoConfig {
                bundle_dir: bundle,
                binary_name: "postgres".into(),
                run_as_user: "nobody".into(),
                pool_size: 1,
                idle_timeout: Duration::ZERO,
                request_timeout: Duration::from_secs(30),
                reply_wait: pageserver::config::NodeConfig::default()
                    .wal_redo_reply_wait
                    .get(),
                empty_root: true,
            },
            tracing::Span::none(),
        )
        .unwrap();
        let page = PageId::Rel(sample.tag);
        let base = manager
            .redo(RedoRequest {
                pg_version: pageserver::pg::PgVersion::V15,
                page,
                base_image: None,
                records: sample.records[..20].to_vec(),
            })
            .await
            .unwrap();
        let one = RedoRequest {
            pg_version: pageserver::pg::PgVersion::V15,
            page,
            base_image: Some(base.clone()),
            records: sample.records[20..21].to_vec(),
        };
        let ten = RedoRequest {
            pg_version: pageserver::pg::PgVersion::V15,
            page,
            base_image: Some(base),
            records: sample.records[20..30].to_vec(),
        };
        assert!(
            ten.records
                .iter()
                .all(|(_, r)| matches!(r, WalRecord::Postgres { .. }))
        );
        Arc::new(Setup { manager, one, ten })
    });
    let request_bytes = |k: Kind| match k {
        Kind::Ping => PING.len(),
        Kind::Records(1) => {
            encode_request(&sample.tag, Some(&[0; 8192]), &[]).len()
                + sample.records[20..21].iter().map(raw_len).sum::<usize>()
        }
        Kind::Records(_) => {
            encode_request(&sample.tag, Some(&[0; 8192]), &[]).len()
                + sample.records[20..30].iter().map(raw_len).sum::<usize>()
        }
    };

    let kinds = [Kind::Ping, Kind::Records(1), Kind::Records(10)];
    let callers_list = [1usize, 4, 16];
    let mut criterion = Criterion::default().configure_from_args();
    if bench {
        criterion = criterion
            .measurement_time(Duration::from_secs(5))
            .sample_size(20);
    }
    for kind in kinds {
        let mut group = criterion.benchmark_group(format!("walredo_{}", kind.name()));
        group.throughput(Throughput::Elements(1));
        for callers in callers_list {
            group.bench_function(format!("{callers}_callers"), |b| {
                b.iter_custom(|iters| rt.block_on(drive(&setup, kind, callers, iters)).0)
            });
        }
        group.finish();
    }
    criterion.final_summary();

    // Our own pass for the report: fixed request counts, requests/s and latency percentiles.
    let total = if bench { 20_000 } else { 200 };
    let mut rows = Vec::new();
    let mut ping_rps = std::collections::HashMap::new();
    for kind in kinds {
        for callers in callers_list {
            let (wall, mut lat) = rt.block_on(drive(&setup, kind, callers, total));
            lat.sort_unstable();
            let rps = total as f64 / wall.as_secs_f64();
            if matches!(kind, Kind::Ping) {
                ping_rps.insert(callers, rps);
            }
            rows.push(serde_json::json!({
                "request": kind.name(),
                "callers": callers,
                "request_bytes": request_bytes(kind),
                "requests": total,
                "requests_per_s": rps,
                "ratio_to_ping": rps / ping_rps[&callers],
                "latency_us": {"p50": percentile(&lat, 0.5), "p95": percentile(&lat, 0.95), "p99": percentile(&lat, 0.99)},
            }));
        }
    }
    rt.block_on(setup.manager.shutdown());
    common::write_report(
        "walredo",
        &serde_json::json!({
            "setup": "one tenant, pool of 1 sandboxed postgres --wal-redo process, requests pipelined; records are real heap inserts on one page with an 8 KiB base image",
            "results": rows,
        }),
    );
}

fn raw_len((_, r): &(pageserver::pg::Lsn, WalRecord)) -> usize {
    match r {
        WalRecord::Postgres { rec, .. } => 13 + rec.len(),
        _ => 0,
    }
}
