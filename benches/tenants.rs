//! Many tenants on one pageserver. A PostgreSQL 15 primary makes one small base backup (its `postgres`
//! database with a 1,000-row table; the template databases `template0` and `template1` left out, so that a
//! thousand copies fit on the disk); the pageserver gets N tenants (1,000 under `cargo bench`, `TENANTS=<n>`
//! to change it), each importing that backup as its one timeline. Measured, each beside its baseline from
//! the same run:
//!
//! - **memory**: VmRSS of the pageserver with no tenant (after a restart, the baseline), then with the N
//!   tenants loaded and idle after a restart: RSS per idle tenant;
//! - **redo processes**: a WAL-redo ping to 100 tenants launches a process for each; after
//!   `walredo_idle_timeout` (set to 10 s here) the processes still alive (0 expected);
//! - **start**: the pageserver is restarted; time until its HTTP API answers, until the first page (pg_class
//!   block 0, over the page service) of a random tenant, and until every tenant is loaded (`GET /v1/tenant`
//!   answers with all of them); the empty pageserver's start is the baseline;
//! - **idle CPU**: CPU seconds the pageserver uses in 10 s with every tenant idle.
//!
//! Report: `<target>/bench-reports/tenants.json`. Under `cargo test` it runs once with 20 tenants.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pageserver::page_service::client::PageServiceClient;
use pageserver::page_service::pagestream::{
    Request, RequestBody, RequestHeader, ResponseBody, Version,
};
use pageserver::pg::{Lsn, RelFileNode};
use rand::Rng;
use serde_json::json;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const TL: &str = "7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a7a";

fn tenant_id(i: usize) -> String {
    format!("7e{:030x}", i)
}

/// Processes whose parent is `pid` (the redo children of the pageserver).
fn children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                s.rfind(')')
                    .and_then(|i| s[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .count()
}

/// The backup without the template databases (base/1, base/4): the `postgres` database, global and SLRUs.
fn small_backup(full: &[u8]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut archive = tar::Archive::new(full);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().to_string();
        if path.starts_with("base/1/")
            || path.starts_with("base/4/")
            || path == "base/1"
            || path == "base/4"
        {
            continue;
        }
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.append_data(&mut header, &path, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

/// pg_class block 0 of database 5 over the page service (the tenant loads on this first request).
async fn first_page(addr: &str, tenant: &str, lsn: Lsn) -> usize {
    let client = PageServiceClient::connect(addr).await.unwrap();
    let mut session = client
        .pagestream(Version::V3, tenant, TL)
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let req = Request {
        hdr: RequestHeader {
            reqid: 1,
            request_lsn: lsn,
            not_modified_since: lsn,
        },
        body: RequestBody::GetPage {
            rel: RelFileNode {
                spc: 1663,
                db: 5,
                rel: 1259,
            },
            fork: 0,
            blkno: 0,
        },
    };
    let ResponseBody::GetPage(page) = session.request(&req).await.unwrap() else {
        panic!("no page");
    };
    page.len()
}

fn restart(ps: &mut Pageserver, overrides: &[&str]) -> Duration {
    ps.signal_and_wait(Signal::SIGTERM, Duration::from_secs(120))
        .expect("the pageserver stops");
    let t = Instant::now();
    ps.spawn(overrides);
    t.elapsed()
}

fn main() {
    let bench = common::is_bench_run();
    let n: usize = std::env::var("TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 1000 } else { 20 });
    let idle_timeout = Duration::from_secs(if bench { 10 } else { 2 });
    let pinged = n.min(100);

    let pg = PgCluster::start(PgOptions::default());
    pg.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g");
    let dir = tempfile::tempdir().unwrap();
    let tar_path = pg.basebackup_tar(&dir.path().join("bb"));
    let full = std::fs::read(&tar_path).unwrap();
    let start = support::pg::backup_start_lsn(&full);
    let end: Lsn = pg.current_lsn().parse().unwrap();
    let tar = small_backup(&full);
    println!(
        "base backup: {} bytes, {} without the template databases",
        full.len(),
        tar.len()
    );

    let idle_conf = format!("walredo_idle_timeout='{}s'", idle_timeout.as_secs());
    let overrides = [idle_conf.as_str()];
    let mut ps = Pageserver::start(&overrides);
    let empty_start = restart(&mut ps, &overrides);
    std::thread::sleep(Duration::from_secs(1));
    let rss_empty = common::status_kib(ps.pid(), "VmRSS");

    let t = Instant::now();
    for i in 0..n {
        ps.create_tenant(&tenant_id(i));
        ps.import_basebackup(&tenant_id(i), TL, &tar, start, end);
    }
    let create_secs = t.elapsed().as_secs_f64();
    let layer_bytes: u64 = walk_size(&ps.workdir().join("tenants"));
    println!(
        "{n} tenants created and imported in {create_secs:.1} s ({layer_bytes} bytes on disk)"
    );

    // Redo processes: launched by a ping, gone after the idle timeout.
    for i in 0..pinged {
        let (s, body) = ps.request(
            "POST",
            &format!("/v1/tenant/{}/walredo_ping", tenant_id(i)),
            None,
        );
        assert_eq!(s, 200, "{body}");
    }
    let redo_after_ping = children(ps.pid());
    std::thread::sleep(idle_timeout + Duration::from_secs(3));
    let redo_after_idle = children(ps.pid());
    println!(
        "redo processes: {redo_after_ping} after pinging {pinged} tenants, {redo_after_idle} after {idle_timeout:?} idle"
    );

    // Restart: the first page of a random tenant, then every tenant.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pick = rand::rng().random_range(0..n);
    let ready = restart(&mut ps, &overrides);
    let t_first = Instant::now();
    let page_len = rt.block_on(first_page(&ps.pg_addr, &tenant_id(pick), start));
    let first_page_after = ready + t_first.elapsed();
    assert_eq!(page_len, 8192);
    let (s, list) = ps.json("GET", "/v1/tenant", None);
    let all_loaded = ready + t_first.elapsed();
    assert_eq!(s, 200);
    let listed = list.as_array().unwrap().len();
    assert_eq!(listed, n, "every tenant is back after the restart");
    println!(
        "restart with {n} tenants: ready {:.3} s, first page of tenant {pick} {:.3} s, all loaded {:.3} s (empty pageserver ready in {:.3} s)",
        ready.as_secs_f64(),
        first_page_after.as_secs_f64(),
        all_loaded.as_secs_f64(),
        empty_start.as_secs_f64()
    );

    std::thread::sleep(Duration::from_secs(2));
    let redo_after_restart = children(ps.pid());
    let rss_loaded = common::status_kib(ps.pid(), "VmRSS");
    let cpu0 = common::cpu_seconds(ps.pid());
    let idle_window = Duration::from_secs(if bench { 10 } else { 2 });
    std::thread::sleep(idle_window);
    let idle_cpu = (common::cpu_seconds(ps.pid()) - cpu0) / idle_window.as_secs_f64();
    let per_tenant_kib = (rss_loaded.saturating_sub(rss_empty)) as f64 / n as f64;
    println!(
        "RSS: {:.1} MiB empty, {:.1} MiB with {n} idle tenants: {per_tenant_kib:.1} KiB per tenant; idle CPU {:.1}% of a core; {redo_after_restart} redo processes",
        rss_empty as f64 / 1024.0,
        rss_loaded as f64 / 1024.0,
        idle_cpu * 100.0
    );

    assert_eq!(
        redo_after_ping, pinged,
        "one redo process per pinged tenant"
    );
    assert_eq!(
        redo_after_idle, 0,
        "redo processes of idle tenants are stopped"
    );
    assert_eq!(redo_after_restart, 0, "a restart launches no redo process");

    common::write_report(
        "tenants",
        &json!({
            "tenants": n,
            "base_backup_bytes": tar.len(),
            "bytes_on_disk": layer_bytes,
            "create_and_import_seconds": create_secs,
            "rss_empty_mib": rss_empty as f64 / 1024.0,
            "rss_idle_tenants_mib": rss_loaded as f64 / 1024.0,
            "rss_per_idle_tenant_kib": per_tenant_kib,
            "idle_cpu_fraction_of_a_core": idle_cpu,
            "walredo_idle_timeout_s": idle_timeout.as_secs(),
            "redo_processes_after_ping": redo_after_ping,
            "redo_processes_after_idle": redo_after_idle,
            "redo_processes_after_restart": redo_after_restart,
            "empty_start_ready_s": empty_start.as_secs_f64(),
            "start_ready_s": ready.as_secs_f64(),
            "start_first_page_s": first_page_after.as_secs_f64(),
            "start_all_loaded_s": all_loaded.as_secs_f64(),
            "first_page_vs_empty_start": first_page_after.as_secs_f64() / empty_start.as_secs_f64(),
            "all_loaded_per_tenant_ms": all_loaded.as_secs_f64() * 1000.0 / n as f64,
        }),
    );
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            walk_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
