//! Remote storage end to end, once on S3 (SeaweedFS) and once on Azure (Azurite): a pageserver follows a
//! primary running the ingest workload and uploads as it goes; it is killed with SIGKILL in the middle of
//! pgbench and its workdir is thrown away. A new pageserver on an empty workdir attaches the tenant from remote
//! storage and follows the primary again. Then every page equals the primary's (masked), a fullbackup boots
//! plain PostgreSQL with the primary's `pg_dumpall`, the slot never let go of WAL above what remote storage
//! held, streaming resumed at the index's LSN, and every index in the bucket names only layers that exist.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pageserver::config::RemoteStorageConfig;
use pageserver::pg::Lsn;
use pageserver::remote_storage::{
    ByteRange, GenericRemoteStorage, ListingMode, RemotePath, StaticCredentials,
};
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::dump::{Snapshot, as_wal_derived, dumpall, first_difference, snapshot};
use support::objstore::{AZURITE_KEY, AzuriteServer, S3Server};
use support::pageserver::{Pageserver, lsn_field};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ingest_workload};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// One of the two real object stores, and how to reach it.
struct Store {
    table: String,
    env: Vec<(String, String)>,
    credentials: StaticCredentials,
    _s3: Option<S3Server>,
    _azure: Option<AzuriteServer>,
}

fn s3_store(prefix: &str) -> Store {
    let s = S3Server::start();
    Store {
        table: s.remote_storage(prefix),
        env: s.env(),
        credentials: StaticCredentials {
            access_key: s.access_key.clone(),
            secret_key: s.secret_key.clone(),
        },
        _s3: Some(s),
        _azure: None,
    }
}

fn azure_store(prefix: &str) -> Store {
    let a = AzuriteServer::start();
    Store {
        table: a.remote_storage(prefix),
        env: a.env(),
        credentials: StaticCredentials {
            access_key: String::new(),
            secret_key: AZURITE_KEY.into(),
        },
        _s3: None,
        _azure: Some(a),
    }
}

/// The test's own client of the same bucket, to look at what the pageserver left there.
pub struct Bucket {
    rt: tokio::runtime::Runtime,
    storage: GenericRemoteStorage,
}

impl Bucket {
    fn open(store: &Store) -> Bucket {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let table: toml::Table = toml::from_str(&format!("rs = {}", store.table)).unwrap();
        let config: RemoteStorageConfig = table["rs"].clone().try_into().unwrap();
        let storage = rt
            .block_on(GenericRemoteStorage::from_config_with(
                &config,
                0,
                Some(store.credentials.clone()),
            ))
            .unwrap();
        Bucket { rt, storage }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.rt
            .block_on(self.storage.list(Some(prefix), ListingMode::NoDelimiter))
            .unwrap()
            .keys
            .into_iter()
            .map(|o| o.key.to_string())
            .collect()
    }

    fn get(&self, key: &str) -> Vec<u8> {
        self.rt
            .block_on(
                self.storage
                    .download_bytes(&RemotePath::new(key).unwrap(), ByteRange::ALL),
            )
            .unwrap()
            .to_vec()
    }

    /// Every index of the timeline names only layers that exist in the bucket; returns the newest index's
    /// disk_consistent_lsn and the number of (indexes, layer objects).
    fn check_indexes(&self, tenant: &str, timeline: &str) -> (Lsn, usize, usize) {
        let prefix = format!("tenants/{tenant}/timelines/{timeline}/");
        let keys = self.keys(&prefix);
        let objects: BTreeSet<String> = keys
            .iter()
            .map(|k| k.trim_start_matches(&prefix).to_string())
            .collect();
        let indexes: Vec<&String> = objects
            .iter()
            .filter(|k| k.starts_with("index_part.json"))
            .collect();
        assert!(!indexes.is_empty(), "no index in {prefix}: {objects:?}");
        let mut newest: Option<(String, Lsn)> = None;
        for name in &indexes {
            let index: serde_json::Value =
                serde_json::from_slice(&self.get(&format!("{prefix}{name}"))).unwrap();
            for (layer, meta) in index["layer_metadata"].as_object().unwrap() {
                let generation = meta["generation"].as_u64().unwrap_or(0);
                let key = if generation == 0 {
                    layer.clone()
                } else {
                    format!("{layer}-{generation:08x}")
                };
                assert!(
                    objects.contains(&key),
                    "{name} names {key}, which is not in the bucket"
                );
            }
            let lsn: Lsn = index["disk_consistent_lsn"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            if newest
                .as_ref()
                .is_none_or(|(n, _)| name.as_str() > n.as_str())
            {
                newest = Some((name.to_string(), lsn));
            }
        }
        let layers = objects.len() - indexes.len();
        (newest.unwrap().1, indexes.len(), layers)
    }
}

/// Boots plain PostgreSQL on a fullbackup of `ps` at `lsn` and checks that its `pg_dumpall` is the primary's at
/// `snap`; returns the dump's line count.
fn assert_fullbackup_dump(ps: &Pageserver, lsn: Lsn, snap: &Snapshot) -> usize {
    let tar = ps.fullbackup(T, TL, lsn);
    let mut restored = PgCluster::start_from_tar(&tar);
    let ours = dumpall(&restored);
    restored.stop();
    let expected = as_wal_derived(snap);
    assert!(
        ours == expected,
        "pg_dumpall of the fullbackup at {lsn} differs from the primary's at {}: {}",
        snap.lsn,
        first_difference(&expected, &ours)
    );
    ours.lines().count()
}

/// A primary set up for the ingest workload.
fn workload_primary() -> PgCluster {
    PgCluster::start(PgOptions {
        extra_conf: WORKLOAD_CONF.iter().map(|s| s.to_string()).collect(),
    })
}

fn kill_wipe_attach(store: Store) {
    let mut pg = workload_primary();
    let remote = format!("remote_storage={}", store.table);
    let overrides = [
        remote.as_str(),
        // Many small layers, compacted (and so deleted remotely) while the workload runs.
        "checkpoint_distance=2097152",
        "compaction_threshold=4",
        "compaction_period='2s'",
    ];
    let mut ps = Pageserver::start_with_env(&overrides, store.env.clone());
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    let wal_log_db = ingest_workload(&pg, "rs");
    let after_workload: Lsn = pg.current_lsn().parse().unwrap();
    let info = ps.wait_remote(T, TL, after_workload);
    println!(
        "after the ingest workload: remote_consistent_lsn {}, upload queue {}",
        info["remote_consistent_lsn"], info["upload_queue"]
    );
    let bucket = Bucket::open(&store);

    // SIGKILL in the middle of pgbench; the workdir goes with it.
    let (remote_at_kill, slot_at_kill) = std::thread::scope(|scope| {
        let bench = scope.spawn(|| pg.pgbench("postgres", &["-n", "-c", "4", "-T", "14"]));
        std::thread::sleep(Duration::from_secs(6));
        ps.kill9();
        // What the primary keeps for us, read right after the kill.
        let slot: Lsn = pg
            .sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver'")
            .parse()
            .unwrap();
        let (remote, indexes, layers) = bucket.check_indexes(T, TL);
        println!(
            "killed: slot restart_lsn {slot}, newest remote index at {remote} ({indexes} indexes, {layers} layer objects)"
        );
        std::fs::remove_dir_all(ps.workdir()).unwrap();
        std::thread::sleep(Duration::from_secs(1));

        // A new pageserver with an empty workdir attaches the tenant (a newer generation) and follows again.
        let fresh = Pageserver::start_with_env(&overrides, store.env.clone());
        fresh.attach(T, Some(2));
        let (_, info) = fresh.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
        assert_eq!(lsn_field(&info, "disk_consistent_lsn"), remote, "{info}");
        assert_eq!(lsn_field(&info, "last_record_lsn"), remote, "{info}");
        fresh.set_wal_source(
            T,
            TL,
            json!({"connstr": pg.connstr("postgres"), "slot_name": "pageserver"}),
        );
        let out = bench.join().unwrap();
        assert!(
            out.contains("number of transactions actually processed"),
            "{out}"
        );
        ps = fresh;
        (remote, slot)
    });
    assert!(
        remote_at_kill > after_workload,
        "uploads went on during pgbench: {remote_at_kill} vs {after_workload}"
    );
    assert!(
        slot_at_kill <= remote_at_kill.align(),
        "the slot moved to {slot_at_kill}, past what remote storage held ({remote_at_kill})"
    );
    let log = ps.log_text();
    let resumed: Lsn = log
        .lines()
        .find(|l| l.contains("streaming WAL"))
        .and_then(|l| l.split("start=").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .map(|s| s.parse().unwrap())
        .expect("the receiver streams after the attach");
    assert!(
        resumed >= slot_at_kill && resumed <= remote_at_kill.align(),
        "resumed at {resumed}: the index was at {remote_at_kill}, the slot at {slot_at_kill}"
    );

    pg.sql("CHECKPOINT");
    let snap = snapshot(&pg);
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[wal_log_db]);
    let downloads = ps.metric("pageserver_layer_downloads_total");
    cmp.print(&format!(
        "attached on an empty workdir at {remote_at_kill} (slot at {slot_at_kill}), resumed streaming at \
         {resumed}, followed to {last}; {downloads} layers downloaded"
    ));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 1000);
    assert!(downloads > 0, "pages were read from downloaded layers");

    let lines = assert_fullbackup_dump(&ps, last, &snap);
    println!("fullbackup at {last}: pg_dumpall of {lines} lines equal");

    // Everything the second pageserver uploaded keeps the invariant too.
    ps.wait_remote(T, TL, last);
    let (newest, indexes, layers) = bucket.check_indexes(T, TL);
    println!("at the end: newest index at {newest}, {indexes} indexes, {layers} layer objects");
}

#[test]
fn s3_kill_wipe_attach() {
    kill_wipe_attach(s3_store("e2e"));
}

#[test]
fn azure_kill_wipe_attach() {
    kill_wipe_attach(azure_store("e2e"));
}

/// Faults: a fifth of all requests to the S3 server fail (503 SlowDown, connection resets, timeouts; half of
/// them after the request took effect), and the pageserver is killed with SIGKILL while its upload queue is
/// busy and restarted on the same workdir (the queue reconciles with the bucket), then once more thrown away
/// and attached on an empty workdir. The pages still equal the primary's, and every index in the bucket names
/// only layers that exist.
#[test]
fn faults_and_kill_during_uploads() {
    let store = s3_store("faults");
    let mut pg = workload_primary();
    let remote = format!("remote_storage={}", store.table);
    let overrides = [
        remote.as_str(),
        "test_remote_failures_probability=20",
        "checkpoint_distance=1048576",
        "compaction_threshold=4",
        "compaction_period='2s'",
    ];
    let mut ps = Pageserver::start_with_env(&overrides, store.env.clone());
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    let bucket = Bucket::open(&store);
    let (wal_log_db, killed_with) = std::thread::scope(|scope| {
        let work = scope.spawn(|| ingest_workload(&pg, "ft"));
        // Kill while uploads are queued or in flight.
        let deadline = Instant::now() + Duration::from_secs(120);
        let busy = loop {
            let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
            let q = &info["upload_queue"];
            let pending = q["queued"].as_u64().unwrap_or(0) + q["in_flight"].as_u64().unwrap_or(0);
            if pending > 0 && q["layers_uploaded"].as_u64().unwrap_or(0) > 3 {
                break q.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the upload queue was never busy: {info}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        ps.kill9();
        let (remote_lsn, _, _) = bucket.check_indexes(T, TL);
        println!("killed with the upload queue at {busy}; newest index at {remote_lsn}");
        std::thread::sleep(Duration::from_millis(500));
        ps.spawn(&overrides);
        (work.join().unwrap(), busy)
    });
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let failures = info["upload_queue"]["failures"].as_u64().unwrap_or(0);
    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps, T, TL);
    let info = ps.wait_remote(T, TL, last);
    let injected = ps.metric("pageserver_remote_faults_injected_total");
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[wal_log_db]);
    cmp.print(&format!(
        "restarted after a kill with the queue at {killed_with}; {injected} faults injected since, \
         {failures} queue failures; followed to {last}"
    ));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(
        injected > 0 && info["upload_queue"]["failures"].as_u64().unwrap_or(0) > 0,
        "{info}"
    );
    let (newest, indexes, layers) = bucket.check_indexes(T, TL);
    assert_eq!(newest, last);

    // And from the bucket alone, faults still on: a new pageserver on an empty workdir.
    ps.kill9();
    let fresh = Pageserver::start_with_env(&overrides, store.env.clone());
    fresh.attach(T, None);
    let cmp = compare_over_http(&fresh, T, TL, last, &pg, &[wal_log_db]);
    cmp.print(&format!(
        "attached with faults on: {indexes} indexes, {layers} layer objects in the bucket"
    ));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    let (_, body) = fresh.json("GET", &format!("/v1/tenant/{T}"), None);
    assert_eq!(
        body["generation"], 2,
        "the generation after the one in the bucket: {body}"
    );
}

/// Two pageservers that both believe they own the tenant: generation 1 keeps following the primary and
/// compacts (deleting the L0 layers it merged), generation 2 attached from the bucket in between. The older
/// one's deletions are dropped (a newer index exists), every layer generation 2's index names is still in the
/// bucket, and generation 2 still serves what it attached: its fullbackup has the primary's `pg_dumpall` of
/// that moment.
#[test]
fn an_older_generation_deletes_nothing_the_newer_index_names() {
    let store = s3_store("generations");
    let mut pg = workload_primary();
    let remote = format!("remote_storage={}", store.table);
    let overrides = [
        remote.as_str(),
        "checkpoint_distance=1048576",
        "compaction_threshold=2",
        "compaction_period='0s'",
        "gc_period='0s'",
        "pitr_interval='0s'",
    ];
    let ps1 = Pageserver::start_with_env(&overrides, store.env.clone());
    ps1.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 2);
    pg.sql("CHECKPOINT");
    let snap = snapshot(&pg);
    ps1.wait_remote(T, TL, snap.lsn);
    let bucket = Bucket::open(&store);

    let ps2 = Pageserver::start_with_env(&overrides, store.env.clone());
    ps2.attach(T, Some(2));
    let prefix = format!("tenants/{T}/timelines/{TL}/");
    let index2: serde_json::Value =
        serde_json::from_slice(&bucket.get(&format!("{prefix}index_part.json-00000002"))).unwrap();
    let named: Vec<String> = index2["layer_metadata"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, meta)| {
            format!(
                "{prefix}{name}-{:08x}",
                meta["generation"].as_u64().unwrap_or(0)
            )
        })
        .collect();
    assert!(named.len() > 2, "{index2}");

    // Generation 1 goes on: more WAL, a flush, a compaction that merges the L0s index 2 names, a GC.
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "500"]);
    pg.sql("CHECKPOINT");
    let now: Lsn = pg.current_lsn().parse().unwrap();
    ps1.wait_remote(T, TL, now);
    for (what, body) in [
        ("checkpoint", None),
        ("compact", None),
        ("do_gc", Some(r#"{"gc_horizon": 0}"#)),
    ] {
        let (s, answer) = ps1.request("PUT", &format!("/v1/tenant/{T}/timeline/{TL}/{what}"), body);
        assert_eq!(s, 200, "{what}: {answer}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ps1.metric("pageserver_remote_deletions_dropped_total") == 0 {
        assert!(
            Instant::now() < deadline,
            "generation 1 scheduled no deletion:\n{}",
            ps1.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dropped = ps1.metric("pageserver_remote_deletions_dropped_total");
    let executed = ps1.metric("pageserver_remote_deletions_executed_total");
    let keys: BTreeSet<String> = bucket.keys(&prefix).into_iter().collect();
    let missing: Vec<&String> = named.iter().filter(|k| !keys.contains(*k)).collect();
    println!(
        "generation 1 dropped {dropped} deletions and executed {executed}; generation 2's index names {} layers, {} missing",
        named.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "generation 1 deleted layers of generation 2's index: {missing:?}"
    );
    assert_eq!(executed, 0);

    // Generation 2 reads them all: its fullbackup boots with the primary's dump of when it attached.
    let (_, info) = ps2.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let at = lsn_field(&info, "last_record_lsn");
    assert_fullbackup_dump(&ps2, at, &snap);
    pg.stop();
}

/// Bytes of layer files (and downloads in progress) under a workdir's timelines.
fn local_layer_bytes(workdir: &std::path::Path) -> u64 {
    let mut total = 0;
    let tenants = workdir.join("tenants");
    let mut stack = vec![tenants];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            if meta.is_dir() {
                stack.push(e.path());
            } else if name.contains("__") {
                total += meta.len();
            }
        }
    }
    total
}

/// Eviction: a tenant several times larger than `disk_usage_max_bytes`, attached on an empty workdir, and
/// every page of every relation read through it. The layer files on disk never exceed the limit plus one
/// layer (sampled every 10 ms), every page is right, and the metrics show the downloads and evictions.
#[test]
fn eviction_keeps_the_local_disk_under_the_limit() {
    const LIMIT: u64 = 12 << 20;
    let store = s3_store("eviction");
    let mut pg = workload_primary();
    let remote = format!("remote_storage={}", store.table);
    let writer = [
        remote.as_str(),
        "checkpoint_distance=2097152",
        // Every L0 (even a lone one) merged into L1s of about 2 MiB: many small layers.
        "compaction_threshold=1",
        "compaction_target_size=2097152",
        // No image layers: their size is not bounded by compaction_target_size.
        "image_creation_threshold=1000",
        "compaction_period='1s'",
    ];
    let ps1 = Pageserver::start_with_env(&writer, store.env.clone());
    ps1.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 4);
    pg.sql("CHECKPOINT");
    let (last, _) = stop_primary_and_wait(&mut pg, &ps1, T, TL);
    for what in ["checkpoint", "compact"] {
        let (s, answer) = ps1.request("PUT", &format!("/v1/tenant/{T}/timeline/{TL}/{what}"), None);
        assert_eq!(s, 200, "{what}: {answer}");
    }
    ps1.wait_remote(T, TL, last);
    let (_, ps1_info) = ps1.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let drained = Instant::now() + Duration::from_secs(60);
    while ps1
        .json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None)
        .1["upload_queue"]["queued"]
        != 0
    {
        assert!(Instant::now() < drained, "upload queue never drained");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ps1);
    let bucket = Bucket::open(&store);
    let prefix = format!("tenants/{T}/timelines/{TL}/");
    let index: serde_json::Value =
        serde_json::from_slice(&bucket.get(&format!("{prefix}index_part.json-00000001"))).unwrap();
    let sizes: Vec<u64> = index["layer_metadata"]
        .as_object()
        .unwrap()
        .values()
        .map(|m| m["file_size"].as_u64().unwrap())
        .collect();
    let tenant_size: u64 = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap();
    assert!(
        tenant_size > 3 * LIMIT,
        "the tenant ({tenant_size} bytes) is not much larger than the limit"
    );

    let limit = format!("disk_usage_max_bytes={LIMIT}");
    let reader = Pageserver::start_with_env(&[remote.as_str(), limit.as_str()], store.env.clone());
    reader.attach(T, None);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (cmp, peak) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(local_layer_bytes(reader.workdir()));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        let cmp = compare_over_http(&reader, T, TL, last, &pg, &[]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (cmp, sampler.join().unwrap())
    });
    let downloads = reader.metric("pageserver_layer_downloads_total");
    let evictions = reader.metric("pageserver_layer_evictions_total");
    cmp.print(&format!(
        "tenant of {} layers, {tenant_size} bytes (largest {largest}), read under a limit of {LIMIT}: peak \
         {peak} bytes on disk, {downloads} downloads, {evictions} evictions (writer: {})",
        sizes.len(),
        ps1_info["current_physical_size"]
    ));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(
        peak <= LIMIT + largest,
        "peak {peak} above {LIMIT} + one layer ({largest})"
    );
    assert!(downloads > 10, "{downloads} downloads");
    assert!(evictions > 0);
}

/// A bootstrapped timeline on a local-path remote storage: its initdb output is uploaded once as
/// `initdb.tar.zst` (the local copy then removed), a branch gets an index of its own, and a detach removes
/// the local files (everything is remote): the attach that follows reads both timelines from remote storage.
#[test]
fn initdb_archive_detach_and_attach_from_a_local_path() {
    let remote_dir = tempfile::tempdir().unwrap();
    let remote = format!(
        "remote_storage={{local_path='{}'}}",
        remote_dir.path().display()
    );
    let ps = Pageserver::start(&[remote.as_str()]);
    ps.create_tenant(T);
    let info = ps.bootstrap(T, TL);
    let start = lsn_field(&info, "last_record_lsn");
    let branch = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    let body = json!({"new_timeline_id": branch, "ancestor_timeline_id": TL});
    let (s, answer) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&body.to_string()),
    );
    assert_eq!(s, 201, "{answer}");
    ps.wait_remote(T, TL, start);

    let archive = remote_dir
        .path()
        .join(format!("tenants/{T}/timelines/{TL}/initdb.tar.zst"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !archive.exists() {
        assert!(
            Instant::now() < deadline,
            "no initdb archive uploaded:\n{}",
            ps.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let data = zstd::decode_all(std::fs::File::open(&archive).unwrap()).unwrap();
    let mut tar = tar::Archive::new(&data[..]);
    let names: Vec<String> = tar
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string()
        })
        .collect();
    for want in ["PG_VERSION", "global/pg_control", "base/5/1259"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not in the archive: {names:?}"
        );
    }
    let local = ps
        .workdir()
        .join(format!("tenants/{T}/timelines/{TL}/initdb.tar.zst"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while local.exists() {
        assert!(
            Instant::now() < deadline,
            "the local archive is still there after its upload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let branch_index = remote_dir.path().join(format!(
        "tenants/{T}/timelines/{branch}/index_part.json-00000001"
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !branch_index.exists() {
        assert!(Instant::now() < deadline, "the branch has no index");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "initdb.tar.zst: {} bytes ({} uncompressed), {} entries",
        std::fs::metadata(&archive).unwrap().len(),
        data.len(),
        names.len()
    );

    // Detach: everything is uploaded, so the local files go; the attach reads remote storage.
    let body = json!({"mode": "Detached", "tenant_conf": {}});
    let (s, answer) = ps.json(
        "PUT",
        &format!("/v1/tenant/{T}/location_config"),
        Some(&body.to_string()),
    );
    assert_eq!(s, 200, "{answer}");
    assert!(
        !ps.workdir().join(format!("tenants/{T}")).exists(),
        "local files kept after detach"
    );
    ps.attach(T, None);
    let (_, tenant) = ps.json("GET", &format!("/v1/tenant/{T}"), None);
    assert_eq!(tenant["generation"], 2, "{tenant}");
    for tl in [TL, branch] {
        assert_eq!(ps.pg_class_page(T, tl), (200, 8192), "timeline {tl}");
    }
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{branch}"), None);
    assert_eq!(info["ancestor_timeline_id"], TL, "{info}");

    // Timeline delete: its remote objects go, the others stay.
    // 202, as Neon answers a timeline delete; here it is complete, remote objects included, when it answers.
    let (s, answer) = ps.request("DELETE", &format!("/v1/tenant/{T}/timeline/{branch}"), None);
    assert_eq!(s, 202, "{answer}");
    let branch_left = walk(
        remote_dir
            .path()
            .join(format!("tenants/{T}/timelines/{branch}"))
            .as_path(),
    );
    assert!(branch_left.is_empty(), "{branch_left:?}");
    assert!(
        !walk(
            remote_dir
                .path()
                .join(format!("tenants/{T}/timelines/{TL}"))
                .as_path()
        )
        .is_empty()
    );

    // Delete: the tenant's remote objects go too.
    let (s, answer) = ps.request("DELETE", &format!("/v1/tenant/{T}"), None);
    assert_eq!(s, 200, "{answer}");
    let left: Vec<_> = walk(remote_dir.path().join("tenants").as_path());
    assert!(
        left.is_empty(),
        "remote objects left after the delete: {left:?}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// A permanent error (the S3 server refuses the secret): the pageserver keeps serving and ingesting, timeline
/// detail and the metrics say the error is permanent, nothing is lost; with the right secret again the
/// queue catches up.
#[test]
fn permanent_errors_show_and_heal() {
    let store = s3_store("permanent");
    let remote = format!("remote_storage={}", store.table);
    let overrides = [remote.as_str(), "superuser='postgres'"];
    let mut ps = Pageserver::start_with_env(&overrides, store.env.clone());
    ps.create_tenant(T);
    let info = ps.bootstrap(T, TL);
    ps.wait_remote(T, TL, lsn_field(&info, "last_record_lsn"));
    ps.kill9();

    // The wrong secret: the signature check fails on every request.
    ps.env = store
        .env
        .iter()
        .map(|(k, v)| {
            let v = if k == "AWS_SECRET_ACCESS_KEY" {
                "wrong-secret".to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    ps.spawn(&overrides);
    let branch = "cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
    let body = json!({"new_timeline_id": branch, "ancestor_timeline_id": TL});
    let (s, answer) = ps.json(
        "POST",
        &format!("/v1/tenant/{T}/timeline"),
        Some(&body.to_string()),
    );
    assert_eq!(
        s, 201,
        "the node works without its remote storage: {answer}"
    );
    assert_eq!(ps.pg_class_page(T, branch), (200, 8192));
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{branch}"), None);
        let e = info["upload_queue"]["last_error"].clone();
        if e.is_object() {
            break e;
        }
        assert!(Instant::now() < deadline, "no error shown: {info}");
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("with a wrong secret, timeline detail shows {error}");
    assert_eq!(error["permanent"], true, "{error}");
    assert!(
        !error.to_string().contains("wrong-secret"),
        "the secret is not shown: {error}"
    );
    let (_, text) = ps.get("/metrics");
    assert!(
        text.lines().any(
            |l| l.starts_with("pageserver_timeline_upload_permanent_error{") && l.ends_with(" 1")
        ),
        "{text}"
    );
    assert!(
        !ps.log_text().contains("wrong-secret"),
        "the secret is in the log"
    );

    // The right secret: the queue reconciles, the branch's index arrives.
    ps.kill9();
    ps.env = store.env.clone();
    ps.spawn(&overrides);
    let bucket = Bucket::open(&store);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bucket
        .keys(&format!("tenants/{T}/timelines/{branch}/index_part.json"))
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the branch's index never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{branch}"), None);
    assert_eq!(
        info["upload_queue"]["last_error"],
        serde_json::Value::Null,
        "{info}"
    );
}
