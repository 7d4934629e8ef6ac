//! Records applied in Rust, as Neon's `pageserver/src/walredo/apply_neon.rs` applies them: visibility-map bits,
//! CLOG status bits, multixact offsets and members. Each works on a copy of the page and refuses a page of the
//! wrong size; a record whose items fall on other pages leaves those alone, so the same record can be stored on
//! every page it touches.

use crate::pg::constants::BLCKSZ;
use crate::pg::page::SIZE_OF_PAGE_HEADER;

use super::record::{PageId, SlruKind, WalRecord};

/// visibilitymap.c: two bits per heap block in the map after the (MAXALIGNed) page header.
const VM_MAPSIZE: usize = BLCKSZ - SIZE_OF_PAGE_HEADER;
const VM_HEAPBLOCKS_PER_BYTE: u32 = 4;
pub const VM_HEAPBLOCKS_PER_PAGE: u32 = VM_MAPSIZE as u32 * VM_HEAPBLOCKS_PER_BYTE;

/// clog.c: two status bits per transaction.
pub const CLOG_XACTS_PER_PAGE: u32 = BLCKSZ as u32 * 4;
const TRANSACTION_STATUS_COMMITTED: u8 = 0x01;
const TRANSACTION_STATUS_ABORTED: u8 = 0x02;

/// multixact.c layouts.
pub const MULTIXACT_OFFSETS_PER_PAGE: u32 = BLCKSZ as u32 / 4;
const MULTIXACT_MEMBERS_PER_GROUP: u32 = 4;
const MULTIXACT_FLAGBYTES_PER_GROUP: u32 = 4;
const MULTIXACT_MEMBERGROUP_SIZE: u32 =
    4 * MULTIXACT_MEMBERS_PER_GROUP + MULTIXACT_FLAGBYTES_PER_GROUP;
const MULTIXACT_MEMBERGROUPS_PER_PAGE: u32 = BLCKSZ as u32 / MULTIXACT_MEMBERGROUP_SIZE;
pub const MULTIXACT_MEMBERS_PER_PAGE: u32 =
    MULTIXACT_MEMBERGROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_GROUP;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    #[error("{record} needs a base image of the page")]
    NoBaseImage { record: &'static str },
    #[error("page of {0} bytes, expected 8192")]
    BadPageSize(usize),
    #[error("{record} does not apply to page {page:?}")]
    WrongPage { record: &'static str, page: PageId },
    #[error("{0}")]
    Invalid(String),
}

fn name(rec: &WalRecord) -> &'static str {
    match rec {
        WalRecord::Postgres { .. } => "a PostgreSQL record",
        WalRecord::ClearVisibilityMapFlags { .. } => "ClearVisibilityMapFlags",
        WalRecord::TruncateVisibilityMap { .. } => "TruncateVisibilityMap",
        WalRecord::ClogSetCommitted { .. } => "ClogSetCommitted",
        WalRecord::ClogSetAborted { .. } => "ClogSetAborted",
        WalRecord::MultixactOffsetCreate { .. } => "MultixactOffsetCreate",
        WalRecord::MultixactMembersCreate { .. } => "MultixactMembersCreate",
    }
}

/// Applies a Rust-side record to `page` (8192 bytes), the page identified by `id`.
pub fn apply(id: PageId, page: &mut [u8], rec: &WalRecord) -> Result<(), NativeError> {
    if page.len() != BLCKSZ {
        return Err(NativeError::BadPageSize(page.len()));
    }
    let wrong = || NativeError::WrongPage {
        record: name(rec),
        page: id,
    };
    match (rec, id) {
        (
            WalRecord::ClearVisibilityMapFlags {
                new_heap_blkno,
                old_heap_blkno,
                flags,
            },
            PageId::Rel(tag),
        ) => {
            let map = &mut page[SIZE_OF_PAGE_HEADER..];
            for heap_blk in [new_heap_blkno, old_heap_blkno].into_iter().flatten() {
                if heap_blk / VM_HEAPBLOCKS_PER_PAGE != tag.blkno {
                    continue;
                }
                let in_page = heap_blk % VM_HEAPBLOCKS_PER_PAGE;
                let byte = (in_page / VM_HEAPBLOCKS_PER_BYTE) as usize;
                let shift = (in_page % VM_HEAPBLOCKS_PER_BYTE) * 2;
                map[byte] &= !((flags & 0x03) << shift);
            }
            Ok(())
        }
        (
            WalRecord::TruncateVisibilityMap {
                trunc_byte,
                trunc_offs,
            },
            PageId::Rel(_),
        ) => {
            let map = &mut page[SIZE_OF_PAGE_HEADER..];
            let byte = *trunc_byte as usize;
            if byte >= map.len() || *trunc_offs >= 8 {
                return Err(NativeError::Invalid(format!(
                    "VM truncation at byte {byte} offset {trunc_offs}"
                )));
            }
            map[byte + 1..].fill(0);
            map[byte] &= (1u8 << trunc_offs) - 1;
            Ok(())
        }
        (
            WalRecord::ClogSetCommitted { xids },
            PageId::Slru {
                kind: SlruKind::Clog,
                pageno,
            },
        ) => {
            set_clog(page, pageno, xids, TRANSACTION_STATUS_COMMITTED);
            Ok(())
        }
        (
            WalRecord::ClogSetAborted { xids },
            PageId::Slru {
                kind: SlruKind::Clog,
                pageno,
            },
        ) => {
            set_clog(page, pageno, xids, TRANSACTION_STATUS_ABORTED);
            Ok(())
        }
        (
            WalRecord::MultixactOffsetCreate {
                mid,
                moff,
                nmembers,
            },
            PageId::Slru {
                kind: SlruKind::MultiXactOffsets,
                pageno,
            },
        ) => {
            // multixact.c: ids wrap around to FirstMultiXactId (1); offsets skip 0.
            let next = match mid.wrapping_add(1) {
                0 => 1,
                n => n,
            };
            let next_moff = match moff.wrapping_add(*nmembers) {
                0 => 1,
                n => n,
            };
            let mut touched = false;
            for (multi, value) in [(*mid, *moff), (next, next_moff)] {
                if multi / MULTIXACT_OFFSETS_PER_PAGE == pageno {
                    let at = (multi % MULTIXACT_OFFSETS_PER_PAGE) as usize * 4;
                    page[at..at + 4].copy_from_slice(&value.to_le_bytes());
                    touched = true;
                }
            }
            if !touched {
                return Err(wrong());
            }
            Ok(())
        }
        (
            WalRecord::MultixactMembersCreate { moff, members },
            PageId::Slru {
                kind: SlruKind::MultiXactMembers,
                pageno,
            },
        ) => {
            for (i, member) in members.iter().enumerate() {
                let offset = moff.wrapping_add(i as u32);
                if offset / MULTIXACT_MEMBERS_PER_PAGE != pageno {
                    continue;
                }
                let group =
                    (offset / MULTIXACT_MEMBERS_PER_GROUP) % MULTIXACT_MEMBERGROUPS_PER_PAGE;
                let flags_at = (group * MULTIXACT_MEMBERGROUP_SIZE) as usize;
                let in_group = offset % MULTIXACT_MEMBERS_PER_GROUP;
                let shift = in_group * 8;
                let mut flags =
                    u32::from_le_bytes(page[flags_at..flags_at + 4].try_into().unwrap_or_default());
                flags &= !(0xFF << shift);
                flags |= (member.status & 0xFF) << shift;
                page[flags_at..flags_at + 4].copy_from_slice(&flags.to_le_bytes());
                let xid_at =
                    flags_at + MULTIXACT_FLAGBYTES_PER_GROUP as usize + in_group as usize * 4;
                page[xid_at..xid_at + 4].copy_from_slice(&member.xid.to_le_bytes());
            }
            Ok(())
        }
        (WalRecord::Postgres { .. }, _) => Err(NativeError::Invalid(
            "PostgreSQL records are not applied in Rust".into(),
        )),
        _ => Err(wrong()),
    }
}

fn set_clog(page: &mut [u8], pageno: u32, xids: &[u32], status: u8) {
    for &xid in xids {
        if xid / CLOG_XACTS_PER_PAGE != pageno {
            continue;
        }
        let index = xid % CLOG_XACTS_PER_PAGE;
        let byte = (index / 4) as usize;
        let shift = (index % 4) * 2;
        page[byte] = (page[byte] & !(0x03 << shift)) | (status << shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::RelFileNode;
    use crate::pg::records::MultiXactMember;
    use crate::walredo::record::BufferTag;

    fn vm(blkno: u32) -> PageId {
        PageId::Rel(BufferTag {
            rnode: RelFileNode {
                spc: 1663,
                db: 5,
                rel: 16384,
            },
            forknum: 2,
            blkno,
        })
    }

    #[test]
    fn vm_bits_clear_only_on_their_page() {
        let mut page = vec![0xFFu8; BLCKSZ];
        let rec = WalRecord::ClearVisibilityMapFlags {
            new_heap_blkno: Some(5),
            old_heap_blkno: Some(VM_HEAPBLOCKS_PER_PAGE + 1),
            flags: 0x03,
        };
        apply(vm(0), &mut page, &rec).unwrap();
        // Heap block 5: byte 1 of the map, bits 2..3.
        assert_eq!(page[SIZE_OF_PAGE_HEADER + 1], 0b1111_0011u8);
        assert_eq!(page.iter().filter(|&&b| b != 0xFF).count(), 1);
        let mut page1 = vec![0xFFu8; BLCKSZ];
        apply(vm(1), &mut page1, &rec).unwrap();
        assert_eq!(page1[SIZE_OF_PAGE_HEADER], 0b1111_0011u8);
    }

    #[test]
    fn vm_truncation_keeps_the_bits_below() {
        let mut page = vec![0xFFu8; BLCKSZ];
        apply(
            vm(0),
            &mut page,
            &WalRecord::TruncateVisibilityMap {
                trunc_byte: 2,
                trunc_offs: 4,
            },
        )
        .unwrap();
        assert_eq!(
            &page[SIZE_OF_PAGE_HEADER..SIZE_OF_PAGE_HEADER + 4],
            &[0xFF, 0xFF, 0x0F, 0x00]
        );
        assert!(page[SIZE_OF_PAGE_HEADER + 3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn clog_bits() {
        let id = PageId::Slru {
            kind: SlruKind::Clog,
            pageno: 1,
        };
        let mut page = vec![0u8; BLCKSZ];
        let xid = CLOG_XACTS_PER_PAGE + 6; // byte 1, bits 4..5
        apply(
            id,
            &mut page,
            &WalRecord::ClogSetCommitted { xids: vec![xid, 3] },
        )
        .unwrap();
        assert_eq!(page[1], 0x01 << 4);
        apply(
            id,
            &mut page,
            &WalRecord::ClogSetAborted { xids: vec![xid] },
        )
        .unwrap();
        assert_eq!(page[1], 0x02 << 4);
        assert_eq!(page.iter().filter(|&&b| b != 0).count(), 1);
    }

    #[test]
    fn multixact_layouts() {
        let off = PageId::Slru {
            kind: SlruKind::MultiXactOffsets,
            pageno: 0,
        };
        let mut page = vec![0u8; BLCKSZ];
        let rec = WalRecord::MultixactOffsetCreate {
            mid: 3,
            moff: 0x0102_0304,
            nmembers: 2,
        };
        apply(off, &mut page, &rec).unwrap();
        assert_eq!(&page[12..16], &[4, 3, 2, 1]);
        // The next multixact starts where this one's members end.
        assert_eq!(&page[16..20], &[6, 3, 2, 1]);
        let wrong = WalRecord::MultixactOffsetCreate {
            mid: MULTIXACT_OFFSETS_PER_PAGE + 5,
            moff: 1,
            nmembers: 1,
        };
        assert!(apply(off, &mut page, &wrong).is_err());
        // The last multixact of a page writes its successor's offset on the next page, skipping offset 0.
        let last = WalRecord::MultixactOffsetCreate {
            mid: MULTIXACT_OFFSETS_PER_PAGE - 1,
            moff: u32::MAX - 1,
            nmembers: 2,
        };
        let next_page = PageId::Slru {
            kind: SlruKind::MultiXactOffsets,
            pageno: 1,
        };
        let mut page1 = vec![0u8; BLCKSZ];
        apply(next_page, &mut page1, &last).unwrap();
        assert_eq!(&page1[0..4], &1u32.to_le_bytes());

        let mem = PageId::Slru {
            kind: SlruKind::MultiXactMembers,
            pageno: 0,
        };
        let mut page = vec![0u8; BLCKSZ];
        let members = vec![
            MultiXactMember {
                xid: 700,
                status: 1,
            },
            MultiXactMember {
                xid: 701,
                status: 3,
            },
        ];
        apply(
            mem,
            &mut page,
            &WalRecord::MultixactMembersCreate { moff: 3, members },
        )
        .unwrap();
        // Offset 3: group 0, slot 3 -> flag byte 3, xid at 4 + 12; offset 4: group 1 (bytes 20..40), slot 0.
        assert_eq!(page[3], 1);
        assert_eq!(&page[16..20], &700u32.to_le_bytes());
        assert_eq!(page[20], 3);
        assert_eq!(&page[24..28], &701u32.to_le_bytes());
    }

    #[test]
    fn wrong_sizes_and_kinds_are_errors() {
        let mut small = vec![0u8; 100];
        let rec = WalRecord::ClogSetCommitted { xids: vec![1] };
        let clog = PageId::Slru {
            kind: SlruKind::Clog,
            pageno: 0,
        };
        assert!(matches!(
            apply(clog, &mut small, &rec),
            Err(NativeError::BadPageSize(100))
        ));
        let mut page = vec![0u8; BLCKSZ];
        assert!(apply(vm(0), &mut page, &rec).is_err());
    }
}
