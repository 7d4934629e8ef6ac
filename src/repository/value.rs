//! What is stored at a (key, LSN): a page image (or any other whole value: a size, a directory) or a WAL
//! record to apply on the previous version, stored at the record's end LSN. Encoded by [`Value::encode`]; the
//! encoding is part of the layer file format (docs/storage-format.md §5).

use bytes::{BufMut, Bytes, BytesMut};

use crate::pg::reader::{Reader, ShortRead};
use crate::pg::records::MultiXactMember;
use crate::walredo::WalRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// The whole value at this LSN.
    Image(Bytes),
    /// A change to the previous version.
    WalRecord(WalRecord),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("value is truncated: {0}")]
    Short(#[from] ShortRead),
    #[error("unknown value tag {0}")]
    BadTag(u8),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

const TAG_IMAGE: u8 = 0;
const TAG_POSTGRES: u8 = 1;
const TAG_CLEAR_VM: u8 = 2;
const TAG_TRUNCATE_VM: u8 = 3;
const TAG_CLOG_COMMITTED: u8 = 4;
const TAG_CLOG_ABORTED: u8 = 5;
const TAG_MX_OFFSET: u8 = 6;
const TAG_MX_MEMBERS: u8 = 7;

impl Value {
    /// True if the value does not need an older version: an image, or a record that initialises the page.
    pub fn will_init(&self) -> bool {
        match self {
            Value::Image(_) => true,
            Value::WalRecord(r) => r.will_init(),
        }
    }

    pub fn is_image(&self) -> bool {
        matches!(self, Value::Image(_))
    }

    /// Encoded size, for memory accounting.
    pub fn encoded_len(&self) -> usize {
        match self {
            Value::Image(b) => 1 + b.len(),
            Value::WalRecord(WalRecord::Postgres { rec, .. }) => 2 + rec.len(),
            Value::WalRecord(r) => match r {
                WalRecord::ClogSetCommitted { xids } | WalRecord::ClogSetAborted { xids } => {
                    5 + 4 * xids.len()
                }
                WalRecord::MultixactMembersCreate { members, .. } => 9 + 8 * members.len(),
                _ => 16,
            },
        }
    }

    /// Little-endian encoding: a tag byte, then the fields.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        self.encode_into(&mut b);
        b.freeze()
    }

    /// [`encode`](Self::encode), appended to `b` (no allocation of its own).
    pub fn encode_into(&self, b: &mut impl BufMut) {
        match self {
            Value::Image(img) => {
                b.put_u8(TAG_IMAGE);
                b.put_slice(img);
            }
            Value::WalRecord(rec) => match rec {
                WalRecord::Postgres { will_init, rec } => {
                    b.put_u8(TAG_POSTGRES);
                    b.put_u8(*will_init as u8);
                    b.put_slice(rec);
                }
                WalRecord::ClearVisibilityMapFlags {
                    new_heap_blkno,
                    old_heap_blkno,
                    flags,
                } => {
                    b.put_u8(TAG_CLEAR_VM);
                    b.put_u8(*flags);
                    for blk in [new_heap_blkno, old_heap_blkno] {
                        b.put_u8(blk.is_some() as u8);
                        b.put_u32_le(blk.unwrap_or(0));
                    }
                }
                WalRecord::TruncateVisibilityMap {
                    trunc_byte,
                    trunc_offs,
                } => {
                    b.put_u8(TAG_TRUNCATE_VM);
                    b.put_u32_le(*trunc_byte);
                    b.put_u8(*trunc_offs);
                }
                WalRecord::ClogSetCommitted { xids } | WalRecord::ClogSetAborted { xids } => {
                    b.put_u8(if matches!(rec, WalRecord::ClogSetCommitted { .. }) {
                        TAG_CLOG_COMMITTED
                    } else {
                        TAG_CLOG_ABORTED
                    });
                    b.put_u32_le(xids.len() as u32);
                    for x in xids {
                        b.put_u32_le(*x);
                    }
                }
                WalRecord::MultixactOffsetCreate {
                    mid,
                    moff,
                    nmembers,
                } => {
                    b.put_u8(TAG_MX_OFFSET);
                    b.put_u32_le(*mid);
                    b.put_u32_le(*moff);
                    b.put_u32_le(*nmembers);
                }
                WalRecord::MultixactMembersCreate { moff, members } => {
                    b.put_u8(TAG_MX_MEMBERS);
                    b.put_u32_le(*moff);
                    b.put_u32_le(members.len() as u32);
                    for m in members {
                        b.put_u32_le(m.xid);
                        b.put_u32_le(m.status);
                    }
                }
            },
        }
    }

    /// Decodes a value; `bytes` is shared, not copied, for images and PostgreSQL records.
    pub fn decode(bytes: &Bytes) -> Result<Value, ValueError> {
        let mut r = Reader::new(bytes);
        let tag = r.u8()?;
        let value = match tag {
            TAG_IMAGE => return Ok(Value::Image(bytes.slice(1..))),
            TAG_POSTGRES => {
                let will_init = r.u8()? != 0;
                return Ok(Value::WalRecord(WalRecord::Postgres {
                    will_init,
                    rec: bytes.slice(2..),
                }));
            }
            TAG_CLEAR_VM => {
                let flags = r.u8()?;
                let mut blk = || -> Result<Option<u32>, ShortRead> {
                    let present = r.u8()? != 0;
                    let v = r.u32()?;
                    Ok(present.then_some(v))
                };
                let new_heap_blkno = blk()?;
                let old_heap_blkno = blk()?;
                WalRecord::ClearVisibilityMapFlags {
                    new_heap_blkno,
                    old_heap_blkno,
                    flags,
                }
            }
            TAG_TRUNCATE_VM => WalRecord::TruncateVisibilityMap {
                trunc_byte: r.u32()?,
                trunc_offs: r.u8()?,
            },
            TAG_CLOG_COMMITTED | TAG_CLOG_ABORTED => {
                let n = r.u32()? as usize;
                if n.saturating_mul(4) > r.remaining() {
                    return Err(ValueError::Short(ShortRead {
                        offset: r.position(),
                        needed: n * 4,
                        available: r.remaining(),
                    }));
                }
                let xids = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
                if tag == TAG_CLOG_COMMITTED {
                    WalRecord::ClogSetCommitted { xids }
                } else {
                    WalRecord::ClogSetAborted { xids }
                }
            }
            TAG_MX_OFFSET => WalRecord::MultixactOffsetCreate {
                mid: r.u32()?,
                moff: r.u32()?,
                nmembers: r.u32()?,
            },
            TAG_MX_MEMBERS => {
                let moff = r.u32()?;
                let n = r.u32()? as usize;
                if n.saturating_mul(8) > r.remaining() {
                    return Err(ValueError::Short(ShortRead {
                        offset: r.position(),
                        needed: n * 8,
                        available: r.remaining(),
                    }));
                }
                let members = (0..n)
                    .map(|_| {
                        Ok(MultiXactMember {
                            xid: r.u32()?,
                            status: r.u32()?,
                        })
                    })
                    .collect::<Result<Vec<_>, ShortRead>>()?;
                WalRecord::MultixactMembersCreate { moff, members }
            }
            other => return Err(ValueError::BadTag(other)),
        };
        if r.remaining() != 0 {
            return Err(ValueError::Trailing(r.remaining()));
        }
        Ok(Value::WalRecord(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_value() -> impl Strategy<Value = Value> {
        let bytes = prop::collection::vec(any::<u8>(), 0..100).prop_map(Bytes::from);
        let xids = prop::collection::vec(any::<u32>(), 0..10);
        prop_oneof![
            bytes.clone().prop_map(Value::Image),
            (any::<bool>(), bytes).prop_map(|(will_init, rec)| Value::WalRecord(
                WalRecord::Postgres { will_init, rec }
            )),
            (any::<Option<u32>>(), any::<Option<u32>>(), any::<u8>()).prop_map(|(n, o, flags)| {
                Value::WalRecord(WalRecord::ClearVisibilityMapFlags {
                    new_heap_blkno: n,
                    old_heap_blkno: o,
                    flags,
                })
            }),
            (any::<u32>(), 0u8..8).prop_map(|(b, o)| Value::WalRecord(
                WalRecord::TruncateVisibilityMap {
                    trunc_byte: b,
                    trunc_offs: o
                }
            )),
            xids.clone()
                .prop_map(|xids| Value::WalRecord(WalRecord::ClogSetCommitted { xids })),
            xids.prop_map(|xids| Value::WalRecord(WalRecord::ClogSetAborted { xids })),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(mid, moff, nmembers)| {
                Value::WalRecord(WalRecord::MultixactOffsetCreate {
                    mid,
                    moff,
                    nmembers,
                })
            }),
            (
                any::<u32>(),
                prop::collection::vec((any::<u32>(), any::<u32>()), 0..5)
            )
                .prop_map(|(moff, m)| Value::WalRecord(
                    WalRecord::MultixactMembersCreate {
                        moff,
                        members: m
                            .into_iter()
                            .map(|(xid, status)| MultiXactMember { xid, status })
                            .collect()
                    }
                )),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let encoded = v.encode();
            prop_assert_eq!(Value::decode(&encoded).unwrap(), v);
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Value::decode(&Bytes::from(bytes));
        }
    }
}
