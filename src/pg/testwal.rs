//! A WAL writer for tests: lays records out in pages the way PostgreSQL does (aligned starts, page headers,
//! continuation flags, CRCs, prev links), so that the decoder can be checked against known input.

use super::constants::*;
use super::lsn::Lsn;

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
    let mut body = Vec::new();
    if !rec.main_data.is_empty() {
        if rec.main_data.len() < 256 {
            body.push(XLR_BLOCK_ID_DATA_SHORT);
            body.push(rec.main_data.len() as u8);
        } else {
            body.push(XLR_BLOCK_ID_DATA_LONG);
            body.extend_from_slice(&(rec.main_data.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(&rec.main_data);
    }
    let tot_len = (SIZE_OF_XLOG_RECORD + body.len()) as u32;
    let mut out = Vec::with_capacity(tot_len as usize);
    out.extend_from_slice(&tot_len.to_le_bytes());
    out.extend_from_slice(&rec.xid.to_le_bytes());
    out.extend_from_slice(&prev.0.to_le_bytes());
    out.push(rec.info);
    out.push(rec.rmid);
    out.extend_from_slice(&[0, 0]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&body), &out[..20]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
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
            page_header(&mut out, at, seg_size, sysid, 0);
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
            page_header(&mut out, at, seg_size, sysid, rest.len() as u32);
        }
        written.push((rec_start, pos(&out).align(), bytes));
        prev = rec_start;
    }
    while pos(&out).block_offset() != 0 {
        out.push(0);
    }
    (out, written)
}

fn page_header(out: &mut Vec<u8>, at: Lsn, seg_size: u32, sysid: u64, rem_len: u32) {
    let long = at.segment_offset(seg_size) == 0;
    let mut info = if rem_len > 0 {
        XLP_FIRST_IS_CONTRECORD
    } else {
        0
    };
    if long {
        info |= XLP_LONG_HEADER;
    }
    out.extend_from_slice(&XLOG_PAGE_MAGIC.to_le_bytes());
    out.extend_from_slice(&info.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&at.0.to_le_bytes());
    out.extend_from_slice(&rem_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    if long {
        out.extend_from_slice(&sysid.to_le_bytes());
        out.extend_from_slice(&seg_size.to_le_bytes());
        out.extend_from_slice(&(XLOG_BLCKSZ as u32).to_le_bytes());
    }
}
