//! The repository against a BTreeMap model: random sequences of put / get / branch / flush / compact / gc /
//! clean restart / crash, with the deterministic fake redo (a page is its base image followed by its
//! records' bytes). Every get must return the model's answer, or the GC error where the model's cutoff says
//! the version is gone. A crash loses exactly what was above disk_consistent_lsn.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use pageserver::config::{HumanDuration, TenantConfig};
use pageserver::id::{TenantId, TimelineId};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::page_cache::PageCache;
use pageserver::repository::tenant::Tenant;
use pageserver::repository::testing::{AppendRedo, relation_directory};
use pageserver::repository::timeline::GetError;
use pageserver::repository::{Key, Value};
use pageserver::walredo::{BufferTag, PageId, RedoRequest, WalRecord};
use proptest::prelude::*;

const KEYS: u32 = 24;

const REL: RelFileNode = RelFileNode {
    spc: 1663,
    db: 5,
    rel: 16384,
};

fn key(i: u32) -> Key {
    Key::rel_block(REL, 0, i)
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        tl: usize,
        keys: Vec<(u32, u8, Vec<u8>)>,
    },
    Get {
        tl: usize,
        key: u32,
        at: u16,
    },
    Branch {
        tl: usize,
        at: u16,
    },
    Flush {
        tl: usize,
    },
    Compact {
        tl: usize,
    },
    Gc {
        tl: usize,
        horizon: u16,
    },
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let tl = 0usize..4;
    prop_oneof![
        40 => (tl.clone(), prop::collection::vec((0..KEYS, 0u8..10, prop::collection::vec(any::<u8>(), 1..6)), 1..5))
            .prop_map(|(tl, keys)| Op::Put { tl, keys }),
        30 => (tl.clone(), 0..KEYS, any::<u16>()).prop_map(|(tl, key, at)| Op::Get { tl, key, at }),
        2 => (tl.clone(), any::<u16>()).prop_map(|(tl, at)| Op::Branch { tl, at }),
        6 => tl.clone().prop_map(|tl| Op::Flush { tl }),
        4 => tl.clone().prop_map(|tl| Op::Compact { tl }),
        3 => (tl, any::<u16>()).prop_map(|(tl, horizon)| Op::Gc { tl, horizon }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// Kind 0: image; 1: a record that initialises the page; otherwise a plain record.
fn value(kind: u8, bytes: &[u8]) -> Value {
    match kind {
        0 => Value::Image(Bytes::copy_from_slice(bytes)),
        1 => Value::WalRecord(WalRecord::Postgres {
            will_init: true,
            rec: Bytes::copy_from_slice(bytes),
        }),
        _ => Value::WalRecord(WalRecord::Postgres {
            will_init: false,
            rec: Bytes::copy_from_slice(bytes),
        }),
    }
}

#[derive(Clone, Debug)]
struct ModelTimeline {
    id: TimelineId,
    ancestor: Option<(usize, Lsn)>,
    values: BTreeMap<u32, BTreeMap<Lsn, Value>>,
    last: Lsn,
    cutoff: Lsn,
}

#[derive(Debug, PartialEq)]
enum Expected {
    Page(Bytes),
    NotFound,
    NoBase,
}

fn model_get(model: &[ModelTimeline], tl: usize, k: u32, lsn: Lsn) -> Expected {
    let mut versions: Vec<(Lsn, Value)> = Vec::new();
    let mut cur = tl;
    let mut limit = lsn;
    loop {
        if let Some(vs) = model[cur].values.get(&k) {
            for (l, v) in vs.range(..=limit).rev() {
                let init = v.will_init();
                versions.push((*l, v.clone()));
                if init {
                    return redo(versions);
                }
            }
        }
        match model[cur].ancestor {
            Some((a, bp)) => {
                limit = limit.min(bp);
                cur = a;
            }
            None => {
                return if versions.is_empty() {
                    Expected::NotFound
                } else {
                    Expected::NoBase
                };
            }
        }
    }
}

/// The cutoff that applies to a read at `lsn`: the timeline's, and below a branch point the ancestor's.
fn model_read_cutoff(model: &[ModelTimeline], tl: usize, lsn: Lsn) -> Lsn {
    let mut cutoff = model[tl].cutoff;
    let mut cur = tl;
    while let Some((a, bp)) = model[cur].ancestor {
        if lsn >= bp {
            break;
        }
        cutoff = cutoff.max(model[a].cutoff);
        cur = a;
    }
    cutoff
}

fn redo(mut newest_first: Vec<(Lsn, Value)>) -> Expected {
    newest_first.reverse();
    let mut it = newest_first.into_iter().peekable();
    let base = match it.peek() {
        Some((_, Value::Image(b))) => {
            let b = b.clone();
            it.next();
            Some(b)
        }
        _ => None,
    };
    let records: Vec<(Lsn, WalRecord)> = it
        .map(|(l, v)| match v {
            Value::WalRecord(r) => (l, r),
            Value::Image(_) => unreachable!("an image ends the search"),
        })
        .collect();
    if records.is_empty() {
        return Expected::Page(base.unwrap_or_default());
    }
    let tag = BufferTag {
        rnode: RelFileNode::default(),
        forknum: 0,
        blkno: 0,
    };
    Expected::Page(
        AppendRedo::apply(&RedoRequest {
            pg_version: pageserver::pg::PgVersion::V15,
            page: PageId::Rel(tag),
            base_image: base,
            records,
        })
        .unwrap(),
    )
}

fn test_conf() -> TenantConfig {
    TenantConfig {
        checkpoint_distance: 2048,
        checkpoint_timeout: HumanDuration::from_secs(3600),
        compaction_target_size: 1024,
        compaction_period: HumanDuration::from_secs(0),
        compaction_threshold: 2,
        gc_period: HumanDuration::from_secs(0),
        pitr_interval: HumanDuration::from_secs(0),
        image_creation_threshold: 2,
        ..TenantConfig::default()
    }
}

async fn open(dir: &std::path::Path, id: TenantId) -> Arc<Tenant> {
    Tenant::load(
        id,
        dir,
        test_conf(),
        Arc::new(AppendRedo),
        Arc::new(PageCache::new(64)),
        false,
    )
    .await
    .unwrap()
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    // Equivalence with the model, not durability (tests/repository_crash.rs kills a real process): on tmpfs,
    // where fsync is free, when there is one.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .unwrap();
    let tenant_id = TenantId([7; 16]);
    let mut tenant = open(dir.path(), tenant_id).await;
    let root = TimelineId([1; 16]);
    tenant
        .create_timeline(root, Lsn(0x100), pageserver::pg::PgVersion::V15)
        .await
        .unwrap();
    // The relation of `key` in the keyspace (compaction makes images of the keyspace only), durable before
    // the first op so that a crash cannot take it away.
    let timeline = tenant.timeline(root).unwrap();
    let writer = timeline.writer().await;
    for (k, v) in relation_directory(&[REL], KEYS) {
        writer.put(k, Lsn(0x108), &v).unwrap();
    }
    writer.finish_write(Lsn(0x108), Some(Lsn(0x100)));
    drop(writer);
    timeline.checkpoint().await.unwrap();
    let mut model = vec![ModelTimeline {
        id: root,
        ancestor: None,
        values: BTreeMap::new(),
        last: Lsn(0x108),
        cutoff: Lsn(0),
    }];
    let mut checked = 0u64;
    let mut ranges = 0u64;
    // Exercised: L0 layers merged, images written, layers removed by GC, restarts, crashes.
    let mut stats = [0u64; 6];
    let n_ops = ops.len();
    for op in ops {
        match op {
            Op::Put { tl, keys } => {
                let tl = tl % model.len();
                let timeline = tenant.timeline(model[tl].id).unwrap();
                let lsn = Lsn(model[tl].last.0 + 8);
                let writer = timeline.writer().await;
                for (k, kind, bytes) in keys {
                    let v = value(kind, &bytes);
                    writer.put(key(k), lsn, &v).unwrap();
                    model[tl].values.entry(k).or_default().insert(lsn, v);
                }
                writer.finish_write(lsn, Some(model[tl].last));
                model[tl].last = lsn;
            }
            Op::Get { tl, key: k, at } => {
                let tl = tl % model.len();
                let m = &model[tl];
                let lo = m
                    .ancestor
                    .map_or(0, |(_, bp)| bp.0.saturating_sub(40))
                    .max(0x100 - 8);
                let lsn = Lsn(lo + (m.last.0 - lo.min(m.last.0)) * at as u64 / u16::MAX as u64);
                let timeline = tenant.timeline(m.id).unwrap();
                let got = timeline.get(key(k), lsn).await;
                match (got, model_get(&model, tl, k, lsn)) {
                    (Err(GetError::BelowGcCutoff { cutoff, .. }), _) => {
                        let model_cutoff = model_read_cutoff(&model, tl, lsn);
                        prop_assert!(
                            lsn < cutoff && cutoff == model_cutoff,
                            "GC error at {lsn}: cutoff {cutoff}, model {model_cutoff}"
                        );
                    }
                    (Ok(page), Expected::Page(want)) => {
                        prop_assert_eq!(page, want, "{} {} at {}", tl, k, lsn)
                    }
                    (Err(GetError::KeyNotFound { .. }), Expected::NotFound) => {}
                    (Err(GetError::NoBaseImage { .. }), Expected::NoBase) => {}
                    (got, want) => prop_assert!(
                        false,
                        "tl {tl} key {k} at {lsn}: got {got:?}, model {want:?}"
                    ),
                }
                checked += 1;
                // Every key at once (a backup's range read) answers what the reads of each key answer: all
                // the pages, or the error of the first key (in key order) that has none.
                if at % 3 == 0 {
                    let got = timeline.get_range(key(0)..key(KEYS), lsn).await;
                    let want: Vec<Expected> =
                        (0..KEYS).map(|k| model_get(&model, tl, k, lsn)).collect();
                    let first_bad = want.iter().position(|e| !matches!(e, Expected::Page(_)));
                    match (got, first_bad) {
                        (Err(GetError::BelowGcCutoff { .. }), _) => {
                            prop_assert!(lsn < model_read_cutoff(&model, tl, lsn));
                        }
                        (Ok(pages), None) => {
                            for (k, (page, want)) in pages.into_iter().zip(want).enumerate() {
                                prop_assert_eq!(
                                    Expected::Page(page),
                                    want,
                                    "range read: tl {} key {} at {}",
                                    tl,
                                    k,
                                    lsn
                                );
                            }
                        }
                        (Err(GetError::KeyNotFound { key: bad, .. }), Some(i)) => {
                            prop_assert!(
                                matches!(want[i], Expected::NotFound) && bad == key(i as u32),
                                "range read at {lsn}: not found {bad}, model {want:?}"
                            );
                        }
                        (Err(GetError::NoBaseImage { key: bad, .. }), Some(i)) => {
                            prop_assert!(
                                matches!(want[i], Expected::NoBase) && bad == key(i as u32),
                                "range read at {lsn}: no base {bad}, model {want:?}"
                            );
                        }
                        (got, _) => prop_assert!(
                            false,
                            "range read tl {tl} at {lsn}: got {got:?}, model {want:?}"
                        ),
                    }
                    ranges += 1;
                }
            }
            Op::Branch { tl, at } => {
                if model.len() >= 4 {
                    continue;
                }
                let tl = tl % model.len();
                let parent = tenant.timeline(model[tl].id).unwrap();
                let lo = parent
                    .gc_cutoff()
                    .max(model[tl].ancestor.map_or(Lsn(0x108), |(_, bp)| bp));
                let hi = model[tl].last;
                if lo > hi {
                    continue;
                }
                let lsn = Lsn(lo.0 + (hi.0 - lo.0) * at as u64 / u16::MAX as u64);
                let id = TimelineId([model.len() as u8 + 1; 16]);
                tenant
                    .branch_timeline(id, model[tl].id, Some(lsn))
                    .await
                    .unwrap();
                let cutoff = parent.gc_cutoff();
                model.push(ModelTimeline {
                    id,
                    ancestor: Some((tl, lsn)),
                    values: BTreeMap::new(),
                    last: lsn,
                    cutoff,
                });
            }
            Op::Flush { tl } => {
                let tl = tl % model.len();
                tenant
                    .timeline(model[tl].id)
                    .unwrap()
                    .checkpoint()
                    .await
                    .unwrap();
            }
            Op::Compact { tl } => {
                let tl = tl % model.len();
                let r = tenant
                    .timeline(model[tl].id)
                    .unwrap()
                    .compact()
                    .await
                    .unwrap();
                stats[1] += r.l0_merged as u64;
                stats[2] += r.images_written as u64;
            }
            Op::Gc { tl, horizon } => {
                let tl = tl % model.len();
                let timeline = tenant.timeline(model[tl].id).unwrap();
                let retain = tenant.branch_points(model[tl].id);
                let result = timeline
                    .gc(Some(horizon as u64 % 400), &retain)
                    .await
                    .unwrap();
                model[tl].cutoff = result.cutoff;
                stats[3] += result.layers_removed as u64;
            }
            Op::Restart => {
                stats[4] += 1;
                tenant.shutdown(true).await;
                drop(tenant);
                tenant = open(dir.path(), tenant_id).await;
                for m in &model {
                    let t = tenant.timeline(m.id).unwrap();
                    prop_assert_eq!(
                        t.last_record_lsn(),
                        m.last,
                        "a clean restart keeps everything"
                    );
                }
            }
            Op::Crash => {
                stats[5] += 1;
                // Nothing is flushed: what was above disk_consistent_lsn is gone.
                let disk: Vec<Lsn> = model
                    .iter()
                    .map(|m| tenant.timeline(m.id).unwrap().disk_consistent_lsn())
                    .collect();
                tenant.shutdown(false).await;
                drop(tenant);
                tenant = open(dir.path(), tenant_id).await;
                for (m, disk) in model.iter_mut().zip(disk) {
                    let t = tenant.timeline(m.id).unwrap();
                    prop_assert_eq!(t.last_record_lsn(), disk);
                    for versions in m.values.values_mut() {
                        versions.retain(|l, _| *l <= disk);
                    }
                    m.last = disk;
                }
            }
        }
    }
    tenant.shutdown(false).await;
    eprintln!(
        "case: {n_ops} ops, {checked} gets and {ranges} range reads checked, {} timelines; L0 merged {}, images {}, GC removed {}, restarts {}, crashes {}",
        model.len(),
        stats[1],
        stats[2],
        stats[3],
        stats[4],
        stats[5]
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn repository_matches_the_model(ops in prop::collection::vec(op(), 1..3000)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}

/// A detach or shutdown racing with a create: the tenant refuses new timelines once its shutdown began, and a
/// timeline it already handed out refuses writes (the HTTP API answers 409 to both, never a 5xx).
#[tokio::test]
async fn shut_down_tenant_refuses_new_timelines_and_writes() {
    use pageserver::repository::tenant::TenantError;
    use pageserver::repository::timeline::PutError;

    let dir = tempfile::tempdir().unwrap();
    let tenant = open(dir.path(), TenantId([8; 16])).await;
    let early = tenant
        .create_timeline(
            TimelineId([1; 16]),
            Lsn(0x100),
            pageserver::pg::PgVersion::V15,
        )
        .await
        .unwrap();
    early
        .writer()
        .await
        .put(key(0), Lsn(0x108), &value(0, b"before"))
        .unwrap();
    tenant.shutdown(false).await;

    let late = tenant
        .create_timeline(
            TimelineId([2; 16]),
            Lsn(0x100),
            pageserver::pg::PgVersion::V15,
        )
        .await;
    assert!(
        matches!(late, Err(TenantError::ShuttingDown)),
        "create after shutdown: {late:?}"
    );
    let put = early
        .writer()
        .await
        .put(key(0), Lsn(0x110), &value(0, b"after"));
    assert!(
        matches!(put, Err(PutError::ShuttingDown)),
        "put after shutdown: {put:?}"
    );
}

/// Compaction makes images of the keyspace at their LSN: a relation dropped before it is left out, so that GC
/// can remove its versions with the deltas below the image, while a relation that stays is read back whole.
#[tokio::test]
async fn images_leave_dropped_relations_behind() {
    use pageserver::repository::layers::LayerName;
    use pageserver::repository::layers::image::ImageLayer;

    let dropped = RelFileNode { rel: 16385, ..REL };
    let dir = tempfile::tempdir().unwrap();
    let tenant = open(dir.path(), TenantId([9; 16])).await;
    let tl = tenant
        .create_timeline(
            TimelineId([1; 16]),
            Lsn(0x100),
            pageserver::pg::PgVersion::V15,
        )
        .await
        .unwrap();
    let mut lsn = Lsn(0x100);
    let mut expected: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut images = 0;
    let mut drop_lsn = Lsn::MAX;
    for round in 0..8u32 {
        let prev = lsn;
        lsn = Lsn(lsn.0 + 8);
        let writer = tl.writer().await;
        let directory = match round {
            0 => relation_directory(&[REL, dropped], KEYS),
            4 => {
                drop_lsn = lsn;
                relation_directory(&[REL], KEYS)
            }
            _ => Vec::new(),
        };
        for (k, v) in directory {
            writer.put(k, lsn, &v).unwrap();
        }
        for rel in [REL, dropped] {
            if rel == dropped && round >= 4 {
                continue;
            }
            for b in 0..KEYS {
                let bytes = format!("{}:{b}:{round};", rel.rel).into_bytes();
                let v = value(if round == 0 { 0 } else { 2 }, &bytes);
                writer.put(Key::rel_block(rel, 0, b), lsn, &v).unwrap();
                if rel == REL {
                    expected.entry(b).or_default().extend_from_slice(&bytes);
                }
            }
        }
        writer.finish_write(lsn, Some(prev));
        drop(writer);
        tl.checkpoint().await.unwrap();
        images += tl.compact().await.unwrap().images_written;
    }
    assert!(images > 0, "no image layer was made");
    // Every image made after the drop holds the relation that stays and none of the dropped one.
    let (mut after_drop, mut covering) = (0, 0);
    for entry in std::fs::read_dir(tenant.timeline_dir(tl.timeline_id)).unwrap() {
        let file = entry.unwrap().file_name();
        let Ok(name) = file.to_string_lossy().parse::<LayerName>() else {
            continue;
        };
        let LayerName::Image { key_range, lsn: at } = &name else {
            continue;
        };
        if *at < drop_lsn {
            continue;
        }
        after_drop += 1;
        let image = ImageLayer::open(&tenant.timeline_dir(tl.timeline_id).join(&file)).unwrap();
        let keys: Vec<Key> = image.keys().unwrap();
        let in_dropped =
            |k: &Key| *k >= Key::rel_block(dropped, 0, 0) && *k < Key::rel_block(dropped, 0, KEYS);
        assert!(
            !keys.iter().any(in_dropped),
            "image {name} holds blocks of the relation dropped at {drop_lsn}"
        );
        if key_range.contains(&Key::rel_block(dropped, 0, 0)) {
            covering += 1;
        }
    }
    assert!(
        after_drop > 0 && covering > 0,
        "no image after the drop covers the dropped relation ({after_drop} images after it)"
    );
    for b in 0..KEYS {
        let page = tl.get(Key::rel_block(REL, 0, b), lsn).await.unwrap();
        assert_eq!(page, expected[&b], "block {b} of the relation that stays");
    }
}
