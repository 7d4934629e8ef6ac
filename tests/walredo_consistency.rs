//! WAL redo checked the way PostgreSQL's `wal_consistency_checking` checks a standby: a primary with
//! `wal_consistency_checking = all` logs, with every record, the image of each block after the change. For
//! every such block, redo of the record on the block's previous image (through the real sandboxed
//! `postgres --wal-redo`) must equal that image after masking. Visibility-map pages are followed through the
//! Rust-applied bit clears of heap records, so the next image of a VM page also checks the Rust path.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pageserver::pg::constants::{RM_HEAP_ID, RM_HEAP2_ID, VISIBILITYMAP_FORKNUM, rmgr_name};
use pageserver::pg::lsn::wal_file_name;
use pageserver::pg::mask::{PageKind, has_mask, mask_for_comparison, mask_page};
use pageserver::pg::records::RecordBody;
use pageserver::pg::{Lsn, parse_body};
use pageserver::walingest::PageChange;
use pageserver::walingest::vm::vm_changes;
use pageserver::walredo::{
    BufferTag, PageId, PostgresRedoManager, RedoConfig, RedoManager, RedoRequest, WalRecord, native,
};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ddl_mix};
use tokio::sync::Semaphore;

const SEG_SIZE: u32 = 16 * 1024 * 1024;

fn masked(rmid: u8, tag: &BufferTag, page: &[u8]) -> Vec<u8> {
    let mut p = page.to_vec();
    if !has_mask(rmid) {
        // XLOG's full-page images have no rm_mask: they must restore exactly, but for LSN and checksum.
        mask_for_comparison(tag.forknum, tag.blkno, PageKind::Raw, &mut p).unwrap();
    } else if tag.forknum == VISIBILITYMAP_FORKNUM {
        // heap_mask would blank the whole map as unused space: compare the map, masking LSN and checksum.
        mask_for_comparison(tag.forknum, tag.blkno, PageKind::VisibilityMap, &mut p).unwrap();
    } else {
        mask_page(rmid, tag.blkno, &mut p).unwrap();
    }
    p
}

struct Check {
    rmgr: String,
    tag: BufferTag,
    lsn: Lsn,
    request: RedoRequest,
    expected: Vec<u8>,
    rmid: u8,
    /// The previous image had Rust-applied VM clears on it.
    rust_path: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redo_matches_wal_consistency_images() {
    let bundle = pageserver::walredo::bundle_from_env().expect(
        "PAGESERVER_WALREDO_BUNDLE must name a built walredo bundle (scripts/test.sh sets it)",
    );
    // `_wal` holds the copied segments (about 2 GB) and removes them when the test ends.
    let (_wal, segments) = tokio::task::spawn_blocking(run_primary).await.unwrap();

    let mut state: HashMap<BufferTag, (Bytes, bool)> = HashMap::new();
    let mut checks: Vec<Check> = Vec::new();
    let mut no_previous = 0u64;
    pageserver::waldump::for_each_record(&segments, |rec| {
        let body =
            parse_body(rec, pageserver::pg::PgVersion::V15).unwrap_or_else(|e| panic!("{e}"));
        for b in &rec.blocks {
            let tag = BufferTag {
                rnode: b.rnode,
                forknum: b.forknum,
                blkno: b.blkno,
            };
            let Some(image) = &b.image else {
                state.remove(&tag);
                continue;
            };
            let after = image.restore().unwrap();
            let will_init = b.will_init() || b.apply_image();
            let previous = state.get(&tag).cloned();
            if previous.is_some() || will_init {
                let (base, rust_path) = match previous {
                    Some((p, r)) if !will_init => (Some(p), r),
                    _ => (None, false),
                };
                checks.push(Check {
                    rmgr: rmgr_name(rec.rmid()),
                    tag,
                    lsn: rec.lsn,
                    request: RedoRequest {
                        pg_version: pageserver::pg::PgVersion::V15,
                        page: PageId::Rel(tag),
                        base_image: base,
                        records: vec![(
                            rec.end_lsn,
                            WalRecord::Postgres {
                                will_init,
                                rec: rec.raw.clone(),
                            },
                        )],
                    },
                    expected: masked(rec.rmid(), &tag, &after),
                    rmid: rec.rmid(),
                    rust_path,
                });
            } else {
                no_previous += 1;
            }
            state.insert(tag, (Bytes::from(after), false));
        }
        // The Rust path: VM bits cleared by heap records, applied on the VM page we follow.
        if let RecordBody::Heap(heap) = &body
            && (rec.rmid() == RM_HEAP_ID || rec.rmid() == RM_HEAP2_ID)
        {
            for change in vm_changes(rec, heap) {
                if let PageChange::Record(id @ PageId::Rel(tag), record) = change
                    && let Some((page, _)) = state.get(&tag)
                {
                    let mut p = page.to_vec();
                    native::apply(id, &mut p, &record).unwrap();
                    state.insert(tag, (Bytes::from(p), true));
                }
            }
        }
        if let RecordBody::SmgrTruncate(t) = &body {
            // Truncated forks are not followed further.
            state.retain(|tag, _| tag.rnode != t.rnode);
        }
        Ok(())
    })
    .unwrap();

    let manager = Arc::new(
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
    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, check) in checks.into_iter().enumerate() {
        let permit = limit.clone().acquire_owned().await.unwrap();
        let manager = manager.clone();
        tasks.spawn(async move {
            let page = manager.redo(check.request.clone()).await;
            drop(permit);
            (i, check, page)
        });
    }
    let mut per_rmgr: BTreeMap<String, u64> = BTreeMap::new();
    let mut rust_path = 0u64;
    let mut mismatches = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (_, check, page) = joined.unwrap();
        let page =
            page.unwrap_or_else(|e| panic!("redo of {} at {} failed: {e}", check.rmgr, check.lsn));
        if masked(check.rmid, &check.tag, &page) != check.expected {
            mismatches.push(format!(
                "{} record at {} on {:?}",
                check.rmgr, check.lsn, check.tag
            ));
        } else {
            *per_rmgr.entry(check.rmgr.clone()).or_default() += 1;
            if check.rust_path {
                rust_path += 1;
            }
        }
    }
    manager.shutdown().await;
    println!(
        "records' block images checked against redo, per rmgr: {per_rmgr:?}; VM pages with Rust-applied \
         clears verified: {rust_path}; blocks first seen without an image (not checkable): {no_previous}; \
         mismatches: {}",
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    for rmgr in [
        "Heap", "Heap2", "Btree", "Hash", "Gin", "Gist", "SPGist", "BRIN", "Sequence",
    ] {
        assert!(
            per_rmgr.get(rmgr).copied().unwrap_or(0) > 0,
            "no {rmgr} record checked: {per_rmgr:?}"
        );
    }
    assert!(
        rust_path > 0,
        "no VM page with Rust-applied clears was verified"
    );
}

/// A primary with wal_consistency_checking = all runs pgbench and the DDL mix; returns its WAL segments, copied
/// into a temp dir that is removed when dropped.
fn run_primary() -> (tempfile::TempDir, Vec<PathBuf>) {
    let mut conf: Vec<String> = WORKLOAD_CONF.iter().map(|s| s.to_string()).collect();
    conf.push("wal_consistency_checking = 'all'".into());
    let mut pg = PgCluster::start(PgOptions { extra_conf: conf });
    pg.create_physical_slot("keep");
    // After this checkpoint, the first change of every page carries its full image.
    pg.sql("CHECKPOINT");
    let start: Lsn = pg
        .sql("SELECT redo_lsn FROM pg_control_checkpoint()")
        .parse()
        .unwrap();
    pg.pgbench_init("postgres", 1);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "200"]);
    ddl_mix(&pg, "cc");
    // VACUUM sets visibility-map bits; updates and deletes then clear them (Rust-applied), and a second
    // VACUUM sets them again on the page we followed.
    for round in 0..4 {
        pg.sql("VACUUM pgbench_accounts");
        pg.sql("VACUUM ddl_cc");
        pg.sql(&format!(
            "UPDATE pgbench_accounts SET filler = 'r{round}' WHERE aid % 97 = {round}"
        ));
        pg.sql(&format!("DELETE FROM ddl_cc WHERE id % 11 = {round}"));
    }
    pg.sql("VACUUM pgbench_accounts");
    pg.sql("VACUUM ddl_cc");
    pg.stop();
    let end: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("cc-wal-")
        .tempdir()
        .unwrap();
    let segments = (start.segment_number(SEG_SIZE)..=end.segment_number(SEG_SIZE))
        .map(|s| {
            let name = wal_file_name(1, s, SEG_SIZE);
            let to = dir.path().join(&name);
            std::fs::copy(pg.wal_dir().join(&name), &to).unwrap();
            to
        })
        .collect();
    (dir, segments)
}
