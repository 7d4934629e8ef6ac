//! GetPage through the page service with the load tool (`pagebench get-page-latest-lsn`, in process), for 1
//! and 8 clients (one request in flight each), on:
//! - cached pages: a hot set of 2,048 relation blocks, read once before, in the page cache;
//! - pages that need redo: every relation block of a timeline that followed a pgbench primary, with the page
//!   cache at one page (the share of requests that ran WAL redo is reported from the metrics);
//! - the protocol floor: a minimal libpq server (the same wire code) that answers each GetPage with a fixed
//!   8 KiB page, measured in the same run; in a process of its own (this binary, run again with
//!   `PAGE_SERVICE_FLOOR_SERVER`), as the pageserver is, so that both answer across processes.
//!
//! Then the pages that need redo again at 8 clients with `walredo_pool_size` 1, 2 and 4 (the pool grows with
//! load up to that size), each beside the 8-client floor and the size-1 row.
//!
//! Report: `<target>/bench-reports/page_service.json` (`page_service-pg18.json` with `BENCH_PG_VERSION=18`, a
//! PostgreSQL 18 primary). Under `cargo test` each run lasts 1 s (smoke test).
//! `PAGE_SERVICE_PERF=<file>`: `perf record` the pageserver during the cached run at 1 client (at 8 with
//! `PAGE_SERVICE_PERF_CLIENTS=8`; the run of pages that need redo with `PAGE_SERVICE_PERF_CASE=redo`).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::Signal;
use pageserver::page_service::pagestream::{self, ResponseBody, Version};
use pageserver::page_service::pq::{self, FeMessage, PqReader, be};
use pageserver::pagebench::{Load, Report, fetch_keyspace, get_page_latest_lsn};
use serde_json::{Value, json};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// The floor: startup, then every CopyData is answered with a fixed page, batched like the page service.
async fn floor_connection(stream: tokio::net::TcpStream) -> Result<(), pq::PqError> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = PqReader::new(r);
    reader.startup().await?;
    let mut out = BytesMut::new();
    be::authentication_ok(&mut out);
    be::ready_for_query(&mut out);
    pq::send(&mut w, &mut out).await?;
    let page = ResponseBody::GetPage(Bytes::from(vec![0x5Au8; 8192]));
    loop {
        let mut msg = Some(reader.read().await?);
        while let Some(m) = msg {
            match m {
                FeMessage::Query(_) => be::copy_both_response(&mut out),
                FeMessage::CopyData(d) => {
                    let req = pagestream::parse_request(Version::V3, &d).map_err(|e| {
                        pq::PqError::Protocol {
                            what: "request",
                            detail: e.to_string(),
                        }
                    })?;
                    be::copy_data_with(&mut out, |b| {
                        pagestream::encode_response(Version::V3, &req, &page, b)
                    });
                }
                _ => return Ok(()),
            }
            msg = reader.try_read()?;
        }
        pq::send(&mut w, &mut out).await?;
    }
}

fn metric(ps: &Pageserver, name: &str) -> f64 {
    let (_, text) = ps.request("GET", "/metrics", None);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// CPU time of the server (`pid`) and of this process (the load tool) during one run, in µs per request.
struct Cpu {
    server_us: f64,
    load_us: f64,
}

fn row(name: &str, r: &Report, floor: &Report, cpu: &Cpu) -> Value {
    json!({
        "server_cpu_us_per_request": cpu.server_us,
        "load_tool_cpu_us_per_request": cpu.load_us,
        "case": name,
        "clients": r.clients,
        "requests_per_s": r.requests_per_s,
        "vs_floor": r.requests_per_s / floor.requests_per_s,
        "p50_us": r.latency_us.p50,
        "p95_us": r.latency_us.p95,
        "p99_us": r.latency_us.p99,
        "p99_9_us": r.latency_us.p99_9,
        "requests": r.requests,
        "errors": r.errors,
        "keys": r.keys,
    })
}

/// The floor server, in a process of its own like the pageserver (a tokio runtime with its default workers):
/// the bench runs itself with `PAGE_SERVICE_FLOOR_SERVER=<file>`, and the child writes its address there.
fn floor_server(addr_file: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tmp = format!("{addr_file}.tmp");
        std::fs::write(&tmp, listener.local_addr().unwrap().to_string()).unwrap();
        std::fs::rename(&tmp, addr_file).unwrap();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                std::process::exit(0);
            };
            tokio::spawn(floor_connection(stream));
        }
    })
}

/// Starts the floor server process; its address.
fn spawn_floor(dir: &std::path::Path) -> (std::process::Child, String) {
    let file = dir.join("floor-addr");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env("PAGE_SERVICE_FLOOR_SERVER", &file)
        .spawn()
        .expect("start the floor server");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(addr) = std::fs::read_to_string(&file) {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the floor server did not start within 10 s");
}

/// `PAGE_SERVICE_PERF=<file>`: the file to `perf record` the run of `case` at `clients` into, if that is the
/// run asked for (`PAGE_SERVICE_PERF_CASE`, default `cached`; `PAGE_SERVICE_PERF_CLIENTS`, default 1).
fn perf_for(case: &str, clients: usize) -> Option<std::ffi::OsString> {
    let want_clients: usize = std::env::var("PAGE_SERVICE_PERF_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let want_case = std::env::var("PAGE_SERVICE_PERF_CASE").unwrap_or_else(|_| "cached".into());
    std::env::var_os("PAGE_SERVICE_PERF").filter(|_| clients == want_clients && case == want_case)
}

fn main() {
    if let Ok(file) = std::env::var("PAGE_SERVICE_FLOOR_SERVER") {
        floor_server(&file);
    }
    let bench = common::is_bench_run();
    let runtime = Duration::from_secs(if bench { 10 } else { 1 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // A timeline whose pages carry WAL records: pgbench on a followed primary.
    let pg = PgCluster::start_version(common::pg_major(), PgOptions::default());
    let mut ps = Pageserver::start(&[]);
    // No background compaction or GC: they would turn the pages that need redo into images, and take the
    // two cores from the measurement.
    let quiet = json!({"compaction_period": "0 s", "gc_period": "0 s"});
    ps.follow(T, quiet, TL, &pg.connstr("postgres"), "ps");
    pg.pgbench_init("postgres", if bench { 5 } else { 1 });
    pg.pgbench(
        "postgres",
        &["-n", "-c", "2", "-T", if bench { "20" } else { "2" }],
    );
    let end: pageserver::pg::Lsn = pg
        .sql("SELECT pg_current_wal_insert_lsn()")
        .parse()
        .unwrap();
    ps.wait_ingested(T, TL, end);
    ps.json(
        "PUT",
        &format!("/v1/tenant/{T}/timeline/{TL}/checkpoint?wait_until_flushed=true"),
        None,
    );

    let floor_dir = tempfile::tempdir().unwrap();
    let (mut floor_process, floor_addr) = spawn_floor(floor_dir.path());

    let load = |addr: &str, clients: usize, limit: Option<u64>| Load {
        page_service: addr.to_string(),
        tenant: T.into(),
        timeline: TL.into(),
        clients,
        queue_depth: 1,
        runtime,
        limit_keys: limit,
        seed: 42,
    };
    // One run against the server process `server`; its report and the CPU both sides spent per request.
    let run =
        |rt: &tokio::runtime::Runtime, ps: &Pageserver, server: u32, l: Load| -> (Report, Cpu) {
            rt.block_on(async {
                let (ranges, lsn) = fetch_keyspace(&format!("http://{}", ps.http_addr), T, TL)
                    .await
                    .unwrap();
                let me = std::process::id();
                let (s0, l0) = (common::cpu_seconds(server), common::cpu_seconds(me));
                let report = get_page_latest_lsn(&l, &ranges, lsn).await.unwrap();
                let n = report.requests.max(1) as f64;
                let cpu = Cpu {
                    server_us: (common::cpu_seconds(server) - s0) * 1e6 / n,
                    load_us: (common::cpu_seconds(me) - l0) * 1e6 / n,
                };
                (report, cpu)
            })
        };

    let mut results = Vec::new();
    for clients in [1, 8] {
        let floor = run(
            &rt,
            &ps,
            floor_process.id(),
            load(&floor_addr, clients, None),
        );
        // Cached: the hot set read once first.
        run(
            &rt,
            &ps,
            ps.pid(),
            Load {
                runtime: Duration::from_secs(1),
                ..load(&ps.pg_addr, 8, Some(2048))
            },
        );
        let perf = perf_for("cached", clients).map(|out| common::perf_record(ps.pid(), &out, 999));
        let cached = run(&rt, &ps, ps.pid(), load(&ps.pg_addr, clients, Some(2048)));
        if let Some(perf) = perf {
            common::perf_stop(perf);
        }
        results.push((clients, floor, cached));
    }
    // Pages that need redo: restart with a page cache of one page.
    assert!(
        ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .is_some()
    );
    ps.spawn(&["page_cache_size=1"]);
    let mut rows = Vec::new();
    for (clients, floor, cached) in &results {
        let redo_before = metric(&ps, "pageserver_wal_redo_seconds_count");
        let in_thread_before = metric(&ps, "pageserver_wal_redo_replies_in_thread_total");
        let moves_before = metric(&ps, "pageserver_wal_redo_process_moves_total");
        let perf = perf_for("redo", *clients).map(|out| common::perf_record(ps.pid(), &out, 999));
        let (redo, redo_cpu) = run(&rt, &ps, ps.pid(), load(&ps.pg_addr, *clients, None));
        if let Some(perf) = perf {
            common::perf_stop(perf);
        }
        let redos = metric(&ps, "pageserver_wal_redo_seconds_count") - redo_before;
        let (floor, floor_cpu) = floor;
        let (cached, cached_cpu) = cached;
        let mut redo_row = row("pages that need redo", &redo, floor, &redo_cpu);
        redo_row["redo_per_request"] = json!(redos / redo.requests.max(1) as f64);
        // Replies received by a request waiting in its own thread (wal_redo_reply_wait), per redo.
        let in_thread =
            metric(&ps, "pageserver_wal_redo_replies_in_thread_total") - in_thread_before;
        redo_row["in_thread_per_redo"] = json!(in_thread / redos.max(1.0));
        let moves = metric(&ps, "pageserver_wal_redo_process_moves_total") - moves_before;
        redo_row["process_moves_per_redo"] = json!(moves / redos.max(1.0));
        rows.push(row("protocol floor (fixed page)", floor, floor, floor_cpu));
        rows.push(row("cached pages (2,048 hot)", cached, floor, cached_cpu));
        rows.push(redo_row);
        for r in [floor, cached, &redo] {
            assert_eq!(r.errors, 0);
            assert!(r.requests > 0);
        }
    }
    // The same reads that need redo with no waiting in the request's thread (wal_redo_reply_wait 0): what
    // that wait gains, in the same run.
    assert!(
        ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
            .is_some()
    );
    ps.spawn(&["page_cache_size=1", "wal_redo_reply_wait='0s'"]);
    for (clients, floor, _) in &results {
        let (redo, cpu) = run(&rt, &ps, ps.pid(), load(&ps.pg_addr, *clients, None));
        assert_eq!(redo.errors, 0);
        let mut r = row(
            "pages that need redo, no wait in thread",
            &redo,
            &floor.0,
            &cpu,
        );
        r["wal_redo_reply_wait_us"] = json!(0);
        rows.push(r);
    }
    // The redo pool: the same reads at 8 clients with walredo_pool_size 1, 2 and 4 (set as tenant overrides;
    // the pool is made at the tenant's load, so each size takes a restart).
    let floor8 = &results.iter().find(|(c, _, _)| *c == 8).unwrap().1.0;
    let mut pool_rows = Vec::new();
    for pool in [1, 2, 4] {
        let body = json!({"tenant_id": T, "compaction_period": "0 s", "gc_period": "0 s", "walredo_pool_size": pool});
        let (s, answer) = ps.json("PATCH", "/v1/tenant/config", Some(&body.to_string()));
        assert_eq!(s, 200, "{answer}");
        assert!(
            ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
                .is_some()
        );
        ps.spawn(&["page_cache_size=1"]);
        let (redo, cpu) = run(&rt, &ps, ps.pid(), load(&ps.pg_addr, 8, None));
        assert_eq!(redo.errors, 0);
        let mut r = row(
            &format!("pages that need redo, walredo_pool_size {pool}"),
            &redo,
            floor8,
            &cpu,
        );
        r["walredo_pool_size"] = json!(pool);
        let (_, text) = ps.request("GET", "/metrics", None);
        let processes: f64 = (text.lines())
            .filter(|l| l.starts_with("pageserver_wal_redo_processes{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        r["redo_processes_after"] = json!(processes);
        pool_rows.push(r);
    }
    let base = pool_rows[0]["requests_per_s"].as_f64().unwrap();
    for r in &mut pool_rows {
        r["vs_pool_size_1"] = json!(r["requests_per_s"].as_f64().unwrap() / base);
    }
    let _ = floor_process.kill();
    let _ = floor_process.wait();
    common::write_report(
        &common::versioned_report_name("page_service"),
        &json!({
            "pg_version": common::pg_major(),
            "runtime_s": runtime.as_secs(),
            "rows": rows,
            "redo_pool_rows": pool_rows
        }),
    );
}
