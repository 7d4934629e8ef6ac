//! Decoding speed of a real 16 MiB pgbench WAL segment, beside `pg_waldump --stats` on the same file,
//! measured in the same run. Report: `<target>/bench-reports/wal_decode.json`.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use pageserver::pg::lsn::wal_file_name;
use pageserver::pg::{Lsn, WalStreamDecoder, decode_record, parse_body};
use support::pg::{PgCluster, PgOptions};

const SEG_SIZE: u32 = 16 * 1024 * 1024;

/// Decodes every record of the segment fully (records, block references, bodies); returns the count. The
/// segment is fed as it is read from a file, an owned buffer.
fn decode_segment(start: Lsn, segment: Vec<u8>) -> u64 {
    let mut decoder =
        WalStreamDecoder::new(start, SEG_SIZE, pageserver::pg::PgVersion::V15).unwrap();
    decoder.feed(segment.into());
    let mut n = 0;
    while let Ok(Some(raw)) = decoder.poll_decode() {
        let rec = decode_record(&raw).unwrap();
        let _ = std::hint::black_box(parse_body(&rec, pageserver::pg::PgVersion::V15));
        n += 1;
    }
    n
}

fn main() {
    let bench = common::is_bench_run();
    // A primary running pgbench; a full segment written by the pgbench run (not by its initial load).
    let mut pg = PgCluster::start(PgOptions::default());
    pg.create_physical_slot("bench");
    pg.pgbench_init("postgres", 5);
    pg.sql("CHECKPOINT");
    let run_start: Lsn = pg.current_lsn().parse().unwrap();
    let segno = run_start.segment_number(SEG_SIZE) + 1;
    while pg
        .current_lsn()
        .parse::<Lsn>()
        .unwrap()
        .segment_number(SEG_SIZE)
        <= segno
    {
        pg.pgbench("postgres", &["-n", "-c", "2", "-t", "2000"]);
    }
    pg.stop();
    let name = wal_file_name(1, segno, SEG_SIZE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(&name);
    std::fs::copy(pg.wal_dir().join(&name), &path).unwrap();
    let segment = std::fs::read(&path).unwrap();
    let start = Lsn(segno * SEG_SIZE as u64);
    let records = decode_segment(start, segment.clone());

    let runs = if bench { 15 } else { 1 };
    let pg_waldump = pg.program("pg_waldump");
    let theirs = common::median_time(runs, || {
        let out = Command::new(&pg_waldump)
            .arg("--stats")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Total"),
            "pg_waldump --stats printed no totals"
        );
    });
    // Ours: read the file and decode it, as pg_waldump does (minus its process start).
    let ours = common::median_time(runs * 4, || {
        std::hint::black_box(decode_segment(start, std::fs::read(&path).unwrap()));
    });

    let mut criterion = Criterion::default().configure_from_args();
    if bench {
        criterion = criterion.measurement_time(Duration::from_secs(10));
    }
    let mut group = criterion.benchmark_group("wal_decode");
    group.throughput(Throughput::Bytes(segment.len() as u64));
    group.bench_function("pgbench_segment", |b| {
        b.iter_batched(
            || segment.clone(),
            |s| decode_segment(start, s),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
    criterion.final_summary();

    let mb = segment.len() as f64 / (1024.0 * 1024.0);
    let ours_mbs = mb / ours.as_secs_f64();
    let theirs_mbs = mb / theirs.as_secs_f64();
    common::write_report(
        "wal_decode",
        &serde_json::json!({
            "segment": name,
            "segment_bytes": segment.len(),
            "records": records,
            "pageserver_decode_ms": ours.as_secs_f64() * 1e3,
            "pageserver_decode_mb_per_s": ours_mbs,
            "pg_waldump_stats_ms": theirs.as_secs_f64() * 1e3,
            "pg_waldump_stats_mb_per_s": theirs_mbs,
            "ratio_pageserver_to_pg_waldump": ours_mbs / theirs_mbs,
            "note": "both read the segment file and decode every record; pg_waldump also starts a process and keeps --stats counters, ours also parses record bodies",
        }),
    );
}
