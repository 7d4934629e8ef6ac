//! Real WAL records for one heap page, from a real PostgreSQL 15 (or 18) cluster, and the page PostgreSQL wrote.

use std::path::PathBuf;

use bytes::Bytes;
use pageserver::pg::lsn::wal_file_name;
use pageserver::pg::{Lsn, PgVersion, RelFileNode};
use pageserver::walredo::{BufferTag, WalRecord};

use super::pg::{PgCluster, PgOptions};

pub struct HeapPageSample {
    /// The version of the cluster that wrote it.
    pub version: PgVersion,
    pub tag: BufferTag,
    /// Every record that touched the page, from the one that initialised it, with end LSNs.
    pub records: Vec<(Lsn, WalRecord)>,
    /// The page as PostgreSQL wrote it after a clean shutdown.
    pub page: Bytes,
}

/// Creates a table, inserts `rows` small rows into its first page one statement at a time (so each insert is
/// its own record), stops the cluster, and returns block 0's records and final page.
pub fn heap_page_sample(rows: usize) -> HeapPageSample {
    heap_page_sample_of(PgVersion::V15, rows)
}

/// [`heap_page_sample`] from a cluster of `version`.
pub fn heap_page_sample_of(version: PgVersion, rows: usize) -> HeapPageSample {
    let mut pg = PgCluster::start_version(version.major(), PgOptions::default());
    pg.create_physical_slot("sample");
    let start: Lsn = pg.current_lsn().parse().unwrap();
    pg.sql("CREATE TABLE sample (id int, v text)");
    let values: Vec<String> = (0..rows)
        .map(|i| format!("INSERT INTO sample VALUES ({i}, 'row {i}');"))
        .collect();
    pg.sql(&values.join(" "));
    let relfilenode: u32 = pg
        .sql("SELECT relfilenode FROM pg_class WHERE relname = 'sample'")
        .parse()
        .unwrap();
    let db: u32 = pg
        .sql("SELECT oid FROM pg_database WHERE datname = 'postgres'")
        .parse()
        .unwrap();
    pg.stop();

    let seg = 16 * 1024 * 1024;
    let end: Lsn = pg
        .controldata("Latest checkpoint location")
        .parse()
        .unwrap();
    let segments: Vec<PathBuf> = (start.segment_number(seg)..=end.segment_number(seg))
        .map(|s| pg.wal_dir().join(wal_file_name(1, s, seg)))
        .collect();
    let rnode = RelFileNode {
        spc: 1663,
        db,
        rel: relfilenode,
    };
    let tag = BufferTag {
        rnode,
        forknum: 0,
        blkno: 0,
    };
    let mut records = Vec::new();
    pageserver::waldump::for_each_record(&segments, |rec| {
        if let Some(b) = rec
            .blocks
            .iter()
            .find(|b| b.rnode == rnode && b.forknum == 0 && b.blkno == 0)
        {
            let will_init = b.will_init() || b.apply_image();
            records.push((
                rec.end_lsn,
                WalRecord::Postgres {
                    will_init,
                    rec: rec.raw.clone(),
                },
            ));
        }
        Ok(())
    })
    .unwrap();
    assert!(
        records.len() >= rows,
        "found {} records for {rows} inserts",
        records.len()
    );
    assert!(
        records[0].1.will_init(),
        "the first record should initialise the page"
    );
    let file = pg.data_dir().join(format!("base/{db}/{relfilenode}"));
    let page = Bytes::from(std::fs::read(file).unwrap()[..8192].to_vec());
    HeapPageSample {
        version,
        tag,
        records,
        page,
    }
}
