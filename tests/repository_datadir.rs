//! PostgreSQL-level reads of a timeline: databases, relations, existence, sizes, SLRU segments, two-phase
//! files, database size, at different LSNs and through a branch.

use std::collections::BTreeSet;
use std::sync::Arc;

use pageserver::config::TenantConfig;
use pageserver::id::{TenantId, TimelineId};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::datadir::*;
use pageserver::repository::page_cache::PageCache;
use pageserver::repository::tenant::Tenant;
use pageserver::repository::testing::AppendRedo;
use pageserver::repository::{Key, Value};
use pageserver::walredo::SlruKind;

#[tokio::test]
async fn directories_sizes_and_existence() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = Tenant::load(
        TenantId([3; 16]),
        dir.path(),
        TenantConfig::default(),
        Arc::new(AppendRedo),
        Arc::new(PageCache::new(16)),
        false,
    )
    .await
    .unwrap();
    let tl = tenant
        .create_timeline(
            TimelineId([4; 16]),
            Lsn(0x100),
            pageserver::pg::PgVersion::V15,
        )
        .await
        .unwrap();
    let rel = RelFileNode {
        spc: 1663,
        db: 5,
        rel: 16384,
    };
    let put = |lsn: u64, key: Key, bytes: bytes::Bytes| {
        let tl = tl.clone();
        async move {
            let w = tl.writer().await;
            w.put(key, Lsn(lsn), &Value::Image(bytes)).unwrap();
            w.finish_write(Lsn(lsn), None);
        }
    };
    let mut dbs = DbDirectory::new();
    dbs.insert((1663, 5), true);
    put(0x108, Key::dbdir(), encode_db_dir(&dbs)).await;
    put(
        0x110,
        Key::reldir(1663, 5),
        encode_rel_dir(&[(16384, 0), (16384, 2)].into_iter().collect()),
    )
    .await;
    put(0x118, Key::rel_size(rel, 0), encode_nblocks(10)).await;
    put(0x120, Key::rel_size(rel, 2), encode_nblocks(1)).await;
    put(
        0x128,
        Key::slru_dir(SlruKind::Clog),
        encode_u32_set(&[0u32].into_iter().collect()),
    )
    .await;
    put(
        0x130,
        Key::slru_segment_size(SlruKind::Clog, 0),
        encode_nblocks(3),
    )
    .await;
    put(
        0x138,
        Key::twophase_dir(),
        encode_u64_set(&[777u64].into_iter().collect()),
    )
    .await;
    put(0x140, Key::rel_size(rel, 0), encode_nblocks(12)).await;
    tl.checkpoint().await.unwrap();

    let at = Lsn(0x140);
    assert_eq!(tl.list_dbdirs(at).await.unwrap(), dbs);
    assert!(tl.rel_exists(rel, 0, at).await.unwrap());
    assert!(
        !tl.rel_exists(rel, 1, at).await.unwrap(),
        "no FSM fork was created"
    );
    assert!(
        !tl.rel_exists(RelFileNode { db: 6, ..rel }, 0, at)
            .await
            .unwrap()
    );
    assert_eq!(tl.rel_size(rel, 0, at).await.unwrap(), 12);
    assert_eq!(
        tl.rel_size(rel, 0, Lsn(0x13F)).await.unwrap(),
        10,
        "the size as of an earlier LSN"
    );
    assert!(matches!(
        tl.rel_size(rel, 1, at).await,
        Err(DatadirError::NoRelation { .. })
    ));
    assert_eq!(tl.db_size(1663, 5, at).await.unwrap(), 13 * 8192);
    assert_eq!(
        tl.list_slru_segments(SlruKind::Clog, at).await.unwrap(),
        [0u32].into_iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        tl.slru_segment_size(SlruKind::Clog, 0, at).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        tl.list_twophase(at).await.unwrap(),
        [777u64].into_iter().collect::<BTreeSet<_>>()
    );
    assert!(
        tl.list_dbdirs(Lsn(0x100)).await.unwrap().is_empty(),
        "nothing before the first database"
    );

    // A branch below the last size change sees the older size, and its own changes.
    let child = tenant
        .branch_timeline(TimelineId([5; 16]), tl.timeline_id, Some(Lsn(0x138)))
        .await
        .unwrap();
    assert_eq!(child.rel_size(rel, 0, Lsn(0x138)).await.unwrap(), 10);
    {
        let w = child.writer().await;
        w.put(
            Key::rel_size(rel, 0),
            Lsn(0x150),
            &Value::Image(encode_nblocks(20)),
        )
        .unwrap();
        w.finish_write(Lsn(0x150), None);
    }
    assert_eq!(child.rel_size(rel, 0, Lsn(0x150)).await.unwrap(), 20);
    assert_eq!(
        tl.rel_size(rel, 0, Lsn(0x140)).await.unwrap(),
        12,
        "the parent is unchanged"
    );
    tenant.shutdown(false).await;
}

/// Relation sizes answered from the timeline's size cache equal what the layers hold, at every LSN: before a
/// size's change and after it, while a put is not yet published, and after a restart (when the cache starts
/// empty and a read below the last record must not teach it an old size).
#[tokio::test]
async fn relation_sizes_from_the_cache_equal_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let load = || {
        Tenant::load(
            TenantId([5; 16]),
            dir.path(),
            TenantConfig::default(),
            Arc::new(AppendRedo),
            Arc::new(PageCache::new(16)),
            false,
        )
    };
    let id = TimelineId([6; 16]);
    let rel = RelFileNode {
        spc: 1663,
        db: 5,
        rel: 16385,
    };
    let key = Key::rel_size(rel, 0);
    let tenant = load().await.unwrap();
    let tl = tenant
        .create_timeline(id, Lsn(0x100), pageserver::pg::PgVersion::V15)
        .await
        .unwrap();
    let put = |tl: Arc<pageserver::repository::timeline::Timeline>,
               lsn: u64,
               n: u32,
               publish: bool| async move {
        let w = tl.writer().await;
        w.put(key, Lsn(lsn), &Value::Image(encode_nblocks(n)))
            .unwrap();
        if publish {
            w.finish_write(Lsn(lsn), None);
        }
    };
    put(tl.clone(), 0x108, 5, true).await;
    put(tl.clone(), 0x110, 7, true).await;
    // At the last record (cached from here on), then below it.
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x110)).await.unwrap(), 7);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x10f)).await.unwrap(), 5);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x108)).await.unwrap(), 5);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x110)).await.unwrap(), 7);
    // A size put and not yet published does not change reads at the published LSNs.
    put(tl.clone(), 0x120, 9, false).await;
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x110)).await.unwrap(), 7);
    tl.writer().await.finish_write(Lsn(0x120), None);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x118)).await.unwrap(), 7);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x120)).await.unwrap(), 9);
    put(tl.clone(), 0x128, 4, true).await;
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x128)).await.unwrap(), 4);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x120)).await.unwrap(), 9);
    tl.checkpoint().await.unwrap();
    tenant.shutdown(true).await;
    drop(tl);

    // After a restart: a read below the last record first, then reads above that size's version.
    let tenant = load().await.unwrap();
    let tl = tenant.timeline(id).unwrap();
    assert_eq!(tl.last_record_lsn(), Lsn(0x128));
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x110)).await.unwrap(), 7);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x120)).await.unwrap(), 9);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x128)).await.unwrap(), 4);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x121)).await.unwrap(), 9);
    put(tl.clone(), 0x130, 11, true).await;
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x130)).await.unwrap(), 11);
    assert_eq!(tl.rel_size(rel, 0, Lsn(0x128)).await.unwrap(), 4);
    tenant.shutdown(true).await;
}
