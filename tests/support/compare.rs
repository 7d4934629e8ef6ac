//! Compares what a timeline serves with a PostgreSQL 15 data directory, page by page, masked the way
//! wal_consistency_checking masks (pg::mask), with the differences a streaming standby has too (listed in
//! docs/testing.md), each tolerated narrowly and counted by name.

use std::collections::BTreeMap;
use std::path::Path;

use pageserver::pg::constants::{INIT_FORKNUM, MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use pageserver::pg::mask::{PageKind, guess_page_kind, mask_for_comparison};
use pageserver::pg::{Lsn, RelFileNode};
use pageserver::repository::Key;
use pageserver::repository::timeline::Timeline;
use pageserver::walredo::SlruKind;

#[derive(Debug, Default)]
pub struct Comparison {
    /// Blocks compared and equal, by fork name.
    pub equal: BTreeMap<&'static str, u64>,
    /// Tolerated differences, by rule.
    pub tolerated: BTreeMap<&'static str, u64>,
    pub mismatches: Vec<String>,
    pub relations: u64,
}

fn empty_or_new(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
        || (u16::from_le_bytes([page[12], page[13]]) == 24
            && u16::from_le_bytes([page[14], page[15]]) == 8192
            && page[24..].iter().all(|&b| b == 0))
}

/// Where the pages to compare come from: a timeline in this process, or a pageserver over HTTP.
pub trait PageSource {
    fn page(
        &self,
        key: Key,
        lsn: Lsn,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, String>>;
    fn rel_size(
        &self,
        rnode: RelFileNode,
        fork: u8,
        lsn: Lsn,
    ) -> impl std::future::Future<Output = Option<u32>>;
}

impl PageSource for Timeline {
    async fn page(&self, key: Key, lsn: Lsn) -> Result<Vec<u8>, String> {
        self.get(key, lsn)
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string())
    }
    async fn rel_size(&self, rnode: RelFileNode, fork: u8, lsn: Lsn) -> Option<u32> {
        Timeline::rel_size(self, rnode, fork, lsn).await.ok()
    }
}

/// A timeline of a pageserver, read with the debug route `getpage`.
pub struct HttpTimeline<'a> {
    pub server: &'a super::pageserver::Pageserver,
    pub tenant: String,
    pub timeline: String,
}

impl PageSource for HttpTimeline<'_> {
    async fn page(&self, key: Key, lsn: Lsn) -> Result<Vec<u8>, String> {
        let (s, bytes) = self.server.get_bytes(&format!(
            "/v1/tenant/{}/timeline/{}/getpage?key={key}&lsn={lsn}",
            self.tenant, self.timeline
        ));
        if s == 200 {
            Ok(bytes)
        } else {
            Err(format!("HTTP {s}: {}", String::from_utf8_lossy(&bytes)))
        }
    }
    async fn rel_size(&self, rnode: RelFileNode, fork: u8, lsn: Lsn) -> Option<u32> {
        let bytes = self.page(Key::rel_size(rnode, fork), lsn).await.ok()?;
        Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?))
    }
}

/// Every main, vm and init fork file under `pgdata` (base/<db>/ and global/), against `tl` at `lsn`.
/// `wal_log_dbs`: databases made by CREATE DATABASE ... STRATEGY wal_log (their VM maps are not logged).
pub async fn compare_relations(
    tl: &impl PageSource,
    lsn: Lsn,
    pgdata: &Path,
    wal_log_dbs: &[u32],
    out: &mut Comparison,
) {
    let mut dirs: Vec<(u32, u32, std::path::PathBuf)> = vec![(1664, 0, pgdata.join("global"))];
    for entry in std::fs::read_dir(pgdata.join("base")).unwrap() {
        let entry = entry.unwrap();
        if let Ok(db) = entry.file_name().to_string_lossy().parse::<u32>() {
            dirs.push((1663, db, entry.path()));
        }
    }
    for (spc, db, dir) in dirs {
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        files.sort();
        let has_init: std::collections::BTreeSet<u32> = files
            .iter()
            .filter_map(|f| f.strip_suffix("_init")?.parse().ok())
            .collect();
        for name in &files {
            let (base, seg) = match name.split_once('.') {
                Some((b, s)) => (b, s.parse::<u32>().unwrap_or(0)),
                None => (name.as_str(), 0),
            };
            let (rel_text, fork) = match base.rsplit_once('_') {
                Some((r, "vm")) => (r, VISIBILITYMAP_FORKNUM),
                Some((r, "init")) => (r, INIT_FORKNUM),
                Some(_) => continue, // _fsm: not WAL-logged, not compared
                None => (base, MAIN_FORKNUM),
            };
            let Ok(rel) = rel_text.parse::<u32>() else {
                continue;
            }; // pg_filenode.map, PG_VERSION, pg_internal.init
            if fork == MAIN_FORKNUM && has_init.contains(&rel) {
                out.tolerated
                    .entry("unlogged main fork (only its init fork is in WAL)")
                    .and_modify(|n| *n += 1)
                    .or_insert(1);
                continue;
            }
            let rnode = RelFileNode { spc, db, rel };
            let data = std::fs::read(dir.join(name)).unwrap();
            if seg == 0 {
                out.relations += 1;
            }
            let ours_size = tl.rel_size(rnode, fork, lsn).await;
            // The fork's size in blocks on the primary: this segment is the last one when no next one exists.
            let next_segment = dir.join(format!("{}.{}", base, seg + 1));
            if !next_segment.exists() {
                let file_blocks = seg * 131072 + (data.len() / 8192) as u32;
                match ours_size {
                    Some(n) if n > file_blocks => out.mismatches.push(format!(
                        "{rnode:?} fork {fork}: {n} blocks here, {file_blocks} in the file"
                    )),
                    Some(n) if n == file_blocks => {
                        *out.equal.entry("relation sizes").or_default() += 1
                    }
                    _ => {}
                }
            }
            for (i, theirs) in data.chunks(8192).enumerate() {
                let blk = seg * 131072 + i as u32;
                let fork_name = ["main", "fsm", "vm", "init"][fork as usize];
                if ours_size.is_none_or(|n| blk >= n) {
                    if empty_or_new(theirs) {
                        *out.tolerated
                            .entry("empty page the WAL never extended to")
                            .or_default() += 1;
                    } else {
                        out.mismatches.push(format!(
                            "{rnode:?} {fork_name} blk {blk}: missing (our size {ours_size:?})"
                        ));
                    }
                    continue;
                }
                let ours = match tl.page(Key::rel_block(rnode, fork, blk), lsn).await {
                    Ok(p) => p,
                    Err(e) => {
                        out.mismatches
                            .push(format!("{rnode:?} {fork_name} blk {blk}: {e}"));
                        continue;
                    }
                };
                let kind = guess_page_kind(fork, blk, theirs);
                let (mut a, mut b) = (ours.to_vec(), theirs.to_vec());
                let _ = mask_for_comparison(fork, blk, kind, &mut a);
                let _ = mask_for_comparison(fork, blk, kind, &mut b);
                if kind == PageKind::SpGist && blk == 0 {
                    // SpGistUpdateMetaPage caches last-used pages without WAL.
                    a[28..92].fill(0);
                    b[28..92].fill(0);
                }
                if a == b {
                    *out.equal.entry(fork_name).or_default() += 1;
                } else if kind == PageKind::Sequence {
                    *out.tolerated
                        .entry("sequence page (state logged SEQ_LOG_VALS ahead)")
                        .or_default() += 1;
                } else if fork == VISIBILITYMAP_FORKNUM
                    && wal_log_dbs.contains(&db)
                    && ours[24..].iter().all(|&x| x == 0)
                {
                    *out.tolerated.entry("VM of a database copied with STRATEGY wal_log (map is the image's hole)").or_default() += 1;
                } else if empty_or_new(theirs) && empty_or_new(&ours) {
                    *out.tolerated
                        .entry("empty vs freshly initialised page")
                        .or_default() += 1;
                } else {
                    let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
                    out.mismatches.push(format!(
                        "{rnode:?} {fork_name} blk {blk} ({kind:?}): first difference at byte {at}"
                    ));
                }
            }
        }
    }
}

/// Every pg_xact and pg_multixact page, byte for byte.
pub async fn compare_slru(tl: &impl PageSource, lsn: Lsn, pgdata: &Path, out: &mut Comparison) {
    for (kind, sub, name) in [
        (SlruKind::Clog, "pg_xact", "pg_xact"),
        (
            SlruKind::MultiXactOffsets,
            "pg_multixact/offsets",
            "pg_multixact/offsets",
        ),
        (
            SlruKind::MultiXactMembers,
            "pg_multixact/members",
            "pg_multixact/members",
        ),
    ] {
        for entry in std::fs::read_dir(pgdata.join(sub)).unwrap() {
            let entry = entry.unwrap();
            let Ok(segno) = u32::from_str_radix(&entry.file_name().to_string_lossy(), 16) else {
                continue;
            };
            let data = std::fs::read(entry.path()).unwrap();
            for (blk, theirs) in data.chunks(8192).enumerate() {
                match tl.page(Key::slru_block(kind, segno, blk as u32), lsn).await {
                    Ok(ours) if ours[..] == theirs[..] => *out.equal.entry(name).or_default() += 1,
                    Ok(_) => out
                        .mismatches
                        .push(format!("{name} segment {segno} page {blk} differs")),
                    Err(_) if theirs.iter().all(|&b| b == 0) => {
                        *out.tolerated
                            .entry("SLRU page zeroed outside the WAL")
                            .or_default() += 1
                    }
                    Err(e) => out
                        .mismatches
                        .push(format!("{name} segment {segno} page {blk}: {e}")),
                }
            }
        }
    }
}

/// Waits until the timeline's last record is past the primary's shutdown checkpoint (that record reaches the
/// pageserver before the walsender exits); returns it and the timeline's info.
pub fn wait_past(
    ps: &super::pageserver::Pageserver,
    tenant: &str,
    timeline: &str,
    shutdown_checkpoint: Lsn,
) -> (Lsn, serde_json::Value) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (_, info) = ps.json(
            "GET",
            &format!("/v1/tenant/{tenant}/timeline/{timeline}"),
            None,
        );
        let last: Lsn = info["last_record_lsn"].as_str().unwrap().parse().unwrap();
        if last > shutdown_checkpoint {
            return (last, info);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ingest stuck at {last}, primary ended at {shutdown_checkpoint}: {info}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Stops the primary cleanly and waits until the timeline holds its shutdown checkpoint; returns the
/// timeline's last record and info.
pub fn stop_primary_and_wait(
    pg: &mut super::pg::PgCluster,
    ps: &super::pageserver::Pageserver,
    tenant: &str,
    timeline: &str,
) -> (Lsn, serde_json::Value) {
    pg.stop();
    let shutdown_checkpoint: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    wait_past(ps, tenant, timeline, shutdown_checkpoint)
}

impl Comparison {
    /// Prints the counts and the first mismatches under `label`.
    pub fn print(&self, label: &str) {
        println!(
            "{label}: relations {}, equal {:?}, tolerated {:?}, mismatches {}",
            self.relations,
            self.equal,
            self.tolerated,
            self.mismatches.len()
        );
        for m in self.mismatches.iter().take(15) {
            println!("  {m}");
        }
    }
}

/// Every relation (`wal_log_dbs`: databases copied with STRATEGY wal_log) and SLRU page the pageserver serves
/// over HTTP at `last`, against the stopped primary's files.
pub fn compare_over_http(
    ps: &super::pageserver::Pageserver,
    tenant: &str,
    timeline: &str,
    last: Lsn,
    pg: &super::pg::PgCluster,
    wal_log_dbs: &[u32],
) -> Comparison {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let source = HttpTimeline {
        server: ps,
        tenant: tenant.into(),
        timeline: timeline.into(),
    };
    let mut cmp = Comparison::default();
    rt.block_on(compare_relations(
        &source,
        last,
        pg.data_dir(),
        wal_log_dbs,
        &mut cmp,
    ));
    rt.block_on(compare_slru(&source, last, pg.data_dir(), &mut cmp));
    cmp
}

/// A timeline read through a pagestream session of the page service: GetPage and Nblocks at the LSN (as a
/// standby asks: request_lsn = not_modified_since = the LSN), SLRU pages through GetSlruSegment (each segment
/// fetched once).
pub struct PagestreamTimeline {
    pub session: tokio::sync::Mutex<pageserver::page_service::client::PagestreamSession>,
    segments: tokio::sync::Mutex<BTreeMap<(u8, u32), Option<bytes::Bytes>>>,
    next_id: std::sync::atomic::AtomicU64,
}

use pageserver::page_service::pagestream::{Request, RequestBody, RequestHeader, ResponseBody};

impl PagestreamTimeline {
    pub fn new(session: pageserver::page_service::client::PagestreamSession) -> PagestreamTimeline {
        PagestreamTimeline {
            session: tokio::sync::Mutex::new(session),
            segments: Default::default(),
            next_id: Default::default(),
        }
    }

    /// One request at `lsn`; Err for an Error response.
    pub async fn ask(&self, body: RequestBody, lsn: Lsn) -> Result<ResponseBody, String> {
        let req = Request {
            hdr: RequestHeader {
                reqid: self
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                request_lsn: lsn,
                not_modified_since: lsn,
            },
            body,
        };
        match self.session.lock().await.request(&req).await {
            Ok(ResponseBody::Error(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(e) => panic!("pagestream session failed: {e}"),
        }
    }

    fn slru_code(kind: SlruKind) -> u8 {
        match kind {
            SlruKind::Clog => 0,
            SlruKind::MultiXactMembers => 1,
            SlruKind::MultiXactOffsets => 2,
        }
    }

    /// A whole SLRU segment (None if it does not exist).
    pub async fn segment(&self, kind: SlruKind, segno: u32, lsn: Lsn) -> Option<bytes::Bytes> {
        let key = (Self::slru_code(kind), segno);
        if let Some(s) = self.segments.lock().await.get(&key) {
            return s.clone();
        }
        let seg = match self
            .ask(RequestBody::GetSlruSegment { kind, segno }, lsn)
            .await
        {
            Ok(ResponseBody::GetSlruSegment(b)) => Some(b),
            _ => None,
        };
        self.segments.lock().await.insert(key, seg.clone());
        seg
    }
}

impl PageSource for PagestreamTimeline {
    async fn page(&self, key: Key, lsn: Lsn) -> Result<Vec<u8>, String> {
        match key.page_id() {
            Some(pageserver::walredo::PageId::Rel(tag)) => {
                let body = RequestBody::GetPage {
                    rel: tag.rnode,
                    fork: tag.forknum,
                    blkno: tag.blkno,
                };
                match self.ask(body, lsn).await? {
                    ResponseBody::GetPage(p) => Ok(p.to_vec()),
                    other => Err(format!("GetPage answered {other:?}")),
                }
            }
            Some(pageserver::walredo::PageId::Slru { kind, pageno }) => {
                let seg = self
                    .segment(kind, pageno / 32, lsn)
                    .await
                    .ok_or_else(|| format!("no SLRU segment {}", pageno / 32))?;
                let at = (pageno % 32) as usize * 8192;
                seg.get(at..at + 8192)
                    .map(|p| p.to_vec())
                    .ok_or_else(|| format!("SLRU page {pageno} is past its segment's end"))
            }
            None => Err(format!("{key} is not a page")),
        }
    }

    async fn rel_size(&self, rnode: RelFileNode, fork: u8, lsn: Lsn) -> Option<u32> {
        match self
            .ask(RequestBody::Nblocks { rel: rnode, fork }, lsn)
            .await
        {
            Ok(ResponseBody::Nblocks(n)) => Some(n),
            _ => None,
        }
    }
}
