//! Rust-applied CLOG and multixact records reproduce, byte for byte, the `pg_xact` and `pg_multixact` pages
//! of a PostgreSQL 15 primary after a clean shutdown. The WAL is read from the cluster's very first segment.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use pageserver::pg::lsn::wal_file_name;
use pageserver::pg::{Lsn, parse_body};
use pageserver::walingest::PageChange;
use pageserver::walingest::slru::{SLRU_PAGES_PER_SEGMENT, slru_changes};
use pageserver::walredo::{PageId, SlruKind, native};
use support::pg::{PgCluster, PgOptions};
use support::workload::{WORKLOAD_CONF, aborts, ddl_mix, multixact_workload};

const SEG_SIZE: u32 = 16 * 1024 * 1024;

#[test]
fn clog_and_multixact_pages_match_the_primary() {
    let mut conf: Vec<String> = WORKLOAD_CONF.iter().map(|s| s.to_string()).collect();
    // Keep every WAL segment from initdb on: the SLRU pages are rebuilt from the first record.
    conf.push("wal_keep_size = '4GB'".into());
    let mut pg = PgCluster::start(PgOptions { extra_conf: conf });
    pg.pgbench_init("postgres", 1);
    pg.pgbench("postgres", &["-n", "-c", "2", "-t", "300"]);
    ddl_mix(&pg, "slru");
    aborts(&pg);
    // More than one offsets page (2048 multixacts each) and members page (1636 members each).
    multixact_workload(&pg, 3, 2500);
    multixact_workload(&pg, 4, 50);
    pg.stop();

    let end: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    let segments: Vec<PathBuf> = (1..=end.segment_number(SEG_SIZE))
        .map(|s| pg.wal_dir().join(wal_file_name(1, s, SEG_SIZE)))
        .collect();

    // Pages as the Rust-side records leave them; a page first touched without a zeroing record was zeroed
    // at bootstrap, which writes no WAL.
    let mut pages: BTreeMap<(u8, u32), Vec<u8>> = BTreeMap::new();
    let mut applied: BTreeMap<&str, u64> = BTreeMap::new();
    pageserver::waldump::for_each_record(&segments, |rec| {
        let Ok(body) = parse_body(rec, pageserver::pg::PgVersion::V15) else {
            return Ok(());
        };
        for change in slru_changes(&body) {
            match change {
                PageChange::Image(PageId::Slru { kind, pageno }, image) => {
                    pages.insert((kind as u8, pageno), image.to_vec());
                }
                PageChange::Record(id @ PageId::Slru { kind, pageno }, record) => {
                    let page = pages
                        .entry((kind as u8, pageno))
                        .or_insert_with(|| vec![0; 8192]);
                    native::apply(id, page, &record).unwrap();
                    *applied.entry(kind_name(kind)).or_default() += 1;
                }
                other => panic!("unexpected change {other:?}"),
            }
        }
        Ok(())
    })
    .unwrap();

    let mut compared: BTreeMap<&str, usize> = BTreeMap::new();
    for kind in [
        SlruKind::Clog,
        SlruKind::MultiXactOffsets,
        SlruKind::MultiXactMembers,
    ] {
        let dir = pg.data_dir().join(match kind {
            SlruKind::Clog => "pg_xact",
            SlruKind::MultiXactOffsets => "pg_multixact/offsets",
            SlruKind::MultiXactMembers => "pg_multixact/members",
        });
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no files in {}", dir.display());
        for file in files {
            let segno =
                u32::from_str_radix(file.file_name().unwrap().to_str().unwrap(), 16).unwrap();
            let data = std::fs::read(&file).unwrap();
            for (i, theirs) in data.chunks(8192).enumerate() {
                let pageno = segno * SLRU_PAGES_PER_SEGMENT + i as u32;
                let zero = vec![0u8; 8192];
                let ours = pages.get(&(kind as u8, pageno)).unwrap_or(&zero);
                if ours[..] != theirs[..] {
                    let at = ours.iter().zip(theirs).position(|(a, b)| a != b).unwrap();
                    panic!(
                        "{} page {pageno} differs first at byte {at}: ours {} theirs {}",
                        kind_name(kind),
                        ours[at],
                        theirs[at]
                    );
                }
                *compared.entry(kind_name(kind)).or_default() += 1;
            }
        }
    }
    println!(
        "SLRU pages equal to the primary's, byte for byte: {compared:?}; Rust-applied records: {applied:?}"
    );
    assert!(
        applied.get("pg_xact").copied().unwrap_or(0) > 1000,
        "{applied:?}"
    );
    assert!(
        applied.get("pg_multixact/offsets").copied().unwrap_or(0) > 2048,
        "{applied:?}"
    );
    assert!(
        compared.get("pg_multixact/offsets").copied().unwrap_or(0) >= 2,
        "{compared:?}"
    );
    assert!(
        compared.get("pg_multixact/members").copied().unwrap_or(0) >= 3,
        "{compared:?}"
    );
    let nonzero = |kind: SlruKind| {
        pages
            .iter()
            .filter(|((k, _), p)| *k == kind as u8 && p.iter().any(|&b| b != 0))
            .count()
    };
    assert!(nonzero(SlruKind::MultiXactMembers) > 0 && nonzero(SlruKind::Clog) > 0);
}

fn kind_name(kind: SlruKind) -> &'static str {
    match kind {
        SlruKind::Clog => "pg_xact",
        SlruKind::MultiXactOffsets => "pg_multixact/offsets",
        SlruKind::MultiXactMembers => "pg_multixact/members",
    }
}
