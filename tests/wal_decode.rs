//! The WAL decoder against PostgreSQL's own `pg_waldump`, on real WAL of a PostgreSQL 15 and of a PostgreSQL
//! 18 primary (each checked with its own version's pg_waldump): every record's LSN, prev link, resource
//! manager, length, xid and block references, and every full-page image's details (hole, compression
//! method, apply flag), once per `wal_compression` method; and every record's body parses as its version's.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use pageserver::pg::constants::FORK_NAMES;
use pageserver::pg::lsn::{parse_wal_file_name, wal_file_name};
use pageserver::pg::page::{PageHeader, is_new};
use pageserver::pg::{Compression, Lsn};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, ddl_mix};

const SEG_SIZE: u32 = 16 * 1024 * 1024;

/// One record as both tools describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    lsn: Lsn,
    prev: Lsn,
    rmgr: String,
    tot_len: u32,
    xid: u32,
    blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    id: u32,
    rel: (u32, u32, u32),
    fork: String,
    blk: u32,
    /// (apply, hole offset, hole length, compression method) of a full-page image.
    image: Option<(bool, u32, u32, String)>,
}

fn parse_lsn(s: &str) -> Lsn {
    s.trim()
        .trim_end_matches(',')
        .parse()
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn between<'a>(line: &'a str, start: &str, end: &str) -> &'a str {
    let from = line
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {line}"))
        + start.len();
    let rest = &line[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

/// Parses `pg_waldump -b` output.
fn parse_pg_waldump(text: &str) -> Vec<Rec> {
    let mut out: Vec<Rec> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("rmgr: ") {
            let rmgr = rest[..rest.find(" len (rec/tot):").unwrap()]
                .trim()
                .to_string();
            let tot_len = between(line, "len (rec/tot):", ",")
                .split('/')
                .nth(1)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            out.push(Rec {
                lsn: parse_lsn(between(line, "lsn: ", ",")),
                prev: parse_lsn(between(line, "prev ", ",")),
                rmgr,
                tot_len,
                xid: between(line, "tx: ", ",").trim().parse().unwrap(),
                blocks: vec![],
            });
        } else if let Some(rest) = line.strip_prefix("\tblkref #") {
            let id = rest[..rest.find(':').unwrap()].parse().unwrap();
            let rel: Vec<u32> = between(line, "rel ", " ")
                .split('/')
                .map(|p| p.parse().unwrap())
                .collect();
            let image = line.contains("(FPW").then(|| {
                (
                    !line.contains("for WAL verification"),
                    between(line, "hole: offset: ", ",").parse().unwrap(),
                    between(line, "length: ", ",").parse().unwrap(),
                    if line.contains("method: ") {
                        between(line, "method: ", ",").to_string()
                    } else {
                        "none".to_string()
                    },
                )
            });
            out.last_mut()
                .expect("blkref before any record")
                .blocks
                .push(Block {
                    id,
                    rel: (rel[0], rel[1], rel[2]),
                    fork: between(line, " fork ", " ").to_string(),
                    blk: between(line, " blk ", " ")
                        .trim_end_matches(';')
                        .parse()
                        .unwrap(),
                    image,
                });
        }
    }
    out
}

/// Parses `pageserver waldump` output.
fn parse_ours(text: &str) -> Vec<Rec> {
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let u = |v: &serde_json::Value| v.as_u64().unwrap() as u32;
            Rec {
                lsn: parse_lsn(v["lsn"].as_str().unwrap()),
                prev: parse_lsn(v["prev"].as_str().unwrap()),
                rmgr: v["rmgr"].as_str().unwrap().to_string(),
                tot_len: u(&v["tot_len"]),
                xid: u(&v["xid"]),
                blocks: v["blocks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| Block {
                        id: u(&b["id"]),
                        rel: (u(&b["spc"]), u(&b["db"]), u(&b["rel"])),
                        fork: b["fork"].as_str().unwrap().to_string(),
                        blk: u(&b["blk"]),
                        image: b["image"].as_bool().unwrap().then(|| {
                            (
                                b["apply_image"].as_bool().unwrap(),
                                u(&b["hole_offset"]),
                                u(&b["hole_length"]),
                                b["compression"].as_str().unwrap().to_string(),
                            )
                        }),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn run_workload(major: u32, compression: &str) -> (PgCluster, Vec<PathBuf>) {
    let mut conf: Vec<String> = WORKLOAD_CONF.iter().map(|s| s.to_string()).collect();
    conf.push(format!("wal_compression = {compression}"));
    conf.push("full_page_writes = on".into());
    let mut pg = PgCluster::start_version(major, PgOptions { extra_conf: conf });
    pg.create_physical_slot("keep_all");
    let start = parse_lsn(&pg.sql("SELECT restart_lsn FROM pg_replication_slots"));

    pg.pgbench_init("postgres", 2);
    pg.sql("CHECKPOINT");
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    ddl_mix(&pg, "a");
    pg.sql("CHECKPOINT");
    ddl_mix(&pg, "b");
    pg.sql("SELECT pg_switch_wal()");
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "100"]);
    pg.stop();

    let end = parse_lsn(&pg.controldata("Latest checkpoint location"));
    let segments: Vec<PathBuf> = (start.segment_number(SEG_SIZE)..=end.segment_number(SEG_SIZE))
        .map(|segno| pg.wal_dir().join(wal_file_name(1, segno, SEG_SIZE)))
        .collect();
    assert!(
        segments.len() >= 3,
        "expected WAL of several segments, got {}",
        segments.len()
    );
    (pg, segments)
}

fn compare_with_pg_waldump(major: u32, compression: &str) {
    let (pg, segments) = run_workload(major, compression);
    let first = segments
        .first()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let last = segments
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(parse_wal_file_name(&first, SEG_SIZE).is_some());

    let theirs = Command::new(pg.program("pg_waldump"))
        .arg("-b")
        .arg("-p")
        .arg(pg.wal_dir())
        .args([&first, &last])
        .output()
        .unwrap();
    let theirs_err = String::from_utf8_lossy(&theirs.stderr);
    // pg_waldump ends with an error at the end of written WAL.
    assert!(
        theirs_err.contains("invalid record length") || theirs.status.success(),
        "{theirs_err}"
    );
    let theirs = parse_pg_waldump(&String::from_utf8_lossy(&theirs.stdout));

    let ours = Command::new(support::pageserver::binary())
        .arg("waldump")
        .args(&segments)
        .output()
        .unwrap();
    assert!(
        ours.status.success(),
        "pageserver waldump failed: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let ours = parse_ours(&String::from_utf8_lossy(&ours.stdout));

    let mut differences = 0;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a != b {
            differences += 1;
            if differences <= 5 {
                eprintln!("record {i} differs:\n  ours:       {a:?}\n  pg_waldump: {b:?}");
            }
        }
    }
    assert_eq!(ours.len(), theirs.len(), "record counts differ");
    assert_eq!(differences, 0, "{differences} records differ");

    let mut per_rmgr: BTreeMap<&str, u64> = BTreeMap::new();
    let mut images: BTreeMap<String, u64> = BTreeMap::new();
    for rec in &ours {
        *per_rmgr.entry(&rec.rmgr).or_default() += 1;
        for b in &rec.blocks {
            if let Some((_, _, _, method)) = &b.image {
                *images.entry(method.clone()).or_default() += 1;
            }
        }
    }
    println!(
        "PostgreSQL {major}, wal_compression={compression}: {} records compared with pg_waldump, 0 differences; \
         full-page images by method: {images:?}; records per rmgr: {per_rmgr:?}",
        ours.len()
    );
    assert!(
        images.get(compression).copied().unwrap_or(0) > 100,
        "too few {compression}-compressed images to prove anything: {images:?}"
    );
    check_restored_images(major, &segments);
}

/// Every full-page image restores to an 8 KiB page whose header is sane and whose LSN is not past the record;
/// the WAL is told to be `major`'s by its page magic, and every record's body parses as that version's.
fn check_restored_images(major: u32, segments: &[PathBuf]) {
    let mut checked = 0u64;
    let mut new_pages = 0u64;
    let version = pageserver::waldump::wal_version(&segments[0]).unwrap();
    assert_eq!(version.major(), major);
    pageserver::waldump::for_each_record(segments, |rec| {
        if let Err(e) = pageserver::pg::parse_body(rec, version) {
            panic!("{e}");
        }
        for b in &rec.blocks {
            let Some(image) = &b.image else { continue };
            let page = image
                .restore()
                .unwrap_or_else(|e| panic!("record at {}: block {}: {e}", rec.lsn, b.id));
            assert_eq!(page.len(), 8192);
            if is_new(&page) {
                new_pages += 1;
                continue;
            }
            let header = PageHeader::parse(&page).unwrap();
            header.check().unwrap_or_else(|e| {
                panic!(
                    "record at {}: image of {:?} fork {} blk {}: {e}",
                    rec.lsn, b.rnode, FORK_NAMES[b.forknum as usize], b.blkno
                )
            });
            assert!(
                header.lsn <= rec.lsn,
                "record at {}: image LSN {} is past it",
                rec.lsn,
                header.lsn
            );
            if image.compression() == Compression::None && image.hole_length > 0 {
                // An uncompressed image with a hole leaves out exactly pd_lower..pd_upper of a standard page.
                assert_eq!(image.hole_offset, header.lower, "record at {}", rec.lsn);
            }
            checked += 1;
        }
        Ok(())
    })
    .unwrap();
    println!(
        "restored full-page images: {checked} passed the page header check, {new_pages} all-zero pages"
    );
    assert!(checked > 100);
}

#[test]
fn matches_pg_waldump_with_pglz() {
    compare_with_pg_waldump(15, "pglz");
}

#[test]
fn matches_pg_waldump_with_lz4() {
    compare_with_pg_waldump(15, "lz4");
}

#[test]
fn matches_pg_waldump_with_zstd() {
    compare_with_pg_waldump(15, "zstd");
}

#[test]
fn postgresql_18_matches_pg_waldump_with_pglz() {
    compare_with_pg_waldump(18, "pglz");
}

#[test]
fn postgresql_18_matches_pg_waldump_with_lz4() {
    compare_with_pg_waldump(18, "lz4");
}

#[test]
fn postgresql_18_matches_pg_waldump_with_zstd() {
    compare_with_pg_waldump(18, "zstd");
}
