//! Import of real PostgreSQL 15 data directories: a timeline bootstrapped with the walredo bundle's initdb,
//! and a `pg_basebackup -Ft -X none` tar of a primary after `pgbench -i`, each compared file by file, block
//! by block with what the timeline returns; and bad archives refused with errors naming the entry.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pageserver::config::TenantConfig;
use pageserver::id::{TenantId, TimelineId};
use pageserver::import::initdb::{import_initdb_dir, run_initdb};
use pageserver::import::{ImportError, bootstrap_timeline, import_tar};
use pageserver::pg::reader::Reader;
use pageserver::pg::records::CheckPoint;
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::Key;
use pageserver::repository::page_cache::PageCache;
use pageserver::repository::tenant::Tenant;
use pageserver::repository::testing::AppendRedo;
use pageserver::repository::timeline::Timeline;
use pageserver::walredo::SlruKind;
use support::pg::{PgCluster, PgOptions};

const BLCKSZ: usize = 8192;
const RELSEG_SIZE: u32 = 131072;

fn bundle() -> PathBuf {
    pageserver::walredo::bundle_from_env().expect(
        "PAGESERVER_WALREDO_BUNDLE must name a built walredo bundle (scripts/test.sh sets it)",
    )
}

/// The user initdb runs as when the tests run as root (as for the test bed's PostgreSQL).
fn initdb_user() -> String {
    std::env::var("PAGESERVER_TEST_PG_USER").unwrap_or_else(|_| "postgres".into())
}

async fn tenant(dir: &Path) -> Arc<Tenant> {
    Tenant::load(
        TenantId([7; 16]),
        dir,
        TenantConfig::default(),
        Arc::new(AppendRedo),
        Arc::new(PageCache::new(64)),
        false,
    )
    .await
    .unwrap()
}

/// What a file of a data directory is, by an independent reading of PostgreSQL's naming.
enum Expect {
    Rel(RelFileNode, u8, u32),
    RelMap(u32, u32),
    Slru(SlruKind, u32),
    TwoPhase(u32),
    Control,
    Other,
}

fn expect(path: &str) -> Expect {
    let parts: Vec<&str> = path.trim_start_matches("./").split('/').collect();
    let rel_file = |spc: u32, db: u32, name: &str| {
        let (base, seg) = name.split_once('.').unwrap_or((name, "0"));
        let (rel, fork) = match base.split_once('_') {
            None => (base, 0),
            Some((rel, "fsm")) => (rel, 1),
            Some((rel, "vm")) => (rel, 2),
            Some((rel, "init")) => (rel, 3),
            Some(_) => return Expect::Other,
        };
        match (rel.parse(), seg.parse()) {
            (Ok(rel), Ok(seg)) => Expect::Rel(RelFileNode { spc, db, rel }, fork, seg),
            _ => Expect::Other,
        }
    };
    match parts.as_slice() {
        ["global", "pg_control"] => Expect::Control,
        ["global", "pg_filenode.map"] => Expect::RelMap(1664, 0),
        ["global", name] => rel_file(1664, 0, name),
        ["base", db, name] => match (db.parse(), *name) {
            (Ok(db), "pg_filenode.map") => Expect::RelMap(1663, db),
            (Ok(db), name) => rel_file(1663, db, name),
            (Err(_), _) => Expect::Other,
        },
        ["pg_xact", seg] => Expect::Slru(SlruKind::Clog, u32::from_str_radix(seg, 16).unwrap()),
        ["pg_multixact", "offsets", seg] => Expect::Slru(
            SlruKind::MultiXactOffsets,
            u32::from_str_radix(seg, 16).unwrap(),
        ),
        ["pg_multixact", "members", seg] => Expect::Slru(
            SlruKind::MultiXactMembers,
            u32::from_str_radix(seg, 16).unwrap(),
        ),
        ["pg_twophase", xid] => Expect::TwoPhase(u32::from_str_radix(xid, 16).unwrap()),
        _ => Expect::Other,
    }
}

/// Compares files of a data directory with a timeline at `lsn`, one at a time, then the sizes and
/// directories they imply.
#[derive(Default, Debug)]
struct Comparison {
    rel_files: usize,
    blocks: u64,
    relmaps: usize,
    slru_segments: usize,
    slru_pages: u64,
    twophase: BTreeSet<u64>,
    control: bool,
    forks: BTreeMap<(RelFileNode, u8), u32>,
    dbs: BTreeMap<(u32, u32), bool>,
}

impl Comparison {
    async fn file(&mut self, tl: &Timeline, lsn: Lsn, path: &str, data: &[u8]) {
        let get = |key: Key| async move {
            tl.get(key, lsn)
                .await
                .unwrap_or_else(|e| panic!("{path}: no value for {key} at {lsn}: {e}"))
        };
        match expect(path) {
            Expect::Rel(rnode, fork, seg) => {
                assert_eq!(data.len() % BLCKSZ, 0, "{path}");
                for (i, block) in data.chunks(BLCKSZ).enumerate() {
                    let blkno = seg * RELSEG_SIZE + i as u32;
                    let page = get(Key::rel_block(rnode, fork, blkno)).await;
                    assert!(page == block, "{path}: block {blkno} differs");
                    self.blocks += 1;
                }
                let size = self.forks.entry((rnode, fork)).or_default();
                *size = (*size).max(seg * RELSEG_SIZE + (data.len() / BLCKSZ) as u32);
                self.dbs.entry((rnode.spc, rnode.db)).or_default();
                self.rel_files += 1;
            }
            Expect::RelMap(spc, db) => {
                assert_eq!(get(Key::relmap_file(spc, db)).await, data, "{path}");
                self.dbs.insert((spc, db), true);
                self.relmaps += 1;
            }
            Expect::Slru(kind, segno) => {
                for (i, block) in data.chunks(BLCKSZ).enumerate() {
                    let page = get(Key::slru_block(kind, segno, i as u32)).await;
                    assert!(page == block, "{path}: page {i} differs");
                    self.slru_pages += 1;
                }
                let size = tl.slru_segment_size(kind, segno, lsn).await.unwrap();
                assert_eq!(size, Some((data.len() / BLCKSZ) as u32), "{path}");
                self.slru_segments += 1;
            }
            Expect::TwoPhase(xid) => {
                // Stored without the trailing CRC.
                let state = get(Key::twophase_file(xid as u64)).await;
                assert_eq!(state, data[..data.len() - 4], "{path}");
                self.twophase.insert(xid as u64);
            }
            Expect::Control => {
                assert_eq!(get(Key::control_file()).await, data, "{path}");
                let stored = get(Key::checkpoint()).await;
                let cp = |b: &[u8]| {
                    CheckPoint::parse(&mut Reader::new(b), pageserver::pg::PgVersion::V15).unwrap()
                };
                assert_eq!(cp(&stored), cp(&data[40..128]), "checkPointCopy");
                self.control = true;
            }
            Expect::Other => {}
        }
    }

    /// Sizes of every fork, the relation directory of every database, the database directory.
    async fn directories(&self, tl: &Timeline, lsn: Lsn) {
        let mut rels: BTreeMap<(u32, u32), BTreeSet<(u32, u8)>> = BTreeMap::new();
        for ((rnode, fork), size) in &self.forks {
            assert_eq!(
                tl.rel_size(*rnode, *fork, lsn).await.unwrap(),
                *size,
                "size of {rnode:?} fork {fork}"
            );
            rels.entry((rnode.spc, rnode.db))
                .or_default()
                .insert((rnode.rel, *fork));
        }
        for ((spc, db), expected) in &rels {
            assert_eq!(
                &tl.list_rels(*spc, *db, lsn).await.unwrap(),
                expected,
                "relations of {db}"
            );
        }
        assert_eq!(tl.list_dbdirs(lsn).await.unwrap(), self.dbs);
        assert_eq!(tl.list_twophase(lsn).await.unwrap(), self.twophase);
        assert!(self.control, "pg_control was compared");
    }
}

/// Every file under `root`, relative path and contents, in name order.
fn files_of(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push((path, std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Scratch directories of initdb runs of this process.
fn initdb_scratch_dirs() -> Vec<PathBuf> {
    let prefix = format!("pageserver-initdb-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_with_initdb_matches_the_initdb_directory() {
    let bundle = bundle();
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant(dir.path()).await;

    // The whole bootstrap: initdb, import, checkpoint, initdb_lsn, scratch removed.
    let id = TimelineId([1; 16]);
    let (tl, lsn) = bootstrap_timeline(
        &tenant,
        id,
        pageserver::pg::PgVersion::V15,
        &bundle,
        "cloud_admin",
        "C.UTF-8",
        &initdb_user(),
    )
    .await
    .unwrap();
    assert_eq!(tl.last_record_lsn(), lsn);
    assert_eq!(tl.disk_consistent_lsn(), lsn, "checkpointed");
    assert_eq!(tl.metadata().initdb_lsn, lsn);
    let prev = tl.prev_record_lsn().expect("prev record of the bootstrap");
    assert!(prev < lsn && lsn.is_aligned());
    let dbs = tl.list_dbdirs(lsn).await.unwrap();
    let expected: BTreeMap<(u32, u32), bool> = [
        ((1663, 1), true),
        ((1663, 4), true),
        ((1663, 5), true),
        ((1664, 0), true),
    ]
    .into_iter()
    .collect();
    assert_eq!(dbs, expected);
    assert!(
        tl.list_dbdirs(Lsn(lsn.0 - 1)).await.unwrap().is_empty(),
        "nothing before initdb"
    );
    assert!(
        initdb_scratch_dirs().is_empty(),
        "scratch directory removed"
    );

    // The same steps with the initdb directory kept, to compare every file with the timeline.
    let initdb = run_initdb(
        pageserver::pg::PgVersion::V15,
        &bundle,
        "cloud_admin",
        "C.UTF-8",
        &initdb_user(),
    )
    .await
    .unwrap();
    let id2 = TimelineId([2; 16]);
    let done = import_initdb_dir(&tenant, id2, initdb.pgdata())
        .await
        .unwrap();
    let (tl2, lsn2) = (done.timeline.clone(), done.lsn);
    let mut cmp = Comparison::default();
    for (path, data) in files_of(initdb.pgdata()) {
        cmp.file(&tl2, lsn2, &path, &data).await;
    }
    cmp.directories(&tl2, lsn2).await;
    println!(
        "initdb at {lsn2}: compared {} relation files ({} forks, {} blocks), {} relmap files, \
         {} SLRU segments ({} pages), pg_control; import stats {:?}",
        cmp.rel_files,
        cmp.forks.len(),
        cmp.blocks,
        cmp.relmaps,
        cmp.slru_segments,
        cmp.slru_pages,
        done.stats
    );
    assert_eq!(cmp.blocks, done.stats.blocks);
    assert_eq!(cmp.forks.len(), done.stats.rel_forks);
    assert!(cmp.rel_files > 500 && cmp.blocks > 1000, "{cmp:?}");
    assert_eq!(cmp.relmaps, 4);
    assert!(cmp.slru_segments >= 3);

    // Durable: a reload of the tenant reads the same.
    let sample = cmp.forks.keys().next().copied().unwrap();
    let before = tl2
        .get(Key::rel_block(sample.0, sample.1, 0), lsn2)
        .await
        .unwrap();
    drop((tl, tl2, done));
    tenant.shutdown(false).await;
    let tenant = self::tenant(dir.path()).await;
    let tl2 = tenant.timeline(id2).unwrap();
    assert_eq!(tl2.last_record_lsn(), lsn2);
    assert_eq!(tl2.metadata().initdb_lsn, lsn2);
    assert_eq!(
        tl2.get(Key::rel_block(sample.0, sample.1, 0), lsn2)
            .await
            .unwrap(),
        before
    );
    tenant.shutdown(false).await;
    initdb.remove().await;
}

/// initdb runs in the bundle's empty root (docs/walredo.md §4: the bundle's shell, libraries and C.UTF-8
/// locale data, nothing of the host but /dev/null and the scratch directory), and plain PostgreSQL 15 of the
/// host boots on the cluster it made and answers queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initdb_in_the_empty_root_makes_a_cluster_plain_postgresql_boots() {
    let initdb = run_initdb(
        pageserver::pg::PgVersion::V15,
        &bundle(),
        "postgres",
        "C.UTF-8",
        &initdb_user(),
    )
    .await
    .unwrap();
    assert!(
        initdb.in_empty_root(),
        "initdb ran on the host's filesystem"
    );
    let pgdata = initdb.pgdata().to_path_buf();
    let pg = tokio::task::spawn_blocking(move || {
        let home = PgCluster::data_dir_home();
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&pgdata)
            .arg(home.path().join("data"))
            .status()
            .unwrap();
        assert!(cp.success());
        PgCluster::start_on(home)
    })
    .await
    .unwrap();
    assert_eq!(
        pg.sql("SELECT datcollate || ' ' || pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'postgres'"),
        "C.UTF-8 UTF8"
    );
    assert_eq!(pg.sql("SELECT count(*) FROM pg_database"), "3");
    drop(pg);
    initdb.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basebackup_tar_of_a_pgbench_primary() {
    let (pg, backup_dir, tar_path, end) = tokio::task::spawn_blocking(|| {
        let pg = PgCluster::start(PgOptions {
            extra_conf: vec!["max_prepared_transactions = 5".into()],
        });
        pg.pgbench_init("postgres", 1);
        // A prepared transaction: the backup's checkpoint writes its state to pg_twophase/.
        pg.sql(
            "BEGIN; CREATE TABLE twophase_t (x int); INSERT INTO twophase_t VALUES (1); \
             PREPARE TRANSACTION 'import-test'",
        );
        let backup_dir = tempfile::tempdir().unwrap();
        let tar_path = pg.basebackup_tar(&backup_dir.path().join("backup"));
        let end: Lsn = pg.current_lsn().parse().unwrap();
        (pg, backup_dir, tar_path, end)
    })
    .await
    .unwrap();
    let accounts: u32 = pg
        .sql("SELECT pg_relation_filenode('pgbench_accounts')")
        .parse()
        .unwrap();
    let prepared_xid: u64 = pg
        .sql("SELECT transaction FROM pg_prepared_xacts")
        .parse()
        .unwrap();
    let postgres_db: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant(dir.path()).await;
    let tl = tenant
        .create_timeline(TimelineId([3; 16]), Lsn(0), pageserver::pg::PgVersion::V15)
        .await
        .unwrap();
    let file = std::fs::File::open(&tar_path).unwrap();
    let stats = import_tar(&tl, std::io::BufReader::new(file), end, None)
        .await
        .unwrap();
    assert_eq!(tl.last_record_lsn(), end);
    let start = stats.backup_label_start_lsn.expect("backup_label read");
    assert!(start <= end && stats.backup_label_checkpoint_lsn.unwrap() >= start);
    tl.checkpoint().await.unwrap();

    // Every regular file of the tar against the timeline.
    let mut cmp = Comparison::default();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        cmp.file(&tl, end, &path, &data).await;
    }
    cmp.directories(&tl, end).await;
    println!(
        "base backup (start {start}, imported at {end}): compared {} relation files ({} forks, {} blocks), \
         {} relmap files, {} SLRU segments ({} pages), {} two-phase files, pg_control; import stats {stats:?}",
        cmp.rel_files,
        cmp.forks.len(),
        cmp.blocks,
        cmp.relmaps,
        cmp.slru_segments,
        cmp.slru_pages,
        cmp.twophase.len(),
    );
    assert_eq!(
        cmp.twophase,
        [prepared_xid].into_iter().collect(),
        "the prepared transaction"
    );
    assert_eq!(cmp.blocks, stats.blocks);
    let accounts_rel = RelFileNode {
        spc: 1663,
        db: postgres_db,
        rel: accounts,
    };
    assert!(
        tl.rel_size(accounts_rel, 0, end).await.unwrap() > 1000,
        "pgbench_accounts (100,000 rows) was imported"
    );

    // The same archive cut in the middle of pgbench_accounts: an error naming it, nothing published.
    let tar = std::fs::read(&tar_path).unwrap();
    let accounts_path = format!("base/{postgres_db}/{accounts}");
    let mut archive = tar::Archive::new(&tar[..]);
    let (pos, size) = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path_bytes().as_ref() == accounts_path.as_bytes())
        .map(|e| (e.raw_file_position(), e.size()))
        .expect("pgbench_accounts in the tar");
    let cut = tar[..(pos + size / 2) as usize].to_vec();
    let tl2 = tenant
        .create_timeline(TimelineId([4; 16]), Lsn(0), pageserver::pg::PgVersion::V15)
        .await
        .unwrap();
    let e = import_tar(&tl2, std::io::Cursor::new(cut), end, None)
        .await
        .unwrap_err();
    println!("truncated tar: {e}");
    assert!(
        matches!(&e, ImportError::Truncated { entry, .. } if *entry == accounts_path),
        "{e}"
    );
    assert_eq!(tl2.last_record_lsn(), Lsn(0), "nothing published");
    tenant.delete_timeline(TimelineId([4; 16])).await.unwrap();

    tenant.shutdown(false).await;
    drop(backup_dir);
    drop(pg);
}

#[tokio::test]
async fn a_relation_file_of_100_bytes_is_refused() {
    let mut b = tar::Builder::new(Vec::new());
    for (path, len) in [("global/pg_filenode.map", 512usize), ("base/5/16384", 100)] {
        let mut h = tar::Header::new_gnu();
        h.set_size(len as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, path, &vec![0u8; len][..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant(dir.path()).await;
    let tl = tenant
        .create_timeline(
            TimelineId([5; 16]),
            Lsn(0x100),
            pageserver::pg::PgVersion::V15,
        )
        .await
        .unwrap();
    let e = import_tar(&tl, std::io::Cursor::new(tar), Lsn(0x200), None)
        .await
        .unwrap_err();
    println!("100-byte relation file: {e}");
    assert!(
        matches!(&e, ImportError::NotBlockAligned { entry, size: 100 } if entry == "base/5/16384"),
        "{e}"
    );
    assert!(e.to_string().contains("base/5/16384"));
    assert_eq!(tl.last_record_lsn(), Lsn(0x100));
    let e = import_tar(&tl, std::io::Cursor::new(Vec::new()), Lsn(0x100), None)
        .await
        .unwrap_err();
    assert!(matches!(e, ImportError::LsnNotAboveLast { .. }), "{e}");
    tenant.shutdown(false).await;
}
