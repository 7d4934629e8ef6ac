//! A WAL writer for tests: lays records out in pages the way PostgreSQL does (aligned starts, page headers,
//! continuation flags, CRCs, prev links), so that the decoder can be checked against known input.

use super::constants::*;
use super::lsn::Lsn;
use super::walgen::page_header;

/// A record to write: resource manager, info and main data.
#[derive(Debug, Clone)]
pub struct TestRecord {
    pub rmid: u8,
    pub info: u8,
    pub xid: u32,
    pub main_data: Vec<u8>,
}

/// The bytes of one record with `prev` as its prev link.
pub fn encode_record(rec: &TestRecord, prev: Lsn) -> Vec<u8> {
    super::walgen::encode_record(rec.rmid, rec.info, rec.xid, prev, &rec.main_data)
}

/// Per written record: its start LSN, end LSN and bytes.
pub type Written = Vec<(Lsn, Lsn, Vec<u8>)>;

/// WAL from `start` (a page boundary) holding `records`, followed by zeros to the end of the last page.
/// Returns the bytes and, per record, (start LSN, end LSN, record bytes).
pub fn build_wal(
    start: Lsn,
    seg_size: u32,
    sysid: u64,
    records: &[TestRecord],
) -> (Vec<u8>, Written) {
    assert_eq!(start.block_offset(), 0);
    let mut out: Vec<u8> = Vec::new();
    let mut written = Vec::new();
    let mut prev = Lsn(0);
    let pos = |out: &Vec<u8>| Lsn(start.0 + out.len() as u64);
    for rec in records {
        let bytes = encode_record(rec, prev);
        // Records start 8-aligned; a page header comes first at a page boundary.
        while !pos(&out).is_aligned() {
            out.push(0);
        }
        if pos(&out).block_offset() == 0 {
            let at = pos(&out);
            page_header(&mut out, super::PgVersion::V15, at, seg_size, sysid, 0);
        }
        let rec_start = pos(&out);
        let mut rest = &bytes[..];
        loop {
            let room = XLOG_BLCKSZ - pos(&out).block_offset() as usize;
            let n = room.min(rest.len());
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if rest.is_empty() {
                break;
            }
            let at = pos(&out);
            page_header(
                &mut out,
                super::PgVersion::V15,
                at,
                seg_size,
                sysid,
                rest.len() as u32,
            );
        }
        written.push((rec_start, pos(&out).align(), bytes));
        prev = rec_start;
    }
    while pos(&out).block_offset() != 0 {
        out.push(0);
    }
    (out, written)
}
