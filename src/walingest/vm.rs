//! Visibility-map bits cleared by heap records: PostgreSQL 15 clears them on the VM page without logging that
//! page, so the pageserver stores a Rust-applied record on it (walredo/native.rs). PostgreSQL 18.6 registers
//! the VM page as a block reference of the heap record when it clears its bits (`HEAP_INSERT_BLKREF_VM` and
//! friends, access/heapam_xlog.h): that page gets the record itself like any block reference, and its redo
//! clears the bits; a Rust-applied record is then made only for a VM page the record does not name (the
//! fallback of heap_xlog_vm_clear, when the bits were already clear).

use super::PageChange;
use crate::pg::DecodedRecord;
use crate::pg::constants::{MAIN_FORKNUM, VISIBILITYMAP_FORKNUM};
use crate::pg::records::HeapRecord;
use crate::walredo::native::VM_HEAPBLOCKS_PER_PAGE;
use crate::walredo::{BufferTag, PageId, WalRecord};

/// The VM changes of a heap record: one record per VM page touched.
pub fn vm_changes(rec: &DecodedRecord, heap: &HeapRecord) -> Vec<PageChange> {
    let (new_flags, old_flags) = heap.vm_bits_cleared();
    if new_flags == 0 && old_flags == 0 {
        return vec![];
    }
    let Some(new_block) = rec.block(0).filter(|b| b.forknum == MAIN_FORKNUM) else {
        return vec![];
    };
    // An update that moved the tuple has the old page as block 1; otherwise old and new are one page.
    let old_blkno = rec.block(1).map_or(new_block.blkno, |b| b.blkno);
    let mut targets: Vec<(u32, u8)> = Vec::new();
    if new_flags != 0 {
        targets.push((new_block.blkno, new_flags));
    }
    if old_flags != 0 {
        targets.push((old_blkno, old_flags));
    }
    let vm_tag = |heap_blk: u32| BufferTag {
        rnode: new_block.rnode,
        forknum: VISIBILITYMAP_FORKNUM,
        blkno: heap_blk / VM_HEAPBLOCKS_PER_PAGE,
    };
    let registered = |tag: BufferTag| {
        rec.blocks.iter().any(|b| {
            b.forknum == VISIBILITYMAP_FORKNUM && b.rnode == tag.rnode && b.blkno == tag.blkno
        })
    };
    targets.retain(|&(blk, _)| !registered(vm_tag(blk)));
    let clear = |heap_blk: u32, other: Option<u32>, flags: u8| {
        PageChange::Record(
            PageId::Rel(vm_tag(heap_blk)),
            WalRecord::ClearVisibilityMapFlags {
                new_heap_blkno: Some(heap_blk),
                old_heap_blkno: other,
                flags,
            },
        )
    };
    match targets[..] {
        // Two heap blocks on one VM page with the same flags: one record naming both.
        [(a, fa), (b, fb)] if fa == fb && vm_tag(a) == vm_tag(b) => vec![clear(a, Some(b), fa)],
        _ => targets
            .iter()
            .map(|&(blk, flags)| clear(blk, None, flags))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::constants::*;
    use crate::pg::waldecoder::RawRecord;
    use crate::pg::walgen::encode_record_body;
    use crate::pg::xlogrecord::decode_record;
    use crate::pg::{Lsn, PgVersion, RecordBody, parse_body};

    /// A heap insert into block `heap_blk` of relation 1663/5/16384 that cleared its VM bits; with
    /// `vm_blkref`, PostgreSQL 18.6's form, which names the VM page as block reference 1.
    fn insert(heap_blk: u32, vm_blkref: Option<u32>) -> crate::pg::DecodedRecord {
        let mut body = vec![0, MAIN_FORKNUM, 0, 0];
        for v in [1663u32, 5, 16384, heap_blk] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(vm_blk) = vm_blkref {
            body.extend_from_slice(&[1, VISIBILITYMAP_FORKNUM | BKPBLOCK_SAME_REL, 0, 0]);
            body.extend_from_slice(&vm_blk.to_le_bytes());
        }
        let main = [1u8, 0, XLH_INSERT_ALL_VISIBLE_CLEARED]; // xl_heap_insert: offnum 1, flags
        body.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, main.len() as u8]);
        body.extend_from_slice(&main);
        let bytes = encode_record_body(RM_HEAP_ID, XLOG_HEAP_INSERT, 700, Lsn(0x100_0000), &body);
        decode_record(&RawRecord {
            lsn: Lsn(0x100_0028),
            end_lsn: Lsn(0x100_0028 + bytes.len() as u64).align(),
            bytes: bytes.into(),
        })
        .unwrap()
    }

    fn changes(rec: &crate::pg::DecodedRecord, version: PgVersion) -> Vec<PageChange> {
        let Ok(RecordBody::Heap(heap)) = parse_body(rec, version) else {
            panic!("not a heap record");
        };
        vm_changes(rec, &heap)
    }

    /// 15: the VM page is not in the record, so a Rust-applied clear goes to it. 18.6: the record names the
    /// VM page, which gets the record itself (its redo clears the bits); no second change for that page.
    #[test]
    fn a_registered_vm_page_gets_no_rust_clear() {
        let heap_blk = 40_000; // on VM page 1
        let c = changes(&insert(heap_blk, None), PgVersion::V15);
        assert_eq!(c.len(), 1);
        let PageChange::Record(PageId::Rel(tag), _) = &c[0] else {
            panic!("{c:?}")
        };
        assert_eq!((tag.forknum, tag.blkno), (VISIBILITYMAP_FORKNUM, 1));
        assert!(changes(&insert(heap_blk, Some(1)), PgVersion::V18).is_empty());
        // A VM block reference to another page does not stand for this one.
        assert_eq!(changes(&insert(heap_blk, Some(0)), PgVersion::V18).len(), 1);
    }
}
