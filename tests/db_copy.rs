//! CREATE DATABASE ... STRATEGY FILE_COPY through the real binary, against a real PostgreSQL 15 primary:
//! - a template changed (a table created, rows updated) right before the copy, with the WAL of both in one
//!   received message (the receiver is off while they are written, so the primary sends them together): the
//!   copy holds the template as of the CREATE DATABASE record, not as of the batch before it;
//! - a large template (pgbench scale 10) is copied in bounded memory: the pageserver's peak RSS during the
//!   copy stays far below the template's size.
//!
//! Then the follow comparison: every page of every database equals the primary's.

mod support;

use std::time::Instant;

use pageserver::pg::Lsn;
use serde_json::{Value, json};
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";
const TL: &str = "8d8d8d8d8d8d8d8d8d8d8d8d8d8d8d8d";

fn current(pg: &PgCluster) -> Lsn {
    pg.current_lsn().parse().unwrap()
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB"))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn file_copy_sees_its_batch_and_streams_a_large_template() {
    // full_page_writes off keeps each burst's WAL small, so it fits one XLogData message (128 KiB).
    let mut pg = PgCluster::start(PgOptions {
        extra_conf: vec!["full_page_writes = off".into()],
    });
    let ps = Pageserver::start(&["page_cache_size=256"]);
    pg.sql("CREATE DATABASE tpl");
    pg.sql_in(
        "tpl",
        "CREATE TABLE base AS SELECT i, repeat('b', 100) AS pad FROM generate_series(1, 2000) i",
    );
    let source = json!({"connstr": pg.connstr("postgres"), "slot_name": "ps"});
    ps.follow(
        T,
        json!({"compaction_period": "0s", "gc_period": "0s"}),
        TL,
        &pg.connstr("postgres"),
        "ps",
    );

    for round in 0..3 {
        ps.wait_ingested(T, TL, current(&pg));
        ps.set_wal_source(T, TL, Value::Null);
        let burst_start = current(&pg);
        pg.sql_in(
            "tpl",
            &format!(
                "CREATE TABLE new{round} AS SELECT i, 'r{round}' AS tag FROM generate_series(1, 50) i; \
                 UPDATE base SET pad = 'round {round}' WHERE i % 10 = {round}"
            ),
        );
        pg.sql(&format!(
            "CREATE DATABASE copy{round} TEMPLATE tpl STRATEGY FILE_COPY"
        ));
        let burst_end = current(&pg);
        println!(
            "round {round}: template change and copy in {} bytes of WAL",
            burst_end.0 - burst_start.0
        );
        ps.set_wal_source(T, TL, source.clone());
    }
    ps.wait_ingested(T, TL, current(&pg));

    // A large template, copied while the pageserver's peak RSS is measured.
    // FILE_COPY here too: a WAL_LOG copy's catalog VM pages differ by design (the page images' holes).
    pg.sql("CREATE DATABASE big STRATEGY FILE_COPY");
    pg.pgbench_init("big", 10);
    let template_bytes: u64 = pg.sql("SELECT pg_database_size('big')").parse().unwrap();
    ps.wait_ingested(T, TL, current(&pg));
    ps.checkpoint(T, TL);
    let pid = ps.pid();
    let before = status_kib(pid, "VmRSS:");
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset the peak RSS");
    let started = Instant::now();
    pg.sql("CREATE DATABASE bigcopy TEMPLATE big STRATEGY FILE_COPY");
    ps.wait_ingested(T, TL, current(&pg));
    let peak = status_kib(pid, "VmHWM:");
    let growth = peak.saturating_sub(before) * 1024;
    println!(
        "copy of a {} MiB template: RSS before {} MiB, peak {} MiB (growth {} MiB), {:?}",
        template_bytes >> 20,
        before >> 10,
        peak >> 10,
        growth >> 20,
        started.elapsed()
    );
    assert!(
        template_bytes > 100 << 20,
        "template only {template_bytes} bytes"
    );
    assert!(
        growth < template_bytes / 4,
        "peak RSS grew by {growth} bytes during the copy of a {template_bytes}-byte template"
    );

    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print("file copies");
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal["main"] > 40_000, "{:?}", cmp.equal);
}
