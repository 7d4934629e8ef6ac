//! WAL written by the pageserver itself: records laid out in pages the way PostgreSQL does (8-aligned starts,
//! page headers, continuation flags, CRCs, prev links), and the WAL segments that backups carry:
//! - for a Neon compute ([`compute_segment`], as Neon's `generate_wal_segment` in
//!   `libs/postgres_ffi/src/xlog_utils.rs`): zeros but for page headers that make the start LSN the end of a
//!   (fake) continuation record; the compute starts there without reading WAL;
//! - for plain PostgreSQL ([`shutdown_checkpoint_wal`]): a real XLOG_CHECKPOINT_SHUTDOWN record at the start
//!   LSN, which PostgreSQL reads at startup as the end of a clean shutdown.

use super::constants::*;
use super::lsn::Lsn;
use super::records::CheckPoint;
use super::version::PgVersion;

/// The bytes of one record with `prev` as its prev link and `main_data` as its only content.
pub fn encode_record(rmid: u8, info: u8, xid: u32, prev: Lsn, main_data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if !main_data.is_empty() {
        if main_data.len() < 256 {
            body.push(XLR_BLOCK_ID_DATA_SHORT);
            body.push(main_data.len() as u8);
        } else {
            body.push(XLR_BLOCK_ID_DATA_LONG);
            body.extend_from_slice(&(main_data.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(main_data);
    }
    encode_record_body(rmid, info, xid, prev, &body)
}

/// The bytes of one record whose `body` (block headers, main data header, then their data, as
/// `src/include/access/xlogrecord.h` lays them out) is already encoded: the header with its length and CRC.
pub fn encode_record_body(rmid: u8, info: u8, xid: u32, prev: Lsn, body: &[u8]) -> Vec<u8> {
    let tot_len = (SIZE_OF_XLOG_RECORD + body.len()) as u32;
    let mut out = Vec::with_capacity(tot_len as usize);
    out.extend_from_slice(&tot_len.to_le_bytes());
    out.extend_from_slice(&xid.to_le_bytes());
    out.extend_from_slice(&prev.0.to_le_bytes());
    out.push(info);
    out.push(rmid);
    out.extend_from_slice(&[0, 0]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(body), &out[..20]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Appends the header of the page at `at` (long at a segment start), timeline 1, with `version`'s magic.
pub fn page_header(
    out: &mut Vec<u8>,
    version: PgVersion,
    at: Lsn,
    seg_size: u32,
    sysid: u64,
    rem_len: u32,
) {
    let long = at.segment_offset(seg_size) == 0;
    let mut info = if rem_len > 0 {
        XLP_FIRST_IS_CONTRECORD
    } else {
        0
    };
    if long {
        info |= XLP_LONG_HEADER;
    }
    out.extend_from_slice(&version.xlog_page_magic().to_le_bytes());
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

fn header_size(at: Lsn, seg_size: u32) -> u64 {
    if at.segment_offset(seg_size) == 0 {
        SIZE_OF_XLOG_LONG_PHD as u64
    } else {
        SIZE_OF_XLOG_SHORT_PHD as u64
    }
}

/// Where a record written at `lsn` starts: past the page header at a page boundary, else 8-aligned.
pub fn normalize_lsn(lsn: Lsn, seg_size: u32) -> Lsn {
    if lsn.block_offset() == 0 {
        Lsn(lsn.0 + header_size(lsn, seg_size))
    } else {
        lsn.align()
    }
}

/// The segment holding `lsn` as a Neon compute expects it: all zeros except the long header at offset 0 and,
/// when `lsn` is past the first page, a short header on its page; their `rem_len` make a continuation record
/// end exactly at `lsn` (normalized).
pub fn compute_segment(version: PgVersion, lsn: Lsn, sysid: u64, seg_size: u32) -> Vec<u8> {
    let lsn = normalize_lsn(lsn, seg_size);
    let seg_start = Lsn(lsn.0 - lsn.segment_offset(seg_size));
    let page_start = Lsn(lsn.0 - lsn.block_offset());
    let mut seg = Vec::with_capacity(seg_size as usize);
    // Record bytes from the first header to `lsn`: page contents after each page's header.
    let pages = (page_start.0 - seg_start.0) / XLOG_BLCKSZ as u64;
    let first_rem = if pages == 0 {
        lsn.0 - seg_start.0 - SIZE_OF_XLOG_LONG_PHD as u64
    } else {
        (XLOG_BLCKSZ - SIZE_OF_XLOG_LONG_PHD) as u64
            + (pages - 1) * (XLOG_BLCKSZ - SIZE_OF_XLOG_SHORT_PHD) as u64
            + (lsn.0 - page_start.0 - SIZE_OF_XLOG_SHORT_PHD as u64)
    };
    page_header(
        &mut seg,
        version,
        seg_start,
        seg_size,
        sysid,
        first_rem as u32,
    );
    if pages > 0 {
        seg.resize((page_start.0 - seg_start.0) as usize, 0);
        let rem = lsn.0 - page_start.0 - SIZE_OF_XLOG_SHORT_PHD as u64;
        page_header(&mut seg, version, page_start, seg_size, sysid, rem as u32);
    }
    seg.resize(seg_size as usize, 0);
    seg
}

/// WAL for plain PostgreSQL to start from `lsn` as after a clean shutdown: an XLOG_CHECKPOINT_SHUTDOWN record
/// of `checkpoint` at `lsn` (normalized), whose redo is the record itself. Returns where the record starts
/// and the segments to write, (segment number, 16 MiB), usually one; two if the record crosses into the next
/// segment. The pages before the record's are zero except the segment's long header (PostgreSQL reads the
/// first page of a segment to check it).
pub fn shutdown_checkpoint_wal(
    version: PgVersion,
    lsn: Lsn,
    prev: Lsn,
    checkpoint: &CheckPoint,
    sysid: u64,
    seg_size: u32,
) -> (Lsn, CheckPoint, Vec<(u64, Vec<u8>)>) {
    let start = normalize_lsn(lsn, seg_size);
    let mut cp = *checkpoint;
    cp.redo = start;
    let record = encode_record(RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN, 0, prev, &cp.encode());
    let seg_start = Lsn(start.0 - start.segment_offset(seg_size));
    let mut wal = Vec::with_capacity(seg_size as usize);
    page_header(&mut wal, version, seg_start, seg_size, sysid, 0);
    let page_start = start.0 - start.block_offset();
    if page_start > seg_start.0 {
        wal.resize((page_start - seg_start.0) as usize, 0);
        page_header(&mut wal, version, Lsn(page_start), seg_size, sysid, 0);
    }
    wal.resize((start.0 - seg_start.0) as usize, 0);
    let mut rest = &record[..];
    loop {
        let at = seg_start.0 + wal.len() as u64;
        let room = (XLOG_BLCKSZ as u64 - Lsn(at).block_offset()) as usize;
        let n = room.min(rest.len());
        wal.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if rest.is_empty() {
            break;
        }
        let at = Lsn(seg_start.0 + wal.len() as u64);
        page_header(&mut wal, version, at, seg_size, sysid, rest.len() as u32);
    }
    let seg_len = seg_size as usize;
    wal.resize(wal.len().div_ceil(seg_len) * seg_len, 0);
    let first = seg_start.segment_number(seg_size);
    let segments = wal
        .chunks(seg_len)
        .enumerate()
        .map(|(i, s)| (first + i as u64, s.to_vec()))
        .collect();
    (start, cp, segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::waldecoder::WalStreamDecoder;

    const SEG: u32 = DEFAULT_WAL_SEGMENT_SIZE;

    #[test]
    fn normalize() {
        assert_eq!(normalize_lsn(Lsn(0x200_0000), SEG), Lsn(0x200_0028));
        assert_eq!(normalize_lsn(Lsn(0x200_2000), SEG), Lsn(0x200_2018));
        assert_eq!(normalize_lsn(Lsn(0x200_2019), SEG), Lsn(0x200_2020));
        assert_eq!(normalize_lsn(Lsn(0x200_2020), SEG), Lsn(0x200_2020));
    }

    /// The checkpoint record decodes (CRC, headers, continuation) wherever it lands, also across a page
    /// and a segment boundary.
    #[test]
    fn checkpoint_record_decodes_everywhere() {
        let cp = CheckPoint {
            next_xid: 750,
            next_oid: 24576,
            this_timeline_id: 1,
            prev_timeline_id: 1,
            ..Default::default()
        };
        for lsn in [
            Lsn(0x200_0000),
            Lsn(0x200_0040),
            Lsn(0x2A0_1FF0 + 0x10),
            Lsn(0x2A0_3FC8),
            Lsn(0x2FF_FFA0),
            Lsn(0x3FF_FFE8),
        ] {
            let (start, cp_out, segs) =
                shutdown_checkpoint_wal(PgVersion::V15, lsn, Lsn(0x100), &cp, 7, SEG);
            assert_eq!(cp_out.redo, start);
            assert!(start >= lsn && start.0 - lsn.0 <= 40);
            let first = segs[0].0;
            let bytes: Vec<u8> = segs.iter().flat_map(|(_, s)| s.iter().copied()).collect();
            assert_eq!(first, lsn.segment_number(SEG));
            let crosses = lsn.segment_offset(SEG) > (SEG - 114) as u64;
            assert_eq!(segs.len(), if crosses { 2 } else { 1 }, "{lsn}");
            let seg_start = first * SEG as u64;
            let mut d = WalStreamDecoder::new(start, SEG, crate::pg::PgVersion::V15).unwrap();
            d.feed(bytes::Bytes::copy_from_slice(
                &bytes[(start.0 - seg_start) as usize..],
            ));
            let rec = d.poll_decode().unwrap().expect("a record");
            let dec = crate::pg::decode_record(&rec).unwrap();
            assert_eq!(dec.lsn, start);
            assert_eq!(
                (dec.rmid(), dec.rmgr_info()),
                (RM_XLOG_ID, XLOG_CHECKPOINT_SHUTDOWN)
            );
            let body = crate::pg::parse_body(&dec, crate::pg::PgVersion::V15).unwrap();
            assert!(
                matches!(body, crate::pg::RecordBody::Checkpoint { checkpoint, .. } if checkpoint == cp_out),
                "{lsn}"
            );
        }
    }

    #[test]
    fn compute_segment_headers() {
        let lsn = Lsn(0x200_4030);
        let seg = compute_segment(PgVersion::V15, lsn, 9, SEG);
        assert_eq!(seg.len(), SEG as usize);
        let u16_at = |o: usize| u16::from_le_bytes([seg[o], seg[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(seg[o..o + 4].try_into().unwrap());
        assert_eq!(u16_at(0), PgVersion::V15.xlog_page_magic());
        assert_eq!(u16_at(2), XLP_LONG_HEADER | XLP_FIRST_IS_CONTRECORD);
        let page = 0x4000;
        assert_eq!(u16_at(page), PgVersion::V15.xlog_page_magic());
        assert_eq!(u16_at(page + 2), XLP_FIRST_IS_CONTRECORD);
        assert_eq!(u32_at(page + 16), 0x30 - 24);
        assert_eq!(u32_at(16), (8192 - 40 + 8192 - 24 + 0x30 - 24) as u32);
        assert!(seg[page + 24..].iter().all(|&b| b == 0));
    }
}
