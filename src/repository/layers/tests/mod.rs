//! Tests across both layer kinds: value strategies, the fixed content of the committed fixture files, the
//! byte-flip and truncation sweeps, and the fixtures themselves.

mod corruption;
mod fixture;
mod index_pages;

use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;

use crate::pg::Lsn;
use crate::pg::records::MultiXactMember;
use crate::repository::layers::{DeltaLayer, DeltaLayerWriter, ImageLayer, ImageLayerWriter};
use crate::repository::{Key, Value};
use crate::walredo::WalRecord;

/// Block `blkno` of relation 1663/5/16384, main fork.
pub(crate) fn small_key(blkno: u32) -> Key {
    Key {
        field1: 0,
        field2: 1663,
        field3: 5,
        field4: 16384,
        field5: 0,
        field6: blkno,
    }
}

/// `len` bytes of a fixed pseudo-random sequence from `seed`.
pub(crate) fn pattern(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Images: empty, small, or a whole 8 KiB page.
pub(crate) fn arb_image() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        any::<u64>().prop_map(|seed| pattern(seed, 8192)),
    ]
}

/// Every kind of value, with empty and 8 KiB payloads among them.
pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
    let xids = prop::collection::vec(any::<u32>(), 0..10);
    let rec = (any::<bool>(), arb_image())
        .prop_map(|(will_init, rec)| Value::WalRecord(WalRecord::Postgres { will_init, rec }));
    let vm = (any::<Option<u32>>(), any::<Option<u32>>(), any::<u8>()).prop_map(|(n, o, flags)| {
        Value::WalRecord(WalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: n,
            old_heap_blkno: o,
            flags,
        })
    });
    let members = (
        any::<u32>(),
        prop::collection::vec(any::<(u32, u32)>(), 0..5),
    )
        .prop_map(|(moff, m)| {
            let members = (m.into_iter())
                .map(|(xid, status)| MultiXactMember { xid, status })
                .collect();
            Value::WalRecord(WalRecord::MultixactMembersCreate { moff, members })
        });
    prop_oneof![
        arb_image().prop_map(Value::Image),
        rec,
        vm,
        (any::<u32>(), any::<u8>()).prop_map(|(trunc_byte, trunc_offs)| Value::WalRecord(
            WalRecord::TruncateVisibilityMap {
                trunc_byte,
                trunc_offs
            }
        )),
        xids.clone()
            .prop_map(|xids| Value::WalRecord(WalRecord::ClogSetCommitted { xids })),
        xids.prop_map(|xids| Value::WalRecord(WalRecord::ClogSetAborted { xids })),
        any::<(u32, u32, u32)>().prop_map(|(mid, moff, nmembers)| Value::WalRecord(
            WalRecord::MultixactOffsetCreate {
                mid,
                moff,
                nmembers
            }
        )),
        members,
    ]
}

pub(crate) const FIXTURE_KEYS: std::ops::Range<u32> = 0..10;
pub(crate) const FIXTURE_DELTA_LSNS: std::ops::Range<u64> = 0x100..0x200;
pub(crate) const FIXTURE_IMAGE_LSN: u64 = 0x200;

/// The content of the committed delta fixture: every value kind, an 8 KiB image and an empty one.
pub(crate) fn fixture_delta_entries() -> Vec<(Key, Lsn, Value)> {
    let rec = |r| Value::WalRecord(r);
    vec![
        (small_key(1), Lsn(0x100), Value::Image(pattern(1, 8192))),
        (
            small_key(1),
            Lsn(0x110),
            rec(WalRecord::Postgres {
                will_init: false,
                rec: Bytes::from_static(b"a heap insert record"),
            }),
        ),
        (
            small_key(1),
            Lsn(0x120),
            rec(WalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: Some(3),
                old_heap_blkno: None,
                flags: 0x03,
            }),
        ),
        (
            small_key(2),
            Lsn(0x108),
            rec(WalRecord::Postgres {
                will_init: true,
                rec: pattern(2, 40),
            }),
        ),
        (
            small_key(2),
            Lsn(0x130),
            rec(WalRecord::TruncateVisibilityMap {
                trunc_byte: 17,
                trunc_offs: 2,
            }),
        ),
        (
            small_key(3),
            Lsn(0x140),
            rec(WalRecord::ClogSetCommitted {
                xids: vec![100, 101, 102],
            }),
        ),
        (
            small_key(3),
            Lsn(0x150),
            rec(WalRecord::ClogSetAborted { xids: vec![] }),
        ),
        (
            small_key(4),
            Lsn(0x160),
            rec(WalRecord::MultixactOffsetCreate {
                mid: 7,
                moff: 20,
                nmembers: 2,
            }),
        ),
        (
            small_key(4),
            Lsn(0x170),
            rec(WalRecord::MultixactMembersCreate {
                moff: 20,
                members: vec![
                    MultiXactMember {
                        xid: 500,
                        status: 1,
                    },
                    MultiXactMember {
                        xid: 501,
                        status: 5,
                    },
                ],
            }),
        ),
        (small_key(9), Lsn(0x1FF), Value::Image(Bytes::new())),
    ]
}

/// The content of the committed image fixture: an 8 KiB page, an empty image, small ones.
pub(crate) fn fixture_image_entries() -> Vec<(Key, Bytes)> {
    vec![
        (small_key(1), pattern(3, 8192)),
        (small_key(2), Bytes::new()),
        (small_key(3), Bytes::copy_from_slice(&42u32.to_le_bytes())),
        (small_key(7), pattern(4, 100)),
    ]
}

pub(crate) fn write_fixture_delta(dir: &Path) -> DeltaLayer {
    let (k, l) = (FIXTURE_KEYS, FIXTURE_DELTA_LSNS);
    let mut w = DeltaLayerWriter::new(
        dir,
        small_key(k.start)..small_key(k.end),
        Lsn(l.start)..Lsn(l.end),
    )
    .expect("delta writer");
    for (key, lsn, value) in fixture_delta_entries() {
        w.put(key, lsn, &value).expect("put");
    }
    w.finish().expect("finish delta")
}

pub(crate) fn write_fixture_image(dir: &Path) -> ImageLayer {
    let k = FIXTURE_KEYS;
    let mut w = ImageLayerWriter::new(
        dir,
        small_key(k.start)..small_key(k.end),
        Lsn(FIXTURE_IMAGE_LSN),
    )
    .expect("image writer");
    for (key, image) in fixture_image_entries() {
        w.put(key, &image).expect("put");
    }
    w.finish().expect("finish image")
}

/// Checks `layer` holds exactly the delta fixture content, through `iter`, `keys` and `get_values`.
pub(crate) fn assert_delta_content(layer: &DeltaLayer) {
    let expected = fixture_delta_entries();
    let all = layer.iter().collect::<Result<Vec<_>, _>>().expect("iter");
    assert_eq!(all, expected);
    let mut keys: Vec<Key> = expected.iter().map(|(k, _, _)| *k).collect();
    keys.dedup();
    assert_eq!(layer.keys().unwrap(), keys);
    for key in keys {
        let want: Vec<_> = (expected.iter())
            .filter(|(k, _, _)| *k == key)
            .map(|(_, l, v)| (*l, v.clone()))
            .collect();
        assert_eq!(
            layer.get_values(key, Lsn(0)..Lsn::MAX).expect("get_values"),
            want
        );
    }
}

/// Checks `layer` holds exactly the image fixture content, through `iter`, `keys` and `get`.
pub(crate) fn assert_image_content(layer: &ImageLayer) {
    let expected = fixture_image_entries();
    let all = layer.iter().collect::<Result<Vec<_>, _>>().expect("iter");
    assert_eq!(all, expected);
    let keys: Vec<Key> = expected.iter().map(|(k, _)| *k).collect();
    assert_eq!(layer.keys().unwrap(), keys);
    for k in FIXTURE_KEYS {
        let want = expected.iter().find(|(key, _)| *key == small_key(k));
        assert_eq!(
            layer.get(small_key(k)).expect("get"),
            want.map(|(_, v)| v.clone())
        );
    }
}
