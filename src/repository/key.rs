//! The 18-byte key of every stored value (Neon's layout, docs/storage-format.md §12): `field1: u8, field2..4:
//! u32, field5: u8, field6: u32`, big-endian, ordered field by field, so byte order is key order. Display: 36
//! uppercase hex digits.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use crate::pg::RelFileNode;
use crate::walredo::{BufferTag, PageId, SlruKind};

pub const KEY_SIZE: usize = 18;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Key {
    pub field1: u8,
    pub field2: u32,
    pub field3: u32,
    pub field4: u32,
    pub field5: u8,
    pub field6: u32,
}

/// Relation size keys have this block number.
pub const REL_SIZE_BLKNUM: u32 = u32::MAX;

impl Key {
    pub const MIN: Key = Key {
        field1: 0,
        field2: 0,
        field3: 0,
        field4: 0,
        field5: 0,
        field6: 0,
    };
    pub const MAX: Key = Key {
        field1: u8::MAX,
        field2: u32::MAX,
        field3: u32::MAX,
        field4: u32::MAX,
        field5: u8::MAX,
        field6: u32::MAX,
    };

    pub fn to_bytes(&self) -> [u8; KEY_SIZE] {
        let mut b = [0u8; KEY_SIZE];
        b[0] = self.field1;
        b[1..5].copy_from_slice(&self.field2.to_be_bytes());
        b[5..9].copy_from_slice(&self.field3.to_be_bytes());
        b[9..13].copy_from_slice(&self.field4.to_be_bytes());
        b[13] = self.field5;
        b[14..18].copy_from_slice(&self.field6.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; KEY_SIZE]) -> Key {
        let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Key {
            field1: b[0],
            field2: u32_at(1),
            field3: u32_at(5),
            field4: u32_at(9),
            field5: b[13],
            field6: u32_at(14),
        }
    }

    /// The next key in order (saturating at MAX).
    pub fn next(&self) -> Key {
        let mut b = self.to_bytes();
        for i in (0..KEY_SIZE).rev() {
            if b[i] == u8::MAX {
                b[i] = 0;
            } else {
                b[i] += 1;
                return Key::from_bytes(&b);
            }
        }
        Key::MAX
    }

    // Constructors, per the table of docs/storage-format.md §12.

    pub fn rel_block(rnode: RelFileNode, forknum: u8, blkno: u32) -> Key {
        Key {
            field1: 0,
            field2: rnode.spc,
            field3: rnode.db,
            field4: rnode.rel,
            field5: forknum,
            field6: blkno,
        }
    }

    pub fn rel_size(rnode: RelFileNode, forknum: u8) -> Key {
        Key::rel_block(rnode, forknum, REL_SIZE_BLKNUM)
    }

    /// All blocks (and the size key) of one relation fork.
    pub fn rel_range(rnode: RelFileNode, forknum: u8) -> Range<Key> {
        Key::rel_block(rnode, forknum, 0)..Key::rel_block(rnode, forknum + 1, 0)
    }

    pub fn dbdir() -> Key {
        Key::MIN
    }

    pub fn relmap_file(spc: u32, db: u32) -> Key {
        Key {
            field1: 0,
            field2: spc,
            field3: db,
            field4: 0,
            field5: 0,
            field6: 0,
        }
    }

    pub fn reldir(spc: u32, db: u32) -> Key {
        Key {
            field1: 0,
            field2: spc,
            field3: db,
            field4: 0,
            field5: 0,
            field6: 1,
        }
    }

    fn slru_kind_code(kind: SlruKind) -> u32 {
        match kind {
            SlruKind::Clog => 0,
            SlruKind::MultiXactMembers => 1,
            SlruKind::MultiXactOffsets => 2,
        }
    }

    pub fn slru_dir(kind: SlruKind) -> Key {
        Key {
            field1: 1,
            field2: Self::slru_kind_code(kind),
            field3: 0,
            field4: 0,
            field5: 0,
            field6: 0,
        }
    }

    pub fn slru_block(kind: SlruKind, segno: u32, blkno: u32) -> Key {
        Key {
            field1: 1,
            field2: Self::slru_kind_code(kind),
            field3: 1,
            field4: segno,
            field5: 0,
            field6: blkno,
        }
    }

    pub fn slru_segment_size(kind: SlruKind, segno: u32) -> Key {
        Key::slru_block(kind, segno, REL_SIZE_BLKNUM)
    }

    pub fn twophase_dir() -> Key {
        Key {
            field1: 2,
            field2: 0,
            field3: 0,
            field4: 0,
            field5: 0,
            field6: 0,
        }
    }

    pub fn twophase_file(xid: u64) -> Key {
        Key {
            field1: 2,
            field2: 0,
            field3: 0,
            field4: (xid >> 40) as u32 & 0x00FF_FFFF,
            field5: (xid >> 32) as u8,
            field6: xid as u32,
        }
    }

    /// The single keys of field1 = 3 (one value each, no page): `n` is field6.
    const fn cluster_key(n: u32) -> Key {
        Key {
            field1: 3,
            field2: 0,
            field3: 0,
            field4: 0,
            field5: 0,
            field6: n,
        }
    }

    pub fn control_file() -> Key {
        Self::cluster_key(0)
    }

    pub fn checkpoint() -> Key {
        Self::cluster_key(1)
    }

    /// The newest commit timestamp and the LSN of that commit (datadir.rs), for get_lsn_by_timestamp.
    pub fn commit_timestamp() -> Key {
        Self::cluster_key(2)
    }

    /// Where the newest checkpoint record is and its redo point (datadir.rs), for a backup that a standby
    /// starts from (its backup_label).
    pub fn checkpoint_location() -> Key {
        Self::cluster_key(3)
    }

    /// The named restore points (`pg_create_restore_point`) ingested so far (datadir.rs).
    pub fn restore_points() -> Key {
        Self::cluster_key(4)
    }

    /// A block of a relation fork (not a size key).
    pub fn is_rel_block(&self) -> bool {
        self.field1 == 0 && self.field4 != 0 && self.field6 != REL_SIZE_BLKNUM
    }

    /// The size key of a relation fork.
    pub fn is_rel_size(&self) -> bool {
        self.field1 == 0 && self.field4 != 0 && self.field6 == REL_SIZE_BLKNUM
    }

    pub fn is_slru_block(&self) -> bool {
        self.field1 == 1 && self.field3 == 1 && self.field6 != REL_SIZE_BLKNUM
    }

    /// The page this key stands for, if it is an 8 KiB page that WAL records can change.
    /// What the key stands for, in words (docs/storage-format.md, the key table), with the file it maps to
    /// in a data directory where there is one.
    pub fn describe(&self) -> String {
        const FORKS: [&str; 4] = ["main", "fsm", "vm", "init"];
        const SLRUS: [&str; 3] = ["pg_xact", "pg_multixact/members", "pg_multixact/offsets"];
        let fork = |f: u8| FORKS.get(f as usize).copied().unwrap_or("unknown fork");
        let rel_path = |spc: u32, db: u32, rel: u32, f: u8| {
            let suffix = match f {
                0 => String::new(),
                f => format!("_{}", fork(f)),
            };
            match spc {
                1664 => format!("global/{rel}{suffix}"),
                1663 => format!("base/{db}/{rel}{suffix}"),
                spc => format!("pg_tblspc/{spc}/…/{db}/{rel}{suffix}"),
            }
        };
        let k = *self;
        let slru = SLRUS
            .get(k.field2 as usize)
            .copied()
            .unwrap_or("unknown SLRU");
        match k.field1 {
            0 if k.field4 != 0 && k.field6 == REL_SIZE_BLKNUM => format!(
                "size of relation {}/{}/{} fork {} ({})",
                k.field2,
                k.field3,
                k.field4,
                fork(k.field5),
                rel_path(k.field2, k.field3, k.field4, k.field5)
            ),
            0 if k.field4 != 0 => format!(
                "block {} of relation {}/{}/{} fork {} ({} segment {}, block {} in it)",
                k.field6,
                k.field2,
                k.field3,
                k.field4,
                fork(k.field5),
                rel_path(k.field2, k.field3, k.field4, k.field5),
                k.field6 / 131_072,
                k.field6 % 131_072
            ),
            _ if k == Key::dbdir() => "the database directory".into(),
            0 if k.field6 == 0 => format!(
                "relmapper file of {}/{} (pg_filenode.map)",
                k.field2, k.field3
            ),
            0 if k.field6 == 1 => {
                format!("relation directory of database {}/{}", k.field2, k.field3)
            }
            1 if k.field3 == 0 => format!("segment directory of {slru}"),
            1 if k.field6 == REL_SIZE_BLKNUM => format!("size of {slru} segment {:04X}", k.field4),
            1 => format!("{slru} segment {:04X} block {}", k.field4, k.field6),
            2 if k == Key::twophase_dir() => "the two-phase directory".into(),
            2 => {
                let xid =
                    (u64::from(k.field4) << 40) | (u64::from(k.field5) << 32) | u64::from(k.field6);
                format!(
                    "two-phase state of xid {xid} (pg_twophase/{:08X})",
                    xid as u32
                )
            }
            3 => match k.field6 {
                0 => "the control file (global/pg_control)".into(),
                1 => "the checkpoint value".into(),
                2 => "the newest commit timestamp".into(),
                3 => "the newest checkpoint record's location".into(),
                4 => "the named restore points".into(),
                _ => "an unknown cluster key".into(),
            },
            _ => "not a key this pageserver writes".into(),
        }
    }

    pub fn page_id(&self) -> Option<PageId> {
        if self.is_rel_block() {
            Some(PageId::Rel(BufferTag {
                rnode: RelFileNode {
                    spc: self.field2,
                    db: self.field3,
                    rel: self.field4,
                },
                forknum: self.field5,
                blkno: self.field6,
            }))
        } else if self.is_slru_block() {
            let kind = match self.field2 {
                0 => SlruKind::Clog,
                1 => SlruKind::MultiXactMembers,
                2 => SlruKind::MultiXactOffsets,
                _ => return None,
            };
            Some(PageId::Slru {
                kind,
                pageno: self.field4.checked_mul(32)?.checked_add(self.field6)?,
            })
        } else {
            None
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02X}{:08X}{:08X}{:08X}{:02X}{:08X}",
            self.field1, self.field2, self.field3, self.field4, self.field5, self.field6
        )
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid key {0:?}: expected 36 hex digits")]
pub struct KeyParseError(pub String);

impl FromStr for Key {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Key, KeyParseError> {
        if s.len() != 2 * KEY_SIZE || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyParseError(s.to_string()));
        }
        let mut b = [0u8; KEY_SIZE];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
                .map_err(|_| KeyParseError(s.to_string()))?;
        }
        Ok(Key::from_bytes(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_key() -> impl Strategy<Value = Key> {
        (
            any::<u8>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u8>(),
            any::<u32>(),
        )
            .prop_map(|(field1, field2, field3, field4, field5, field6)| Key {
                field1,
                field2,
                field3,
                field4,
                field5,
                field6,
            })
    }

    proptest! {
        #[test]
        fn bytes_and_text_round_trip_and_order(a in arb_key(), b in arb_key()) {
            prop_assert_eq!(Key::from_bytes(&a.to_bytes()), a);
            prop_assert_eq!(a.to_string().parse::<Key>().unwrap(), a);
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert!(a == Key::MAX || a.next() > a);
        }
    }

    #[test]
    fn layouts() {
        let rnode = RelFileNode {
            spc: 1663,
            db: 5,
            rel: 16384,
        };
        assert_eq!(
            Key::rel_block(rnode, 0, 7).to_string(),
            "000000067F00000005000040000000000007"
        );
        assert_eq!(Key::rel_size(rnode, 2).field6, u32::MAX);
        assert!(Key::rel_block(rnode, 0, 7).is_rel_block());
        assert!(!Key::rel_size(rnode, 0).is_rel_block());
        let r = Key::rel_range(rnode, 0);
        assert!(r.contains(&Key::rel_size(rnode, 0)) && !r.contains(&Key::rel_block(rnode, 1, 0)));
        assert_eq!(
            Key::slru_block(SlruKind::Clog, 2, 3).page_id(),
            Some(PageId::Slru {
                kind: SlruKind::Clog,
                pageno: 67
            })
        );
        assert_eq!(Key::twophase_file(0x0000_0102_0304_0506).field5, 0x02);
        assert!(
            Key::dbdir() < Key::slru_dir(SlruKind::Clog) && Key::checkpoint() > Key::control_file()
        );
        assert!(
            Key::commit_timestamp() > Key::checkpoint()
                && Key::commit_timestamp().page_id().is_none()
        );
        assert!(
            Key::checkpoint_location() > Key::commit_timestamp()
                && Key::checkpoint_location().page_id().is_none()
        );
        assert!(
            Key::restore_points() > Key::checkpoint_location()
                && Key::restore_points().page_id().is_none()
        );
        assert!("00".parse::<Key>().is_err());
        let rel = rnode;
        assert_eq!(
            Key::rel_block(rel, 2, 131_073).describe(),
            "block 131073 of relation 1663/5/16384 fork vm (base/5/16384_vm segment 1, block 1 in it)"
        );
        assert!(
            Key::rel_size(rel, 0)
                .describe()
                .starts_with("size of relation 1663/5/16384 fork main")
        );
        assert_eq!(
            Key::slru_block(SlruKind::Clog, 2, 3).describe(),
            "pg_xact segment 0002 block 3"
        );
        assert_eq!(
            Key::twophase_file(0x1_0000_00FF).describe(),
            "two-phase state of xid 4294967551 (pg_twophase/000000FF)"
        );
        assert_eq!(
            Key::control_file().describe(),
            "the control file (global/pg_control)"
        );
        assert_eq!(
            Key::reldir(1663, 5).describe(),
            "relation directory of database 1663/5"
        );
        assert_eq!(Key::dbdir().describe(), "the database directory");
    }
}
