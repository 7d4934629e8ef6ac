//! The storage engine alone (the fake redo of `repository::testing`, so WAL redo costs are left out; see the
//! walredo bench for those): get latency for a page with 0, 10 and 100 deltas above its image, the deltas
//! spread over L0 layer files of 10 each, page cache defeated; and put throughput in MB/s including the
//! flush to a layer file, beside writing and fsyncing the same bytes to one plain file (the disk floor),
//! measured in the same run. Report: `<target>/bench-reports/repository.json`.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use pageserver::config::{HumanDuration, TenantConfig};
use pageserver::id::{TenantId, TimelineId};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::page_cache::PageCache;
use pageserver::repository::tenant::Tenant;
use pageserver::repository::testing::AppendRedo;
use pageserver::repository::timeline::Timeline;
use pageserver::repository::{Key, Value};
use pageserver::walredo::WalRecord;

fn key(rel: u32, blk: u32) -> Key {
    Key::rel_block(
        RelFileNode {
            spc: 1663,
            db: 1,
            rel,
        },
        0,
        blk,
    )
}

fn conf() -> TenantConfig {
    TenantConfig {
        checkpoint_distance: 256 * 1024 * 1024,
        compaction_period: HumanDuration::from_secs(0),
        gc_period: HumanDuration::from_secs(0),
        ..TenantConfig::default()
    }
}

/// Two keys per depth (alternated, so the one-entry page cache always misses): an 8 KiB image, then `depth`
/// 100-byte records, flushed every 10 records.
async fn build(tl: &Arc<Timeline>, depths: &[u32]) {
    let mut lsn = tl.last_record_lsn();
    let step = |lsn: &mut Lsn| {
        *lsn = Lsn(lsn.0 + 8);
        *lsn
    };
    for &depth in depths {
        for copy in 0..2 {
            let k = key(depth, copy);
            let w = tl.writer().await;
            let l = step(&mut lsn);
            w.put(k, l, &Value::Image(Bytes::from(vec![7u8; 8192])))
                .unwrap();
            w.finish_write(l, None);
            drop(w);
            for i in 0..depth {
                let w = tl.writer().await;
                let l = step(&mut lsn);
                w.put(
                    k,
                    l,
                    &Value::WalRecord(WalRecord::Postgres {
                        will_init: false,
                        rec: Bytes::from(vec![i as u8; 100]),
                    }),
                )
                .unwrap();
                w.finish_write(l, None);
                drop(w);
                if i % 10 == 9 {
                    tl.checkpoint().await.unwrap();
                }
            }
            tl.checkpoint().await.unwrap();
        }
    }
}

/// Puts `n` 8 KiB images, then flushes; returns the wall time.
async fn put_and_flush(tl: &Arc<Timeline>, n: u32) -> Duration {
    let start = Instant::now();
    let w = tl.writer().await;
    let mut lsn = tl.last_record_lsn();
    let page = Bytes::from(vec![3u8; 8192]);
    for i in 0..n {
        lsn = Lsn(lsn.0 + 8);
        w.put(key(1_000_000, i), lsn, &Value::Image(page.clone()))
            .unwrap();
        w.finish_write(lsn, None);
    }
    drop(w);
    tl.checkpoint().await.unwrap();
    start.elapsed()
}

/// Puts `n` 100-byte WAL records over `keys` keys of their own relation, in batches of 64 under one
/// `finish_write` each (as ingest publishes a message's records), the keys in a scattered order (as a WAL
/// stream touches pages), then flushes to an L0 layer; returns the wall time. The in-memory layer's per-value
/// work (encode, index, block crc) and the flush's (visit in key order, copy, index) dominate, as in ingest.
async fn put_records_and_flush(tl: &Arc<Timeline>, n: u32, keys: u32) -> Duration {
    let rec = Bytes::from(vec![5u8; 100]);
    let start = Instant::now();
    let w = tl.writer().await;
    let mut lsn = tl.last_record_lsn();
    let mut batch = Vec::with_capacity(64);
    for i in 0..n {
        lsn = Lsn(lsn.0 + 8);
        let value = Value::WalRecord(WalRecord::Postgres {
            will_init: false,
            rec: rec.clone(),
        });
        batch.push((key(2_000_000, i.wrapping_mul(7919) % keys), lsn, value));
        if batch.len() == 64 || i + 1 == n {
            w.put_batch(&batch).unwrap();
            w.finish_write(lsn, None);
            batch.clear();
        }
    }
    drop(w);
    tl.checkpoint().await.unwrap();
    start.elapsed()
}

fn main() {
    let bench = common::is_bench_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let depths = [0u32, 10, 100];
    let (tenant, tl) = rt.block_on(async {
        let tenant = Tenant::load(
            TenantId([1; 16]),
            dir.path(),
            conf(),
            Arc::new(AppendRedo),
            Arc::new(PageCache::new(1)),
            false,
        )
        .await
        .unwrap();
        let tl = tenant
            .create_timeline(
                TimelineId([2; 16]),
                Lsn(0x1000),
                pageserver::pg::PgVersion::V15,
            )
            .await
            .unwrap();
        build(&tl, &depths).await;
        (tenant, tl)
    });
    // A timeline of its own for the record puts, so that their layers do not lengthen the gets' walks.
    let records_tl = rt.block_on(async {
        tenant
            .create_timeline(
                TimelineId([3; 16]),
                Lsn(0x1000),
                pageserver::pg::PgVersion::V15,
            )
            .await
            .unwrap()
    });
    let (records, record_keys) = if bench {
        (200_000, 20_000)
    } else {
        (2_000, 200)
    };
    let at = tl.last_record_lsn();

    let mut criterion = Criterion::default().configure_from_args();
    if bench {
        criterion = criterion.measurement_time(Duration::from_secs(5));
    }
    let mut group = criterion.benchmark_group("repository_get");
    for depth in depths {
        let mut flip = 0u32;
        group.bench_function(format!("{depth}_deltas"), |b| {
            b.iter(|| {
                flip ^= 1;
                rt.block_on(tl.get(key(depth, flip), at)).unwrap()
            })
        });
    }
    group.finish();
    let mut group = criterion.benchmark_group("repository_put");
    let n = if bench { 4096 } else { 64 };
    group.throughput(Throughput::Bytes(n as u64 * 8192));
    group.sample_size(10);
    group.bench_function("8KiB_images_and_flush", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(put_and_flush(&tl, n))).sum())
    });
    group.throughput(Throughput::Elements(records as u64));
    group.bench_function("100B_records_and_flush", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(put_records_and_flush(&records_tl, records, record_keys)))
                .sum()
        })
    });
    group.finish();
    criterion.final_summary();

    // The report's pass.
    let runs = if bench { 2000 } else { 20 };
    let mut gets = Vec::new();
    for depth in depths {
        let mut lat: Vec<Duration> = (0..runs)
            .map(|i| {
                let t = Instant::now();
                rt.block_on(tl.get(key(depth, i % 2), at)).unwrap();
                t.elapsed()
            })
            .collect();
        lat.sort_unstable();
        gets.push(serde_json::json!({
            "deltas_above_image": depth,
            "p50_us": lat[lat.len() / 2].as_secs_f64() * 1e6,
            "p99_us": lat[lat.len() * 99 / 100].as_secs_f64() * 1e6,
        }));
    }
    let put_runs = if bench { 5 } else { 1 };
    let put_time = common::median_time(put_runs, || {
        rt.block_on(put_and_flush(&tl, n));
    });
    let bytes = n as f64 * 8192.0;
    let floor_time = common::median_time(put_runs, || {
        let path = dir.path().join("floor");
        let mut f = std::fs::File::create(&path).unwrap();
        let page = vec![3u8; 8192];
        for _ in 0..n {
            f.write_all(&page).unwrap();
        }
        f.sync_all().unwrap();
        std::fs::remove_file(&path).unwrap();
    });
    let cpu_before = common::cpu_seconds(std::process::id());
    let records_time = common::median_time(put_runs, || {
        rt.block_on(put_records_and_flush(&records_tl, records, record_keys));
    });
    // The whole process's CPU (the put, and the flush on a blocking thread), steadier than the wall time,
    // which includes the layer's fsync.
    let records_cpu = common::cpu_seconds(std::process::id()) - cpu_before;
    let mb = |t: Duration| bytes / (1024.0 * 1024.0) / t.as_secs_f64();
    rt.block_on(tenant.shutdown(false));
    common::write_report(
        "repository",
        &serde_json::json!({
            "get": gets,
            "put": {
                "pages": n,
                "bytes": bytes,
                "put_and_flush_mb_per_s": mb(put_time),
                "write_fsync_floor_mb_per_s": mb(floor_time),
                "ratio_to_floor": mb(put_time) / mb(floor_time),
            },
            "put_records": {
                "records": records,
                "keys": record_keys,
                "record_bytes": 100,
                "put_and_flush_records_per_s": records as f64 / records_time.as_secs_f64(),
                "ns_per_record": records_time.as_secs_f64() * 1e9 / records as f64,
                "cpu_ns_per_record": records_cpu * 1e9 / (records as f64 * put_runs as f64),
            },
            "note": "fake redo (records are appended), page cache of one entry alternated between two keys, so every get walks the layers",
        }),
    );
}
