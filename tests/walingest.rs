//! WAL ingest end to end without the network: a primary's base backup is imported, its own WAL segments are
//! decoded and ingested (with the real sandboxed WAL redo), and after a clean stop every block of every main,
//! vm and init fork, and every pg_xact and pg_multixact page, is compared with the primary's files.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pageserver::config::TenantConfig;
use pageserver::id::{TenantId, TimelineId};
use pageserver::pg::lsn::wal_file_name;
use pageserver::pg::{Lsn, WalStreamDecoder, decode_record};
use pageserver::repository::page_cache::PageCache;
use pageserver::repository::tenant::Tenant;
use pageserver::walingest::WalIngest;
use pageserver::walredo::{PostgresRedoManager, RedoConfig};
use support::compare::{Comparison, compare_relations, compare_slru};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ingest_workload};

const SEG: u32 = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_wal_reproduces_the_primary() {
    let bundle = pageserver::walredo::bundle_from_env().expect("PAGESERVER_WALREDO_BUNDLE");
    let (pg, _backup_dir, tar, start, wal_log_db) = tokio::task::spawn_blocking(|| {
        let mut conf: Vec<String> = WORKLOAD_CONF.iter().map(|s| s.to_string()).collect();
        conf.push("wal_keep_size = '4GB'".into());
        let mut pg = PgCluster::start(PgOptions { extra_conf: conf });
        // Removed when the test ends.
        let dir = tempfile::tempdir().unwrap();
        let tar = pg.basebackup_tar(&dir.path().join("bb"));
        let start = support::pg::backup_start_lsn(&std::fs::read(&tar).unwrap());
        let wal_log_db = ingest_workload(&pg, "ing");
        pg.stop();
        (pg, dir, tar, start, wal_log_db)
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let redo = Arc::new(
        PostgresRedoManager::new(
            &RedoConfig {
                bundle_dir: bundle,
                binary_name: "postgres".into(),
                run_as_user: "nobody".into(),
                pool_size: 2,
                idle_timeout: Duration::ZERO,
                request_timeout: Duration::from_secs(30),
                reply_wait: pageserver::config::NodeConfig::default()
                    .wal_redo_reply_wait
                    .get(),
                empty_root: true,
            },
            tracing::Span::none(),
        )
        .unwrap(),
    );
    let tenant = Tenant::load(
        TenantId([9; 16]),
        dir.path(),
        // Small layers: many freezes, and no background flush (tasks off), so only ingest's wait on the
        // flush backlog keeps the frozen layers bounded.
        TenantConfig {
            checkpoint_distance: 1 << 20,
            ..TenantConfig::default()
        },
        redo.clone(),
        Arc::new(PageCache::new(1024)),
        false,
    )
    .await
    .unwrap();
    let tl = tenant
        .create_timeline(TimelineId([8; 16]), Lsn(0), pageserver::pg::PgVersion::V15)
        .await
        .unwrap();
    pageserver::import::datadir::import_tar(&tl, std::fs::File::open(&tar).unwrap(), start, None)
        .await
        .unwrap();

    let end: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    let segments: Vec<PathBuf> = (start.segment_number(SEG)..=end.segment_number(SEG))
        .map(|s| pg.wal_dir().join(wal_file_name(1, s, SEG)))
        .collect();
    let mut decoder = WalStreamDecoder::new(start, SEG, pageserver::pg::PgVersion::V15).unwrap();
    let mut ingest = WalIngest::new(tl.clone());
    let mut first = true;
    let mut records = 0u64;
    let mut max_frozen = 0;
    for seg in &segments {
        let mut data = std::fs::read(seg).unwrap();
        if first {
            data.drain(..start.segment_offset(SEG) as usize);
            first = false;
        }
        decoder.feed(data.into());
        let mut batch = Vec::new();
        loop {
            match decoder.poll_decode() {
                Ok(Some(raw)) => {
                    batch.push(decode_record(&raw).unwrap());
                    if batch.len() == 100 {
                        ingest.ingest_batch(&batch).await.unwrap();
                        records += batch.len() as u64;
                        batch.clear();
                        max_frozen = max_frozen.max(tl.frozen_layers());
                    }
                }
                Ok(None) => break,
                Err(e) if e.is_end_of_wal() => break,
                Err(e) => panic!("{e}"),
            }
        }
        records += batch.len() as u64;
        ingest.ingest_batch(&batch).await.unwrap();
    }
    let last = tl.last_record_lsn();
    println!(
        "ingested {records} records from {start} to {last}; at most {max_frozen} frozen layers after a batch"
    );
    assert!(
        max_frozen < pageserver::repository::timeline::MAX_FROZEN_LAYERS,
        "ingest ran ahead of the flush: {max_frozen} frozen layers"
    );

    let mut cmp = Comparison::default();
    compare_relations(tl.as_ref(), last, pg.data_dir(), &[wal_log_db], &mut cmp).await;
    compare_slru(tl.as_ref(), last, pg.data_dir(), &mut cmp).await;
    println!(
        "relations: {}; equal blocks: {:?}; tolerated: {:?}; mismatches: {}",
        cmp.relations,
        cmp.equal,
        cmp.tolerated,
        cmp.mismatches.len()
    );
    for m in cmp.mismatches.iter().take(15) {
        println!("  {m}");
    }
    tenant.shutdown(false).await;
    redo.shutdown().await;
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
}
