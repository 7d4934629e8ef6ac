//! Property tests of the WAL decoder: round trips through [`super::testwal`], arbitrary chunking, corruption
//! at every position, and arbitrary bytes. Decoding never panics; corruption is a typed error.

use proptest::prelude::*;

use super::constants::*;
use super::lsn::Lsn;
use super::testwal::{TestRecord, Written, build_wal};
use super::waldecoder::{RawRecord, WalDecodeError, WalStreamDecoder};
use super::{decode_record, parse_body};

const SEG: u32 = 1 << 20;

fn record_strategy() -> impl Strategy<Value = TestRecord> {
    let small = prop::collection::vec(any::<u8>(), 0..300);
    let large = prop::collection::vec(any::<u8>(), 8000..30000);
    (
        prop_oneof![
            Just(RM_HEAP_ID),
            Just(RM_BTREE_ID),
            Just(RM_XACT_ID),
            Just(200u8)
        ],
        any::<u8>(),
        any::<u32>(),
        prop_oneof![4 => small, 1 => large],
    )
        .prop_map(|(rmid, info, xid, main_data)| TestRecord {
            rmid,
            info: info & 0xF0 & if rmid == RM_XLOG_ID { 0 } else { 0xFF },
            xid,
            main_data,
        })
}

/// Feeds `wal` in chunks cut at `cuts` and collects records until an error or the end.
fn decode_all(start: Lsn, wal: &[u8], cuts: &[usize]) -> (Vec<RawRecord>, Option<WalDecodeError>) {
    let mut d = WalStreamDecoder::new(start, SEG, crate::pg::PgVersion::V15).unwrap();
    let mut out = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (wal.len() + 1)).collect();
    points.push(wal.len());
    points.sort_unstable();
    let mut at = 0;
    for p in points {
        d.feed_bytes(&wal[at..p]);
        at = p;
        loop {
            match d.poll_decode() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, d.finish().err())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Records written across pages and segments come back byte for byte, at their LSNs, however the
    /// stream is cut into chunks, and the WAL ends cleanly at the zeros after the last one.
    #[test]
    fn round_trip(
        records in prop::collection::vec(record_strategy(), 1..60),
        start_page in 0u64..8,
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        // Start a few pages before a segment boundary so the stream crosses it.
        let start = Lsn(SEG as u64 * 3 - start_page * XLOG_BLCKSZ as u64);
        let (wal, expected) = build_wal(start, SEG, 42, &records);
        let (got, err) = decode_all(start, &wal, &cuts);
        prop_assert_eq!(got.len(), expected.len());
        for (g, (lsn, end, bytes)) in got.iter().zip(&expected) {
            prop_assert_eq!(g.lsn, *lsn);
            prop_assert_eq!(g.end_lsn, *end);
            prop_assert_eq!(&g.bytes[..], &bytes[..]);
            let rec = decode_record(g).unwrap();
            let _ = parse_body(&rec, crate::pg::PgVersion::V15);
        }
        // The zeros after the last record end the WAL, unless it ends exactly at a page boundary: then the
        // decoder waits for the next page.
        let ends_at_boundary = expected.last().is_some_and(|(_, end, _)| end.0 == start.0 + wal.len() as u64);
        prop_assert!(
            matches!(err, Some(WalDecodeError::EndOfWal { .. })) || (err.is_none() && ends_at_boundary),
            "{:?}",
            err
        );
    }

    /// Any single corrupted byte: no panic, and whatever comes out before the error is what was written.
    #[test]
    fn corruption_never_yields_a_wrong_record(
        records in prop::collection::vec(record_strategy(), 1..30),
        position in any::<usize>(),
        xor in 1u8..=255,
    ) {
        let start = Lsn(SEG as u64 * 2 - 2 * XLOG_BLCKSZ as u64);
        let (mut wal, expected) = build_wal(start, SEG, 7, &records);
        let position = position % wal.len();
        wal[position] ^= xor;
        let (got, _err) = decode_all(start, &wal, &[]);
        for (g, (lsn, _, bytes)) in got.iter().zip(&expected) {
            prop_assert_eq!(g.lsn, *lsn);
            prop_assert_eq!(&g.bytes[..], &bytes[..]);
        }
    }

    /// Arbitrary bytes at any start: typed errors, never a panic.
    #[test]
    fn arbitrary_bytes_do_not_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..20000),
        offset in 0u64..(2 * XLOG_BLCKSZ as u64),
    ) {
        let (_records, _err) = decode_all(Lsn(SEG as u64 + offset), &bytes, &[]);
    }

    /// Arbitrary record bytes: decode_record and parse_body return errors, never panic; images that decode
    /// restore or fail cleanly.
    #[test]
    fn arbitrary_records_do_not_panic(mut bytes in prop::collection::vec(any::<u8>(), 24..600), rmid in 0u8..=22) {
        let len = bytes.len() as u32;
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
        bytes[17] = rmid;
        let raw = RawRecord { lsn: Lsn(0x1000), end_lsn: Lsn(0x1000 + len as u64), bytes: bytes.into() };
        if let Ok(rec) = decode_record(&raw) {
            let _ = parse_body(&rec, crate::pg::PgVersion::V15);
            for b in &rec.blocks {
                if let Some(image) = &b.image {
                    let _ = image.restore();
                }
            }
        }
    }
}

fn sample(records: usize) -> (Lsn, Vec<u8>, Written) {
    let recs: Vec<TestRecord> = (0..records)
        .map(|i| TestRecord {
            rmid: RM_HEAP_ID,
            info: 0,
            xid: i as u32,
            main_data: vec![i as u8; if i % 3 == 0 { 9000 } else { 100 }],
        })
        .collect();
    let start = Lsn(SEG as u64);
    let (wal, expected) = build_wal(start, SEG, 1, &recs);
    (start, wal, expected)
}

#[test]
fn corrupt_crc_is_its_own_error() {
    let (start, mut wal, expected) = sample(10);
    let (lsn, _, _) = expected[4];
    let at = (lsn.0 - start.0) as usize + SIZE_OF_XLOG_RECORD + 5;
    wal[at] ^= 0x40;
    let (got, err) = decode_all(start, &wal, &[]);
    assert_eq!(got.len(), 4);
    assert!(
        matches!(err, Some(WalDecodeError::BadCrc { lsn: l, .. }) if l == lsn),
        "{err:?}"
    );
}

#[test]
fn torn_record_is_its_own_error() {
    let (start, wal, expected) = sample(10);
    // Record 3 is 9000 bytes long, across a page boundary; cut the WAL inside it.
    let (lsn, end, _) = expected[3];
    assert!(end.0 - lsn.0 > XLOG_BLCKSZ as u64);
    let cut = (lsn.0 - start.0) as usize + 100;
    let (got, err) = decode_all(start, &wal[..cut], &[]);
    assert_eq!(got.len(), 3);
    assert!(
        matches!(err, Some(WalDecodeError::TornRecord { record, .. }) if record == lsn),
        "{err:?}"
    );
    // The same when the next page was never written (zeros).
    let next_page = ((lsn.0 - start.0) as usize / XLOG_BLCKSZ + 1) * XLOG_BLCKSZ;
    let mut zeroed = wal.clone();
    zeroed[next_page..].fill(0);
    let (got, err) = decode_all(start, &zeroed, &[]);
    assert_eq!(got.len(), 3);
    assert!(
        matches!(err, Some(WalDecodeError::TornRecord { record, .. }) if record == lsn),
        "{err:?}"
    );
}

#[test]
fn bad_page_magic_is_its_own_error() {
    let (start, mut wal, _) = sample(10);
    wal[XLOG_BLCKSZ] ^= 0x01;
    let (_, err) = decode_all(start, &wal, &[]);
    assert!(
        matches!(err, Some(WalDecodeError::BadPageMagic { lsn, .. }) if lsn == Lsn(start.0 + XLOG_BLCKSZ as u64)),
        "{err:?}"
    );
}

#[test]
fn stream_may_start_inside_a_record_continuation() {
    let (start, wal, expected) = sample(10);
    // Start at the page boundary inside record 3: its tail is skipped, decoding resumes at record 4.
    let (lsn, _, _) = expected[3];
    let page = ((lsn.0 - start.0) as usize / XLOG_BLCKSZ + 1) * XLOG_BLCKSZ;
    let (got, err) = decode_all(Lsn(start.0 + page as u64), &wal[page..], &[]);
    assert_eq!(got.first().map(|r| r.lsn), Some(expected[4].0));
    assert_eq!(got.len(), 6);
    assert!(matches!(err, Some(WalDecodeError::EndOfWal { .. })));
}

#[test]
fn stream_may_start_at_a_record_inside_a_page() {
    let (start, wal, expected) = sample(10);
    let (lsn, _, _) = expected[2];
    let off = (lsn.0 - start.0) as usize;
    let (got, _) = decode_all(lsn, &wal[off..], &[]);
    assert_eq!(got.len(), 8);
    assert_eq!(got[0].lsn, lsn);
}

#[test]
fn overwritten_contrecord_is_dropped() {
    let (start, mut wal, expected) = sample(10);
    // Record 3 spans into the next page; mark that page as overwritten, with a fresh record at its start.
    let (lsn, _, _) = expected[3];
    let page = ((lsn.0 - start.0) as usize / XLOG_BLCKSZ + 1) * XLOG_BLCKSZ;
    let replacement = super::testwal::encode_record(
        &TestRecord {
            rmid: RM_XLOG_ID,
            info: XLOG_OVERWRITE_CONTRECORD,
            xid: 0,
            main_data: [lsn.0.to_le_bytes(), 0i64.to_le_bytes()].concat(),
        },
        expected[2].0,
    );
    let info = XLP_FIRST_IS_OVERWRITE_CONTRECORD;
    wal[page + 2..page + 4].copy_from_slice(&info.to_le_bytes());
    wal[page + 16..page + 20].copy_from_slice(&0u32.to_le_bytes());
    let body = page + SIZE_OF_XLOG_SHORT_PHD;
    wal[body..body + replacement.len()].copy_from_slice(&replacement);
    wal[body + replacement.len()..].fill(0);
    let (got, err) = decode_all(start, &wal, &[]);
    assert_eq!(got.len(), 4, "{err:?}");
    assert_eq!(got[3].lsn, Lsn(start.0 + body as u64));
    let rec = decode_record(&got[3]).unwrap();
    assert_eq!(
        parse_body(&rec, crate::pg::PgVersion::V15).unwrap(),
        super::RecordBody::OverwriteContrecord {
            overwritten_lsn: lsn,
            overwrite_time: 0
        }
    );
    assert!(matches!(err, Some(WalDecodeError::EndOfWal { .. })));
}

#[test]
fn xlog_switch_skips_to_the_next_segment() {
    let recs = vec![
        TestRecord {
            rmid: RM_HEAP_ID,
            info: 0,
            xid: 1,
            main_data: vec![1; 50],
        },
        TestRecord {
            rmid: RM_XLOG_ID,
            info: XLOG_SWITCH,
            xid: 0,
            main_data: vec![],
        },
    ];
    let start = Lsn(SEG as u64);
    let (mut wal, expected) = build_wal(start, SEG, 1, &recs);
    // Zero-fill the rest of the segment, then a record at the start of the next one.
    wal.resize(SEG as usize, 0);
    let next = build_wal(
        Lsn(2 * SEG as u64),
        SEG,
        1,
        &[TestRecord {
            rmid: RM_HEAP_ID,
            info: 0,
            xid: 2,
            main_data: vec![2; 50],
        }],
    );
    // The next segment's first record links back to the switch record.
    let mut next_wal = next.0;
    let rec = super::testwal::encode_record(
        &TestRecord {
            rmid: RM_HEAP_ID,
            info: 0,
            xid: 2,
            main_data: vec![2; 50],
        },
        expected[1].0,
    );
    next_wal[SIZE_OF_XLOG_LONG_PHD..SIZE_OF_XLOG_LONG_PHD + rec.len()].copy_from_slice(&rec);
    wal.extend_from_slice(&next_wal);
    let (got, err) = decode_all(start, &wal, &[]);
    assert_eq!(got.len(), 3, "{err:?}");
    assert_eq!(got[1].end_lsn, Lsn(2 * SEG as u64));
    assert_eq!(
        got[2].lsn,
        Lsn(2 * SEG as u64 + SIZE_OF_XLOG_LONG_PHD as u64)
    );
}
