//! Hostile WAL inside `postgres --wal-redo`, through the real binary. Tenant A's WAL source (a fake
//! walsender: no real PostgreSQL writes such records) sends CRC-valid heap records on pages of pg_class that
//! ingest accepts but that make PostgreSQL's redo routine give up mid-page:
//! - an INSERT at item 1000 of a page with far fewer items ("invalid max offset number");
//! - an INSERT of a 6,000-byte tuple over item 1, which is in use ("failed to add tuple");
//! - a DELETE of item 200, which the page does not hold: the record's block reference lies about the page
//!   ("invalid lp").
//!
//! Each read of such a page fails with an error naming the redo failure, the process that replayed it is gone
//! and the next one serves A's good pages; the pageserver keeps running. Tenant B, which follows a real
//! primary and whose pages need redo of many records (the page cache holds one page, so every read of B is a
//! redo in B's own process), is read through pagestream_v3 the whole time: every page
//! equals the one read before the attack, and its p50 and p99 latency during the attack are printed beside the
//! same figures measured just before it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pageserver::page_service::client::PageServiceClient;
use pageserver::page_service::pagestream::{
    Request, RequestBody, RequestHeader, ResponseBody, Version,
};
use pageserver::pg::walgen::encode_record_body;
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::Key;
use serde_json::{Value, json};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};
use support::walsender::fake_walsender;

const A: &str = "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0";
const B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
const TL: &str = "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0";
const PG_CLASS: RelFileNode = RelFileNode {
    spc: 1663,
    db: 5,
    rel: 1259,
};

/// A heap record (rmgr 10) on block `blkno` of pg_class with `block_data` and `main_data`.
fn heap_record(prev: Lsn, info: u8, blkno: u32, block_data: &[u8], main_data: &[u8]) -> Vec<u8> {
    // Block 0, main fork, BKPBLOCK_HAS_DATA when there is data (PostgreSQL refuses the flag without it).
    let flags = if block_data.is_empty() { 0 } else { 0x20 };
    let mut body = vec![0u8, flags];
    body.extend_from_slice(&(block_data.len() as u16).to_le_bytes());
    for v in [PG_CLASS.spc, PG_CLASS.db, PG_CLASS.rel, blkno] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(&[255, main_data.len() as u8]);
    body.extend_from_slice(block_data);
    body.extend_from_slice(main_data);
    encode_record_body(10, info, 1000, prev, &body)
}

/// xl_heap_header (t_infomask2, t_infomask, t_hoff) and `len` bytes of tuple data.
fn tuple(len: usize) -> Vec<u8> {
    let mut data = vec![1, 0, 0x02, 0x08, 24]; // one attribute; HEAP_XMAX_INVALID; t_hoff 24
    data.resize(5 + len, 0x41);
    data
}

struct Hostile {
    what: &'static str,
    /// The block of pg_class the record is on.
    blkno: u32,
    record: fn(Lsn, u32) -> Vec<u8>,
}

const HOSTILE: [Hostile; 3] = [
    Hostile {
        what: "insert at item 1000",
        blkno: 0,
        record: |prev, blkno| heap_record(prev, 0x00, blkno, &tuple(16), &[0xE8, 0x03, 0]),
    },
    Hostile {
        what: "6,000-byte tuple over item 1",
        blkno: 1,
        record: |prev, blkno| heap_record(prev, 0x00, blkno, &tuple(6000), &[1, 0, 0]),
    },
    Hostile {
        what: "delete of item 200",
        blkno: 2,
        // xl_heap_delete: xmax 1000, offnum 200, infobits 0, flags 0
        record: |prev, blkno| heap_record(prev, 0x10, blkno, &[], &[0xE8, 3, 0, 0, 200, 0, 0, 0]),
    },
];

fn detail(ps: &Pageserver, tenant: &str) -> Value {
    let (s, info) = ps.json("GET", &format!("/v1/tenant/{tenant}/timeline/{TL}"), None);
    assert_eq!(s, 200, "{info}");
    info
}

fn redo_pids(ps: &Pageserver, tenant: &str) -> Vec<u64> {
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{tenant}"), None);
    info["walredo"]["pids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn getpage_http(ps: &Pageserver, tenant: &str, blkno: u32) -> (u16, Vec<u8>) {
    ps.get_bytes(&format!(
        "/v1/tenant/{tenant}/timeline/{TL}/getpage?key={}",
        Key::rel_block(PG_CLASS, 0, blkno)
    ))
}

/// Streams each hostile record into A in turn and waits until ingest has it.
fn feed_hostile_wal(ps: &Pageserver) {
    let sysid = detail(ps, A)["wal_archive"]["system_identifier"]
        .as_u64()
        .expect("the archive knows its system");
    for h in &HOSTILE {
        let info = detail(ps, A);
        let last: Lsn = info["last_record_lsn"].as_str().unwrap().parse().unwrap();
        // The new record's xl_prev: the start of the timeline's last record.
        let prev: Lsn = info["prev_record_lsn"].as_str().unwrap().parse().unwrap();
        let blkno = h.blkno;
        let record = h.record;
        let port = fake_walsender(sysid, prev, move |prev| record(prev, blkno));
        ps.set_wal_source(
            A,
            TL,
            json!({"connstr": format!("host=127.0.0.1 port={port} user=u sslmode=disable"),
                   "slot_name": "ps"}),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = detail(ps, A);
            let now: Lsn = info["last_record_lsn"].as_str().unwrap().parse().unwrap();
            if now > last {
                break;
            }
            assert!(Instant::now() < deadline, "{} not ingested: {info}", h.what);
            std::thread::sleep(Duration::from_millis(50));
        }
        ps.set_wal_source(A, TL, Value::Null);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn hostile_wal_kills_only_its_tenants_redo_and_b_reads_on() {
    // Tenant B follows a real primary; its table's first blocks carry many records each (HOT updates), so
    // every read of them is a redo.
    let pg = PgCluster::start(PgOptions::default());
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, n int, pad text) WITH (fillfactor = 50)");
    pg.sql("INSERT INTO t SELECT g, 0, repeat('x', 200) FROM generate_series(1, 400) g");
    // A page cache of one page: B's reads, round robin over its blocks, are all redone, none served from it.
    let ps = Pageserver::start(&["page_cache_size=1"]);
    ps.follow(B, json!({}), TL, &pg.connstr("postgres"), "ps_b");
    for round in 0..20 {
        pg.sql(&format!(
            "UPDATE t SET n = {round} WHERE id % 20 = {}",
            round % 20
        ));
    }
    let lsn: Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(B, TL, lsn);
    let rel: u32 = pg.sql("SELECT pg_relation_filenode('t')").parse().unwrap();
    let db: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();
    let nblocks: u32 = pg
        .sql("SELECT pg_relation_size('t') / 8192")
        .parse()
        .unwrap();
    let t_rel = RelFileNode { spc: 1663, db, rel };

    // Tenant A: initdb's pages, then the hostile records on three pages of pg_class.
    ps.create_tenant(A);
    ps.bootstrap(A, TL);
    let good_a = getpage_http(&ps, A, 3);
    assert_eq!(good_a.0, 200);
    feed_hostile_wal(&ps);

    // B's reader: pagestream_v3 at `lsn`, every block in turn, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let attack = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, attack, addr) = (stop.clone(), attack.clone(), ps.pg_addr.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = PageServiceClient::connect(&addr).await.unwrap();
                let mut session = client
                    .pagestream(Version::V3, B, TL)
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap();
                let mut first: Vec<Option<bytes::Bytes>> = vec![None; nblocks as usize];
                let (mut before, mut during) = (Vec::new(), Vec::new());
                let mut mismatches = 0;
                let mut reqid = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let blkno = (reqid % nblocks as u64) as u32;
                    reqid += 1;
                    let req = Request {
                        hdr: RequestHeader {
                            reqid,
                            request_lsn: lsn,
                            not_modified_since: lsn,
                        },
                        body: RequestBody::GetPage {
                            rel: t_rel,
                            fork: 0,
                            blkno,
                        },
                    };
                    let under_attack = attack.load(Ordering::Relaxed);
                    let started = Instant::now();
                    let resp = session.request(&req).await.unwrap();
                    let took = started.elapsed();
                    let ResponseBody::GetPage(page) = resp else {
                        panic!("block {blkno}: {resp:?}");
                    };
                    match &first[blkno as usize] {
                        None => first[blkno as usize] = Some(page),
                        Some(p) if *p != page => mismatches += 1,
                        Some(_) => {}
                    }
                    if under_attack {
                        &mut during
                    } else {
                        &mut before
                    }
                    .push(took);
                }
                (before, during, mismatches)
            })
        })
    };

    // Before: B alone for 3 s. During: A's damaged pages read over and over for 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let b_pids = redo_pids(&ps, B);
    assert!(!b_pids.is_empty(), "B's reads use redo");
    attack.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut failures = 0;
    let mut a_pids_seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(3) || failures < 3 * HOSTILE.len() {
        for h in &HOSTILE {
            let (status, body) = getpage_http(&ps, A, h.blkno);
            let text = String::from_utf8_lossy(&body);
            assert!(
                status >= 500,
                "{}: a damaged page was served ({status})",
                h.what
            );
            assert!(text.contains("redo"), "{}: {status} {text}", h.what);
            if failures < HOSTILE.len() {
                println!("tenant A, {}: {status} {text}", h.what);
            }
            failures += 1;
            // "... redo process <pid> died ...": every failed read had a process of its own.
            if let Some(pid) = text
                .split("redo process ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                a_pids_seen.insert(pid.to_string());
            }
            // A's good pages are still served, by a new process.
            assert_eq!(getpage_http(&ps, A, 3), good_a);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (mut before, mut during, mismatches) = reader.join().unwrap();
    assert_eq!(mismatches, 0, "tenant B got a wrong page");
    assert_eq!(
        redo_pids(&ps, B),
        b_pids,
        "B's redo processes were not touched"
    );
    assert_eq!(
        a_pids_seen.len(),
        failures,
        "each failed read of A killed its own process: {a_pids_seen:?}"
    );
    before.sort();
    during.sort();
    let (p50b, p99b) = (percentile(&before, 0.5), percentile(&before, 0.99));
    let (p50d, p99d) = (percentile(&during, 0.5), percentile(&during, 0.99));
    println!(
        "tenant B: {} reads before, p50 {p50b:?} p99 {p99b:?}; {} reads during {failures} failed reads of A, \
         p50 {p50d:?} p99 {p99d:?}",
        before.len(),
        during.len()
    );
    // Two cores run A's process restarts and B's reads: allow for that, but not for B waiting on A.
    assert!(
        p99d <= p99b * 4 + Duration::from_millis(20),
        "B's p99 went from {p99b:?} to {p99d:?}"
    );
    // PostgreSQL's own words for each record, from the redo processes' log lines.
    let log = ps.log_text();
    for reason in [
        "invalid max offset number",
        "failed to add tuple",
        "invalid lp",
    ] {
        assert!(log.contains(reason), "no {reason:?} in the log");
    }
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(ps.json("GET", "/v1/status", None).0, 200);
}
