//! Damaged layer files: one byte flipped in each region of a layer file (the footer, the index, a data block
//! of a delta and of an image layer) while the pageserver is down. Each damage is found by its checksum, the
//! file is named in the log and counted in `pageserver_layer_damaged_total`, and nothing from it is served:
//! - with remote storage (S3, SeaweedFS) the damaged file is replaced by the remote copy and every read gives
//!   the value it gave before the damage, and every page equals the primary's;
//! - without remote storage the read that needs the damaged block fails with an error naming the file, other
//!   reads are served, and a damaged footer makes the tenant Broken with the file in the reason;
//! - a layer damaged before its upload never reaches remote storage: the upload queue stops at it.

mod support;

use std::path::{Path, PathBuf};

use pageserver::pg::Lsn;
use pageserver::repository::Key;
use pageserver::repository::layers::LayerName;
use serde_json::json;
use support::compare::{compare_over_http, stop_primary_and_wait};
use support::objstore::S3Server;
use support::pageserver::Pageserver;
use support::pg::{PgCluster, PgOptions};

const T: &str = "0123456789abcdef0123456789abcdef";
const TL: &str = "abababababababababababababababab";

/// Sizes of the container (docs/storage-format.md §3).
const FOOTER: usize = 96;
const KEY: usize = 18;

/// What the footer of a layer file says, read from its raw bytes.
struct Layout {
    delta: bool,
    index_offset: usize,
    index_len: usize,
    lsn_start: Lsn,
}

impl Layout {
    fn read(bytes: &[u8]) -> Layout {
        let f = &bytes[bytes.len() - FOOTER..];
        let u64_at = |at: usize| u64::from_be_bytes(f[at..at + 8].try_into().unwrap());
        Layout {
            delta: &f[88..96] == b"PSLDELTA",
            lsn_start: Lsn(u64_at(40)),
            index_offset: u64_at(56) as usize,
            index_len: u64_at(64) as usize,
        }
    }

    fn entry_size(&self) -> usize {
        if self.delta { KEY + 16 } else { KEY + 8 }
    }

    /// Index entry `i`: (key, LSN of the version, offset of its block).
    fn entry(&self, bytes: &[u8], i: usize) -> (Key, Lsn, usize) {
        let e = &bytes[self.index_offset + i * self.entry_size()..][..self.entry_size()];
        let key = Key::from_bytes(e[..KEY].try_into().unwrap());
        let u64_at = |at: usize| u64::from_be_bytes(e[at..at + 8].try_into().unwrap());
        if self.delta {
            (key, Lsn(u64_at(KEY)), u64_at(KEY + 8) as usize)
        } else {
            (key, self.lsn_start, u64_at(KEY) as usize)
        }
    }

    fn entries(&self) -> usize {
        self.index_len / self.entry_size()
    }
}

/// Where a byte gets flipped.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Region {
    Footer,
    Index,
    Block,
}

/// One layer file to damage, and a version it holds (read before and after).
struct Target {
    path: PathBuf,
    region: Region,
    key: Key,
    lsn: Lsn,
    flip_at: usize,
    /// The file as written.
    original: Vec<u8>,
}

impl Target {
    /// The middle index entry of `path`; the flip lands in `region` (in a block: that entry's block).
    fn new(path: &Path, region: Region) -> Target {
        let bytes = std::fs::read(path).unwrap();
        let layout = Layout::read(&bytes);
        let n = layout.entries();
        assert!(n > 0, "{} has no entries", path.display());
        let (key, lsn, block) = layout.entry(&bytes, n / 2);
        let flip_at = match region {
            // In key_start, under the footer crc.
            Region::Footer => bytes.len() - FOOTER + 10,
            Region::Index => layout.index_offset + (n / 2) * layout.entry_size() + 3,
            Region::Block => block + 1,
        };
        Target {
            path: path.to_path_buf(),
            region,
            key,
            lsn,
            flip_at,
            original: bytes,
        }
    }

    fn file_name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into()
    }

    fn flip(&self) {
        let mut bytes = std::fs::read(&self.path).unwrap();
        bytes[self.flip_at] ^= 0x20;
        std::fs::write(&self.path, bytes).unwrap();
    }

    fn getpage(&self) -> String {
        format!(
            "/v1/tenant/{T}/timeline/{TL}/getpage?key={}&lsn={}",
            self.key, self.lsn
        )
    }
}

fn timeline_dir(ps: &Pageserver) -> PathBuf {
    ps.workdir()
        .join("tenants")
        .join(T)
        .join("timelines")
        .join(TL)
}

/// The timeline's layer files: (deltas, images), largest first.
fn layer_files(ps: &Pageserver) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut files: Vec<(u64, PathBuf, bool)> = std::fs::read_dir(timeline_dir(ps))
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name: LayerName = e.file_name().to_string_lossy().parse().ok()?;
            Some((e.metadata().unwrap().len(), e.path(), name.is_delta()))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let deltas = files.iter().filter(|f| f.2).map(|f| f.1.clone()).collect();
    let images = files.iter().filter(|f| !f.2).map(|f| f.1.clone()).collect();
    (deltas, images)
}

/// A primary after pgbench, followed by a pageserver that flushed small layers and compacted them (L1 deltas
/// and image layers); the primary is stopped and the pageserver holds its last record. Returns that LSN.
fn followed_and_compacted(pg: &mut PgCluster, ps: &Pageserver) -> Lsn {
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 1);
    for _ in 0..3 {
        pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
        let (s, body) = ps.request(
            "PUT",
            &format!("/v1/tenant/{T}/timeline/{TL}/checkpoint?wait_until_flushed=true"),
            None,
        );
        assert_eq!(s, 200, "{body}");
    }
    let (last, _) = stop_primary_and_wait(pg, ps, T, TL);
    for path in ["checkpoint?wait_until_flushed=true", "compact"] {
        let (s, body) = ps.request("PUT", &format!("/v1/tenant/{T}/timeline/{TL}/{path}"), None);
        assert_eq!(s, 200, "{body}");
    }
    last
}

/// Waits until the upload queue is empty: every layer, the images of the compaction too, is in the bucket.
fn wait_uploads_done(ps: &Pageserver) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
        let q = &info["upload_queue"];
        if q["queued"].as_u64() == Some(0) && q["in_flight"].as_u64() == Some(0) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "uploads never finished: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

const LAYERS: &[&str] = &[
    "checkpoint_distance=1048576",
    "compaction_threshold=3",
    "compaction_target_size=262144",
    "image_creation_threshold=1",
    "compaction_period='0s'",
    "gc_period='0s'",
];

#[test]
fn damaged_layers_are_replaced_from_remote_storage() {
    let s3 = S3Server::start();
    let remote = format!("remote_storage={}", s3.remote_storage("damage"));
    let mut overrides = LAYERS.to_vec();
    overrides.push(&remote);
    let mut pg = PgCluster::start(PgOptions::default());
    let mut ps = Pageserver::start_with_env(&overrides, s3.env());
    let last = followed_and_compacted(&mut pg, &ps);
    ps.wait_remote(T, TL, last);
    wait_uploads_done(&ps);
    ps.kill9();

    let (deltas, images) = layer_files(&ps);
    assert!(
        deltas.len() >= 3 && !images.is_empty(),
        "compaction left {} deltas and {} images",
        deltas.len(),
        images.len()
    );
    let targets = [
        Target::new(&deltas[0], Region::Footer),
        Target::new(&deltas[1], Region::Index),
        Target::new(&deltas[2], Region::Block),
        Target::new(&images[0], Region::Block),
    ];
    // What each version reads as before the damage.
    ps.spawn(&overrides);
    ps.wait_remote(T, TL, last);
    let before: Vec<Vec<u8>> = targets
        .iter()
        .map(|t| {
            let (s, bytes) = ps.get_bytes(&t.getpage());
            assert_eq!(
                s,
                200,
                "{}: {}",
                t.file_name(),
                String::from_utf8_lossy(&bytes)
            );
            bytes
        })
        .collect();
    ps.kill9();

    for t in &targets {
        t.flip();
    }
    ps.spawn(&overrides);
    ps.wait_remote(T, TL, last);
    // Footer and index damage are found when the layers are opened at the load.
    assert_eq!(ps.metric("pageserver_layer_damaged_total"), 2);
    let downloads_before = ps.metric("pageserver_layer_downloads_total");
    for (t, want) in targets.iter().zip(&before) {
        let (s, got) = ps.get_bytes(&t.getpage());
        assert_eq!(
            s,
            200,
            "{:?} {}: {}",
            t.region,
            t.file_name(),
            String::from_utf8_lossy(&got)
        );
        assert!(
            &got == want,
            "{:?} {}: a different value after the damage",
            t.region,
            t.file_name()
        );
    }
    let damaged = ps.metric("pageserver_layer_damaged_total");
    let downloads = ps.metric("pageserver_layer_downloads_total") - downloads_before;
    assert_eq!(damaged, 4, "every damaged file is counted once");
    assert!(
        downloads >= 4,
        "each damaged file is downloaded again: {downloads}"
    );
    let log = ps.log_text();
    for t in &targets {
        let line = log
            .lines()
            .find(|l| l.contains(&t.file_name()) && l.contains("remote copy"))
            .unwrap_or_else(|| panic!("no log line names {} ({:?})", t.file_name(), t.region));
        println!("{:?}: {line}", t.region);
        assert!(
            line.contains("checksum mismatch") || line.contains("corrupt"),
            "{line}"
        );
        // The file on disk is the remote copy again, byte for byte what was written.
        let now = std::fs::read(&t.path).unwrap();
        assert!(now == t.original, "{} is not the original", t.file_name());
    }

    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    cmp.print(&format!(
        "after replacing {damaged} damaged layer files ({downloads} downloads)"
    ));
    assert!(
        cmp.mismatches.is_empty(),
        "{} mismatches",
        cmp.mismatches.len()
    );
    assert!(cmp.equal.get("main").copied().unwrap_or(0) > 100);
}

#[test]
fn without_remote_storage_a_damaged_layer_is_never_served() {
    let mut pg = PgCluster::start(PgOptions::default());
    let mut ps = Pageserver::start(LAYERS);
    let last = followed_and_compacted(&mut pg, &ps);
    ps.kill9();
    let (deltas, images) = layer_files(&ps);
    assert!(!deltas.is_empty() && !images.is_empty());

    // A data block of the image layer: that read fails, naming the file; the rest is served.
    let block = Target::new(&images[0], Region::Block);
    let intact = Target::new(&images[0], Region::Index);
    let other = {
        let bytes = std::fs::read(&images[0]).unwrap();
        let layout = Layout::read(&bytes);
        let (key, lsn, _) = layout.entry(&bytes, 0);
        assert_ne!(key, block.key);
        Target { key, lsn, ..intact }
    };
    block.flip();
    ps.spawn(LAYERS);
    for _ in 0..3 {
        let (s, body) = ps.get(&block.getpage());
        assert_eq!(s, 500, "{body}");
        assert!(
            body.contains(&block.file_name()) && body.contains("checksum mismatch"),
            "{body}"
        );
    }
    let (s, _) = ps.get_bytes(&other.getpage());
    assert_eq!(s, 200, "a key in an intact block of the same file");
    assert_eq!(
        ps.metric("pageserver_layer_damaged_total"),
        1,
        "counted once"
    );
    let log = ps.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&block.file_name()) && l.contains("no remote copy")),
        "the log names the file"
    );
    let cmp = compare_over_http(&ps, T, TL, last, &pg, &[]);
    println!(
        "with a damaged block: {} mismatches (each the damaged key), equal {:?}",
        cmp.mismatches.len(),
        cmp.equal
    );
    for m in &cmp.mismatches {
        assert!(
            m.contains(&block.file_name()),
            "only the damaged block fails: {m}"
        );
    }

    // A damaged footer: the layer cannot be opened, the tenant is Broken and the reason names the file.
    ps.kill9();
    let footer = Target::new(&deltas[0], Region::Footer);
    footer.flip();
    ps.spawn(LAYERS);
    let (s, list) = ps.json("GET", "/v1/tenant", None);
    assert_eq!(s, 200, "{list}");
    let entry = &list[0];
    assert_eq!(entry["state"], "Broken", "{entry}");
    let reason = entry["broken_reason"].as_str().unwrap_or_default();
    assert!(reason.contains(&footer.file_name()), "{entry}");
    println!("a damaged footer: Broken: {reason}");
    assert_eq!(ps.metric("pageserver_layer_damaged_total"), 1);
    let (s, body) = ps.get(&block.getpage());
    assert_ne!(s, 200, "{body}");
}

/// A layer file damaged before its upload is never uploaded: the upload queue stops at it with a permanent
/// error naming the check, remote_consistent_lsn stays below it (so the primary keeps the WAL to rebuild it),
/// and the file is counted and logged.
#[test]
fn a_damaged_layer_is_never_uploaded() {
    let bucket = tempfile::tempdir().unwrap();
    let remote = format!(
        "remote_storage={{local_path='{}'}}",
        bucket.path().display()
    );
    let overrides = [remote.as_str(), "checkpoint_distance=1048576"];
    let pg = PgCluster::start(PgOptions::default());
    let mut ps = Pageserver::start(&overrides);
    ps.follow(T, json!({}), TL, &pg.connstr("postgres"), "pageserver");
    pg.pgbench_init("postgres", 1);
    let now: Lsn = pg.current_lsn().parse().unwrap();
    ps.wait_ingested(T, TL, now);
    let (s, body) = ps.request(
        "PUT",
        &format!("/v1/tenant/{T}/timeline/{TL}/checkpoint?wait_until_flushed=true"),
        None,
    );
    assert_eq!(s, 200, "{body}");
    ps.wait_remote(T, TL, now);
    wait_uploads_done(&ps);

    // The next layer upload aborts the process: that layer is on the local disk only.
    ps.kill9();
    ps.env = vec![("PAGESERVER_FAILPOINT".into(), "before-upload-layer".into())];
    ps.spawn(&overrides);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    // The fail point may abort the process before or while it answers: no answer is expected.
    let _ = ps.try_request(
        "PUT",
        &format!("/v1/tenant/{T}/timeline/{TL}/checkpoint?wait_until_flushed=true"),
        None,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ps.try_get("/v1/status").is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fail point was never hit"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    ps.kill9();
    ps.env.clear();
    let remote_dir = bucket
        .path()
        .join("tenants")
        .join(T)
        .join("timelines")
        .join(TL);
    let in_bucket = |name: &str| {
        std::fs::read_dir(&remote_dir)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(name))
    };
    let (deltas, _) = layer_files(&ps);
    let local_only: Vec<&PathBuf> = deltas
        .iter()
        .filter(|p| !in_bucket(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    assert!(!local_only.is_empty(), "a layer that was not uploaded");
    let target = Target::new(local_only[0], Region::Block);
    target.flip();

    ps.spawn(&overrides);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let error = loop {
        let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
        let e = &info["upload_queue"]["last_error"];
        if e["permanent"] == true {
            break e.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no permanent upload error: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    println!("upload queue: {error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&target.file_name()) && message.contains("checksum mismatch"),
        "{message}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        !in_bucket(&target.file_name()),
        "the damaged layer reached remote storage"
    );
    let (_, info) = ps.json("GET", &format!("/v1/tenant/{T}/timeline/{TL}"), None);
    let remote_lsn: Lsn = info["remote_consistent_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let name: LayerName = target.file_name().parse().unwrap();
    let layer_end = name.lsn_range().end;
    assert!(
        remote_lsn < layer_end,
        "remote_consistent_lsn {remote_lsn} past the layer's end {layer_end}"
    );
    assert_eq!(ps.metric("pageserver_layer_damaged_total"), 1);
    assert!(ps.log_text().contains("not uploaded"));
    let slot: Lsn = pg
        .sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'pageserver'")
        .parse()
        .unwrap();
    assert!(slot <= remote_lsn, "the primary keeps the WAL from {slot}");
}
